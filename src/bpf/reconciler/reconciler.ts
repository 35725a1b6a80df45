/*
 * The BPF reconciler: turns the desired state into entries of vipr's maps, writing only what
 * changed, in an order that never exposes a half-written service. Each phase is its own method:
 *   0. removeLeftovers / removeStale: what an interrupted sync left, then removed services (entry,
 *      then slots, source ranges, scheduler state), so a full map has room for what replaces them;
 *   1. plan, writeBackends, writeServiceState: backends, slots 0..n-1, source ranges, scheduler
 *      state (nothing reads them before 2);
 *   2. exposeServices: the service entries with their new slot counts;
 *   3. settle, sweepBackends, cutGoneFlows: slots beyond a shrunk count and stale source ranges,
 *      backends no slot references any more, and the UDP flows and affinity of removed backends.
 * Frontend expansion is pure (./frontends.ts); ids come from ./ids.ts and are restored from the
 * pinned maps on start, so a restarted agent keeps every id and therefore every connection.
 *
 * IPv6 frontends, backends, source ranges and node addresses have maps of their own (services6,
 * backends6, ...), picked by the address's family; service and backend ids come from the one
 * allocator each, so the shared maps (slots, scheduler state, lc counters) never see one id twice.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { DesiredState, LbMode, Scheduler, ServiceEntry } from '../../model/types.js';
import { TimeSlice } from '../../time-slice.js';
import type { Dataplane, SyncResult } from '../../model/dataplane.js';
import {
  CT_FORWARD, IPPROTO_UDP, SCHEDULERS,
  type AffinityKeyT, type AffinityValueT, type BackendConnsT, type BackendIdT, type BackendT, type Config6T, type ConfigT,
  type CtKeyT, type CtValueT, type XdpFlowT, type XdpFlow6T, type NodeIpT, type SchedStateT, type SlotKeyT, type SourceRangeT, type SvcKeyT,
  type SvcValueT,
} from '../layouts.js';
import type { MapLike } from '../map.js';
import { readServiceNames } from '../inspect.js';
import { replyKeyOf } from '../conntrack.js';
import { serviceNamesPath } from '../../paths.js';
import { DEFAULT_MAGLEV_MAX_SIZE } from '../../model/maglev.js';
import { componentLogger } from '../../log.js';
import { JsonFileError } from '../../json-file.js';
import { formatMask } from '../../model/ipv4.js';
import { cidrHas, familyOf, formatIpv6, joinHostPort, parseCidr, type IpFamily } from '../../model/ip.js';
import { IdAllocator } from './ids.js';
import {
  backendKey, bpfFrontends, frontendId, frontendKey, isIpv6, rangeKey, rangeOf, serviceOfKey, slotLayout, type Frontend,
} from './frontends.js';

const log = componentLogger('bpf-sync');

function familyOfVip(vip: string): IpFamily {
  return isIpv6(vip) ? 'IPv6' : 'IPv4';
}

/** A prefix length as a 16-byte IPv6 mask. */
function ipv6Mask(prefix: number): Buffer {
  const out = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) out[i] = (0xff << (8 - Math.max(0, Math.min(8, prefix - i * 8)))) & 0xff;
  return out;
}

/** Entries per batch call: one call's worth of work stays well under a time slice. */
const WRITE_CHUNK = 8192;
/** The longest the reconciler runs before letting the event loop serve others. */
const SLICE_MS = 20;

/** The entries of the Services in `scope`, from the state's index when it has one. */
function entriesIn(state: DesiredState, scope: ReadonlySet<string>): ServiceEntry[] {
  if (state.byService) return [...scope].flatMap((name) => state.byService?.get(name) ?? []);
  return state.services.filter((e) => scope.has(serviceOfKey(e.key)));
}

export interface ServiceMaps {
  services: MapLike<SvcKeyT, SvcValueT>;
  slots: MapLike<SlotKeyT, BackendIdT>;
  backends: MapLike<BackendIdT, BackendT>;
  sourceRanges: MapLike<SourceRangeT, number>;
  sched: MapLike<number, SchedStateT>;
  backendConns: MapLike<BackendIdT, BackendConnsT>;
  nodeIps: MapLike<NodeIpT, number>;
  config: MapLike<number, ConfigT>;
  /** UDP conntrack (vipr_ct_udp_v1): the flows cut when their backend goes. */
  ctUdp: MapLike<CtKeyT, CtValueT>;
  affinity: MapLike<AffinityKeyT, AffinityValueT>;
  /* IPv6's own maps (slots, sched and backendConns are shared). */
  services6: MapLike<SvcKeyT, SvcValueT>;
  backends6: MapLike<BackendIdT, BackendT>;
  sourceRanges6: MapLike<SourceRangeT, number>;
  nodeIps6: MapLike<NodeIpT, number>;
  config6: MapLike<number, Config6T>;
  ctUdp6: MapLike<CtKeyT, CtValueT>;
  affinity6: MapLike<AffinityKeyT, AffinityValueT>;
  /** XDP's flow cache (vipr_xdp_flows_v1): emptied whenever IPv4 flows are cut. */
  xdpFlows?: MapLike<CtKeyT, XdpFlowT>;
  /** IPv6's (vipr_xdp_flows6_v1): emptied whenever IPv6 flows are cut. */
  xdpFlows6?: MapLike<CtKeyT, XdpFlow6T>;
}

/** Entries split by the family of an address in them. */
function byFamily<T>(items: readonly T[], addrOf: (item: T) => string): { v4: T[]; v6: T[] } {
  const v4: T[] = [];
  const v6: T[] = [];
  for (const item of items) (isIpv6(addrOf(item)) ? v6 : v4).push(item);
  return { v4, v6 };
}

export interface BpfDataplaneOptions {
  /**
   * --cluster-cidr, at most one per family: sources inside are pods (internal traffic). The first
   * CIDR of each family is that family's (vipr_config / vipr_config6); [] = none known.
   */
  clusterCIDRs: string[];
  /** kube-proxy's --nodeport-addresses (either family): node addresses in these CIDRs serve NodePorts; [] = all. */
  nodePortAddresses: string[];
  /** Scheduler for services without the `vipr.io/scheduler` annotation. */
  defaultScheduler: Scheduler;
  /** --lb-mode: external traffic to remote backends for services without `vipr.io/lb-mode`. */
  defaultLbMode: LbMode;
  /** Source ports for SNAT (above Linux's default ephemeral range, so local sockets never clash). */
  snatPorts: [number, number];
  /** The largest Maglev table (--maglev-table-size), one of MAGLEV_SIZES. */
  maglevMaxSize: number;
}

export const DEFAULT_BPF_OPTIONS: BpfDataplaneOptions = {
  clusterCIDRs: [],
  nodePortAddresses: [],
  defaultScheduler: 'random',
  defaultLbMode: 'snat',
  snatPorts: [61000, 65535],
  maglevMaxSize: DEFAULT_MAGLEV_MAX_SIZE,
};

interface Applied {
  svcId: number;
  value: SvcValueT;
  /** backend id per slot, 0..count-1 */
  slots: number[];
  ranges: Set<string>;
  sched: boolean;
  service: string;
}

/** One frontend's planned writes. */
interface Pending {
  fid: string;
  f: Frontend;
  svcId: number;
  isNew: boolean;
  value: SvcValueT;
  slotIds: number[];
  slotWrites: Array<[SlotKeyT, BackendIdT]>;
  rangeWrites: string[];
  rangeDeletes: string[];
  schedWrite: boolean;
  /** The round-robin state the scheduler it ends up with needs. */
  wantSched: boolean;
}

interface Plan {
  pending: Pending[];
  newBackends: Array<[BackendIdT, BackendT]>;
  /** Backend ids taken by this sync. */
  createdIds: number[];
}

/** What the phases of one sync share. */
interface SyncRun {
  result: SyncResult;
  /** (service, backend) pairs that ended: their UDP flows and affinity are cut. */
  gone: Array<{ svcId: number; backendId: number; family: IpFamily }>;
  /** Services (ids) whose writes failed this sync. */
  failedSvc: Set<number>;
  /** Backends a failed existing service may still reference: kept out of the sweep. */
  stillReferenced: Set<number>;
}

function sameValue(a: SvcValueT, b: SvcValueT): boolean {
  return a.svc_id === b.svc_id && a.backend_count === b.backend_count && a.flags === b.flags &&
    a.affinity_timeout === b.affinity_timeout && a.scheduler === b.scheduler;
}

export class BpfDataplane implements Dataplane {
  readonly mode = 'bpf';
  private applied = new Map<string, Applied>();
  private backendIds = new Map<string, number>();
  private backendById = new Map<number, BackendT>();
  private readonly svcIds = new IdAllocator(0xfffffff0, 'service');
  private readonly beIds = new IdAllocator(0xfffffff0, 'backend');
  private restored = false;
  /** Left by an interrupted sync; removed by the next one. */
  private orphanSlots: SlotKeyT[] = [];
  private orphanRanges: SourceRangeT[] = [];
  private orphanSched: number[] = [];
  /** Node addresses written to vipr_node_ips_v1 and vipr_node_ips6_v1. */
  private nodeIps = new Set<string>();
  private config: ConfigT | null = null;
  private config6: Config6T | null = null;
  /** Slots referencing each backend, over every applied frontend. */
  private refs = new Map<number, number>();
  private namesDirty = true;
  private readonly opts: BpfDataplaneOptions;
  private readonly slice = new TimeSlice(SLICE_MS);

  constructor(
    private readonly maps: ServiceMaps,
    private readonly pinDir: string | null,
    opts: Partial<BpfDataplaneOptions> = {},
  ) {
    this.opts = { ...DEFAULT_BPF_OPTIONS, ...opts };
  }

  /**
   * Rebuilds what is installed from the maps (on start, and before every full sync), including
   * what a crash mid-sync can leave: slots, source ranges and scheduler state no service entry
   * owns, slots beyond a service's count. The next sync removes those.
   */
  restore(): void {
    this.applied = new Map();
    this.backendIds = new Map();
    this.backendById = new Map();
    this.orphanSlots = [];
    this.orphanRanges = [];
    this.orphanSched = [];
    for (const [k, v] of [...this.maps.backends.entries(), ...this.maps.backends6.entries()]) {
      this.backendIds.set(backendKey(v), k.id);
      this.backendById.set(k.id, v);
    }
    let names = new Map<number, string>();
    try {
      if (this.pinDir !== null) names = readServiceNames(this.pinDir);
    } catch (err) {
      // Only the CLI's copy of the names: rewritten from what is programmed after this restore.
      if (!(err instanceof JsonFileError)) throw err;
      log.warn({ err: err.message }, 'service-names record unreadable; it is rewritten');
    }
    const services = [...this.maps.services.entries(), ...this.maps.services6.entries()];
    const countOf = new Map(services.map(([, v]) => [v.svc_id, v.backend_count]));
    const slots = new Map<string, number>();
    for (const [k, v] of this.maps.slots.entries()) {
      const count = countOf.get(k.svc_id);
      if (count === undefined || k.slot >= count) this.orphanSlots.push(k);
      else slots.set(`${k.svc_id}/${k.slot}`, v.id);
    }
    const ranges = new Map<number, Set<string>>();
    for (const [k] of [...this.maps.sourceRanges.entries(), ...this.maps.sourceRanges6.entries()]) {
      if (!countOf.has(k.svc_id)) this.orphanRanges.push(k);
      else ranges.set(k.svc_id, (ranges.get(k.svc_id) ?? new Set()).add(rangeOf(k)));
    }
    const sched = new Set<number>();
    for (const [id] of this.maps.sched.entries()) {
      if (!countOf.has(id)) this.orphanSched.push(id);
      else sched.add(id);
    }
    for (const [k, v] of services) {
      const ids: number[] = [];
      for (let s = 0; s < v.backend_count; s++) ids.push(slots.get(`${v.svc_id}/${s}`) ?? 0);
      this.applied.set(frontendId(k), {
        svcId: v.svc_id, value: v, slots: ids, ranges: ranges.get(v.svc_id) ?? new Set(),
        sched: sched.has(v.svc_id), service: names.get(v.svc_id) ?? '',
      });
    }
    this.nodeIps = new Set([...this.maps.nodeIps.entries(), ...this.maps.nodeIps6.entries()].map(([k]) => k.addr));
    this.config = this.maps.config.lookup(0);
    this.config6 = this.maps.config6.lookup(0);
    this.refs = new Map();
    for (const a of this.applied.values()) this.addRefs(a.slots, 1);
    this.namesDirty = true;
    this.svcIds.reset([...this.applied.values()].map((a) => a.svcId));
    this.beIds.reset(this.backendById.keys());
    this.restored = true;
    log.info(
      { services: this.applied.size, backends: this.backendById.size, orphans: this.orphanSlots.length + this.orphanRanges.length + this.orphanSched.length },
      'restored state from pinned maps',
    );
  }

  private addRefs(slots: readonly number[], delta: number): void {
    for (const id of slots) this.refs.set(id, (this.refs.get(id) ?? 0) + delta);
  }

  async sync(state: DesiredState, full: boolean, changed: ReadonlySet<string> | null = null, reread = full): Promise<SyncResult> {
    if (reread || !this.restored) this.restore();
    // A partial sync looks only at the Services named; the others are as last synced.
    const scope = full ? null : changed;
    const inScope = (serviceKey: string): boolean => scope === null || scope.has(serviceOfKey(serviceKey));
    const { frontends, skipped } = bpfFrontends(
      scope === null ? state : { node: state.node, services: entriesIn(state, scope) },
      this.opts.defaultScheduler,
      this.opts.defaultLbMode,
    );
    for (const s of skipped) log.warn(s);
    const result: SyncResult = { services: 0, backends: 0, writes: 0, deletes: 0, failed: [], changed: [] };
    const run: SyncRun = { result, gone: [], failedSvc: new Set(), stillReferenced: new Set() };
    const desired = new Map(frontends.map((f) => [frontendId(f.key), f]));
    this.syncNode(state, result);

    this.slice.begin();
    this.removeLeftovers(result);
    await this.removeStale(desired, inScope, run);
    const plan = await this.plan(desired, run);
    await this.writeBackends(plan, run);
    await this.writeServiceState(plan, run);
    await this.exposeServices(plan, run);
    this.settle(plan, desired, run);
    await this.sweepBackends(run);
    if (run.gone.length > 0) this.cutGoneFlows(run.gone, result);

    result.services = this.applied.size;
    result.backends = this.backendById.size;
    this.writeNames();
    for (const f of result.failed) log.error({ svc: f.service }, `service not programmed: ${f.error}`);
    return result;
  }

  /** Phase 0a: what an interrupted sync left (found by restore()). */
  private removeLeftovers(result: SyncResult): void {
    for (const k of this.orphanSlots) this.tryDelete(this.maps.slots, k, result);
    for (const k of this.orphanRanges) this.tryDelete(this.rangesFor(k.addr), k, result);
    for (const id of this.orphanSched) this.tryDelete(this.maps.sched, id, result);
    this.orphanSlots = [];
    this.orphanRanges = [];
    this.orphanSched = [];
  }

  /** Phase 0b: frontends no longer desired (among those in scope): entry first, then its state. */
  private async removeStale(desired: ReadonlyMap<string, Frontend>, inScope: (serviceKey: string) => boolean, run: SyncRun): Promise<void> {
    const { result } = run;
    for (const [fid, a] of [...this.applied]) {
      if (this.slice.due()) await this.slice.yield();
      if (desired.has(fid) || !inScope(a.service)) continue;
      const key = frontendKey(fid);
      this.tryDelete(this.servicesFor(key.vip), key, result);
      a.slots.forEach((_, slot) => this.tryDelete(this.maps.slots, { svc_id: a.svcId, slot }, result));
      for (const r of a.ranges) this.tryDelete(this.rangesFor(r), rangeKey(a.svcId, r), result);
      if (a.sched) this.tryDelete(this.maps.sched, a.svcId, result);
      for (const id of new Set(a.slots)) run.gone.push({ svcId: a.svcId, backendId: id, family: familyOfVip(key.vip) });
      this.addRefs(a.slots, -1);
      this.svcIds.release(a.svcId);
      this.applied.delete(fid);
      this.namesDirty = true;
      if (a.service) result.changed.push(a.service);
    }
  }

  /**
   * What each desired frontend needs written, against what was applied: its backends (ids taken
   * for new ones), slots, source ranges and scheduler state. Unchanged frontends plan nothing; a
   * frontend whose slot layout cannot be built fails alone and keeps what it had.
   */
  private async plan(desired: ReadonlyMap<string, Frontend>, run: SyncRun): Promise<Plan> {
    const plan: Plan = { pending: [], newBackends: [], createdIds: [] };
    const backendIdOf = (b: BackendT): number => {
      const k = backendKey(b);
      let id = this.backendIds.get(k);
      if (id === undefined) {
        id = this.beIds.take();
        this.backendIds.set(k, id);
        plan.createdIds.push(id);
      }
      const cur = this.backendById.get(id);
      if (!cur || cur.flags !== b.flags) {
        plan.newBackends.push([{ id }, b]);
        this.backendById.set(id, b);
      }
      return id;
    };
    for (const [fid, f] of desired) {
      if (this.slice.due()) await this.slice.yield();
      const prev = this.applied.get(fid);
      let layout: ReturnType<typeof slotLayout>;
      try {
        const currentMaglev = prev && prev.value.scheduler === SCHEDULERS.indexOf('maglev') ? prev.slots.length : null;
        layout = slotLayout(f, currentMaglev, this.opts.maglevMaxSize);
      } catch (err) {
        run.result.failed.push({ service: f.service, error: `${joinHostPort(f.key.vip, f.key.port)}: ${(err as Error).message}` });
        continue;
      }
      const ids = f.backends.map(backendIdOf);
      const slotIds = layout.slots.map((i) => ids[i] as number);
      const svcId = prev?.svcId ?? this.svcIds.take();
      const value: SvcValueT = {
        svc_id: svcId,
        backend_count: slotIds.length,
        flags: f.flags,
        affinity_timeout: f.affinityTimeout,
        scheduler: SCHEDULERS.indexOf(layout.scheduler),
      };
      const wantSched = layout.scheduler === 'rr';
      const rangeWrites = f.sourceRanges.filter((r) => !prev?.ranges.has(r));
      const rangeDeletes = [...(prev?.ranges ?? [])].filter((r) => !f.sourceRanges.includes(r));
      const sameSlots = prev !== undefined && prev.slots.length === slotIds.length && prev.slots.every((id, i) => id === slotIds[i]);
      const schedWrite = wantSched && !prev?.sched;
      if (prev && sameValue(prev.value, value) && sameSlots && rangeWrites.length === 0 && rangeDeletes.length === 0 && !schedWrite && prev.sched === wantSched) {
        continue;
      }
      const slotWrites: Array<[SlotKeyT, BackendIdT]> = [];
      slotIds.forEach((id, slot) => {
        if (prev?.slots[slot] !== id) slotWrites.push([{ svc_id: svcId, slot }, { id }]);
      });
      plan.pending.push({ fid, f, svcId, isNew: prev === undefined, value, slotIds, slotWrites, rangeWrites, rangeDeletes, schedWrite, wantSched });
    }
    return plan;
  }

  /** Phase 1a: new or changed backends, and lc's open-flow counter of each new one. */
  private async writeBackends(plan: Plan, run: SyncRun): Promise<void> {
    const failedBackends = new Set<number>();
    const backends = byFamily(plan.newBackends, ([, b]) => b.addr);
    await this.writeAll(this.maps.backends, backends.v4, run.result, (k) => failedBackends.add(k.id));
    await this.writeAll(this.maps.backends6, backends.v6, run.result, (k) => failedBackends.add(k.id));
    for (const id of failedBackends) {
      const b = this.backendById.get(id);
      this.backendById.delete(id);
      if (b) this.backendIds.delete(backendKey(b));
    }
    // A missing counter only means lc counts that backend as idle: its failure fails nothing.
    await this.writeAll(
      this.maps.backendConns,
      plan.createdIds.filter((id) => !failedBackends.has(id)).map((id) => [{ id }, { active: 0 }] as [BackendIdT, BackendConnsT]),
      run.result,
      () => undefined,
    );
    for (const p of plan.pending) if (p.slotIds.some((id) => failedBackends.has(id))) run.failedSvc.add(p.svcId);
  }

  /** Phase 1b: slots, source ranges and scheduler state; nothing reads them before phase 2. */
  private async writeServiceState(plan: Plan, run: SyncRun): Promise<void> {
    const ok = plan.pending.filter((p) => !run.failedSvc.has(p.svcId));
    await this.writeAll(this.maps.slots, ok.flatMap((p) => p.slotWrites), run.result, (k) => run.failedSvc.add(k.svc_id));
    const ranges = byFamily(ok.flatMap((p) => p.rangeWrites.map((r) => [rangeKey(p.svcId, r), 0] as [SourceRangeT, number])), ([k]) => k.addr);
    await this.writeAll(this.maps.sourceRanges, ranges.v4, run.result, (k) => run.failedSvc.add(k.svc_id));
    await this.writeAll(this.maps.sourceRanges6, ranges.v6, run.result, (k) => run.failedSvc.add(k.svc_id));
    for (const p of ok) {
      if (p.schedWrite && !this.tryWrite(this.maps.sched, p.svcId, { rr_next: 0 }, run.result)) run.failedSvc.add(p.svcId);
    }
  }

  /** Phase 2: the service entries, with their new slot counts: from here the datapath uses them. */
  private async exposeServices(plan: Plan, run: SyncRun): Promise<void> {
    const byFid = new Map(plan.pending.map((p) => [p.fid, p]));
    const onFail = (k: SvcKeyT): void => {
      const p = byFid.get(frontendId(k));
      if (p) run.failedSvc.add(p.svcId);
    };
    const entries = byFamily(
      plan.pending.filter((p) => !run.failedSvc.has(p.svcId)).map((p) => [p.f.key, p.value] as [SvcKeyT, SvcValueT]),
      ([k]) => k.vip,
    );
    await this.writeAll(this.maps.services, entries.v4, run.result, onFail);
    await this.writeAll(this.maps.services6, entries.v6, run.result, onFail);
  }

  /**
   * Phase 3a: each written frontend becomes what is applied, and what its new entry no longer
   * uses goes (slots past the count, stale ranges, scheduler state); a failed one is rolled back
   * (new) or keeps its old entry (existing).
   */
  private settle(plan: Plan, desired: ReadonlyMap<string, Frontend>, run: SyncRun): void {
    const { result } = run;
    for (const p of plan.pending) {
      const prev = this.applied.get(p.fid);
      if (run.failedSvc.has(p.svcId)) {
        result.failed.push({ service: p.f.service, error: `map full or rejected: ${joinHostPort(p.f.key.vip, p.f.key.port)}` });
        if (p.isNew) {
          // Roll back what was written for it; nothing exposed it.
          p.slotWrites.forEach(([k]) => this.tryDelete(this.maps.slots, k, result));
          p.rangeWrites.forEach((r) => this.tryDelete(this.rangesFor(r), rangeKey(p.svcId, r), result));
          if (p.schedWrite) this.tryDelete(this.maps.sched, p.svcId, result);
          this.svcIds.release(p.svcId);
        } else {
          // Its entry keeps the old count; slots below it may hold new, valid ids: keep those
          // backends out of the sweep. The next (full) sync re-reads the maps.
          p.slotIds.forEach((id) => run.stillReferenced.add(id));
          this.addRefs(p.slotIds, 1);
        }
        continue;
      }
      if (prev) {
        for (let s = p.slotIds.length; s < prev.slots.length; s++) this.tryDelete(this.maps.slots, { svc_id: p.svcId, slot: s }, result);
        const now = new Set(p.slotIds);
        for (const id of new Set(prev.slots)) if (!now.has(id)) run.gone.push({ svcId: p.svcId, backendId: id, family: familyOfVip(p.f.key.vip) });
      }
      p.rangeDeletes.forEach((r) => this.tryDelete(this.rangesFor(r), rangeKey(p.svcId, r), result));
      if (prev?.sched && !p.wantSched) this.tryDelete(this.maps.sched, p.svcId, result);
      if (prev) this.addRefs(prev.slots, -1);
      this.addRefs(p.slotIds, 1);
      this.applied.set(p.fid, {
        svcId: p.svcId, value: p.value, slots: p.slotIds, ranges: new Set(p.f.sourceRanges), sched: p.wantSched, service: p.f.service,
      });
      if (prev?.service !== p.f.service) this.namesDirty = true;
      result.changed.push(p.f.service);
    }
    // Names may change without any map change (a Service renamed onto the same address).
    for (const [fid, f] of desired) {
      const a = this.applied.get(fid);
      if (a && a.service !== f.service) {
        a.service = f.service;
        this.namesDirty = true;
      }
    }
  }

  /** Phase 3b: backends no slot references any more, with their lc counters. */
  private async sweepBackends(run: SyncRun): Promise<void> {
    for (const [id, b] of [...this.backendById]) {
      if (this.slice.due()) await this.slice.yield();
      if ((this.refs.get(id) ?? 0) > 0 || run.stillReferenced.has(id)) continue;
      this.refs.delete(id);
      this.tryDelete(isIpv6(b.addr) ? this.maps.backends6 : this.maps.backends, { id }, run.result);
      this.tryDelete(this.maps.backendConns, { id }, run.result);
      this.backendById.delete(id);
      this.backendIds.delete(backendKey(b));
      this.beIds.release(id);
    }
  }

  /**
   * A backend left a service: its UDP flows through that service move at once (their next
   * datagram is balanced again; kube-proxy instead leaves them to the kernel's conntrack, which
   * blackholes them until it expires), and affinity to it ends. TCP flows drain: they keep their
   * backend until they close. Costs one walk of the UDP conntrack map of each family whose
   * backends went, only on syncs that removed a backend.
   */
  private cutGoneFlows(gone: Array<{ svcId: number; backendId: number; family: IpFamily }>, result: SyncResult): void {
    const pairs = new Set(gone.map((g) => `${g.svcId}/${g.backendId}`));
    const families = new Set(gone.map((g) => g.family));
    const cut = (ct: MapLike<CtKeyT, CtValueT>, affinity: MapLike<AffinityKeyT, AffinityValueT>): void => {
      for (const [k, v] of ct.entries()) {
        if (k.dir !== CT_FORWARD || !pairs.has(`${v.svc_id}/${v.backend_id}`)) continue;
        if (k.proto !== IPPROTO_UDP) continue;
        this.tryDelete(ct, k, result);
        this.tryDelete(ct, replyKeyOf(k, v), result);
      }
      for (const [k, v] of affinity.entries()) {
        if (pairs.has(`${k.svc_id}/${v.backend_id}`)) this.tryDelete(affinity, k, result);
      }
    };
    if (families.has('IPv4')) {
      cut(this.maps.ctUdp, this.maps.affinity);
      // XDP rewrites a cached flow without asking conntrack: its entry for a cut flow would
      // keep it on the gone backend until it expires. Its entries do not say their backend;
      // emptied wholesale, the flows of backends still there are cached again on their next packet.
      const xdpFlows = this.maps.xdpFlows;
      if (xdpFlows) for (const [k] of xdpFlows.entries()) this.tryDelete(xdpFlows, k, result);
    }
    if (families.has('IPv6')) {
      cut(this.maps.ctUdp6, this.maps.affinity6);
      const xdpFlows6 = this.maps.xdpFlows6;
      if (xdpFlows6) for (const [k] of xdpFlows6.entries()) this.tryDelete(xdpFlows6, k, result);
    }
  }

  /**
   * Node addresses that serve NodePorts (vipr_node_ips_v1 / vipr_node_ips6_v1 by family), and each
   * family's settings: the SNAT source is the node's first address of that family, the cluster
   * CIDR the first --cluster-cidr of that family.
   */
  private syncNode(state: DesiredState, result: SyncResult): void {
    const allowed = this.opts.nodePortAddresses.map((c) => parseCidr(c));
    const ips = new Set(state.node.ips.filter((ip) => allowed.length === 0 || allowed.some((c) => cidrHas(c, ip))));
    const nodeIpsFor = (ip: string): MapLike<NodeIpT, number> => (isIpv6(ip) ? this.maps.nodeIps6 : this.maps.nodeIps);
    for (const ip of ips) if (!this.nodeIps.has(ip)) this.tryWrite(nodeIpsFor(ip), { addr: ip }, 0, result);
    for (const ip of this.nodeIps) if (!ips.has(ip)) this.tryDelete(nodeIpsFor(ip), { addr: ip }, result);
    this.nodeIps = ips;
    const clusterOf = (family: IpFamily) => this.opts.clusterCIDRs.map((c) => parseCidr(c)).find((c) => c.family === family) ?? null;
    const nodeIpOf = (family: IpFamily): string | undefined => state.node.ips.find((ip) => familyOf(ip) === family);
    const cluster = clusterOf('IPv4');
    const config: ConfigT = {
      snat_addr: nodeIpOf('IPv4') ?? '0.0.0.0',
      cluster_cidr: cluster ? [...cluster.network].join('.') : '0.0.0.0',
      cluster_mask: cluster ? formatMask(cluster.prefix) : '0.0.0.0',
      snat_port_min: this.opts.snatPorts[0],
      snat_port_max: this.opts.snatPorts[1],
    };
    if (JSON.stringify(config) !== JSON.stringify(this.config) && this.tryWrite(this.maps.config, 0, config, result)) this.config = config;
    const cluster6 = clusterOf('IPv6');
    const config6: Config6T = {
      snat_addr: nodeIpOf('IPv6') ?? '::',
      cluster_cidr: cluster6 ? formatIpv6(cluster6.network) : '::',
      cluster_mask: formatIpv6(ipv6Mask(cluster6?.prefix ?? 0)),
    };
    if (JSON.stringify(config6) !== JSON.stringify(this.config6) && this.tryWrite(this.maps.config6, 0, config6, result)) this.config6 = config6;
  }

  /** The services map of a frontend address's family. */
  private servicesFor(vip: string): MapLike<SvcKeyT, SvcValueT> {
    return isIpv6(vip) ? this.maps.services6 : this.maps.services;
  }

  /** The source-range map of a range's (or its key address's) family. */
  private rangesFor(cidrOrAddr: string): MapLike<SourceRangeT, number> {
    return isIpv6(cidrOrAddr) ? this.maps.sourceRanges6 : this.maps.sourceRanges;
  }

  /** Writes entries in chunks, letting the event loop run between them on a long sync. */
  private async writeAll<K, V>(map: MapLike<K, V>, entries: Array<[K, V]>, result: SyncResult, onFail: (k: K) => void): Promise<void> {
    for (let i = 0; i < entries.length; i += WRITE_CHUNK) {
      if (this.slice.due()) await this.slice.yield();
      this.writeChunk(map, entries.length <= WRITE_CHUNK ? entries : entries.slice(i, i + WRITE_CHUNK), result, onFail);
    }
  }

  /**
   * Writes entries, in one batch call when there are many. A failing batch is retried entry by
   * entry so that one full map or bad entry costs only the services it belongs to.
   */
  private writeChunk<K, V>(map: MapLike<K, V>, entries: Array<[K, V]>, result: SyncResult, onFail: (k: K) => void): void {
    if (entries.length >= 64) {
      try {
        map.updateBatch(entries);
        result.writes += entries.length;
        return;
      } catch (err) {
        log.warn({ err: (err as Error).message, map: map.name }, 'batch update failed, retrying entry by entry');
      }
    }
    for (const [k, v] of entries) if (!this.tryWrite(map, k, v, result)) onFail(k);
  }

  private tryWrite<K, V>(map: MapLike<K, V>, key: K, value: V, result: SyncResult): boolean {
    try {
      map.update(key, value);
      result.writes++;
      return true;
    } catch (err) {
      log.error({ err: (err as Error).message, map: map.name }, 'map update failed');
      return false;
    }
  }

  private tryDelete<K>(map: MapLike<K, unknown>, key: K, result: SyncResult): void {
    try {
      if (map.delete(key)) result.deletes++;
    } catch (err) {
      log.error({ err: (err as Error).message, map: map.name }, 'map delete failed');
    }
  }

  private writeNames(): void {
    if (this.pinDir === null || !this.namesDirty) return;
    this.namesDirty = false;
    const names: Record<string, string> = {};
    for (const a of this.applied.values()) names[String(a.svcId)] = a.service;
    const path = serviceNamesPath(this.pinDir);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, JSON.stringify(names));
  }

  /** Frontends currently programmed (for tests and status). */
  programmed(): Map<string, { svcId: number; backends: BackendT[] }> {
    const out = new Map<string, { svcId: number; backends: BackendT[] }>();
    for (const [fid, a] of this.applied) {
      out.set(fid, { svcId: a.svcId, backends: a.slots.map((id) => this.backendById.get(id)).filter((b): b is BackendT => !!b) });
    }
    return out;
  }

  async close(): Promise<void> {}
}

