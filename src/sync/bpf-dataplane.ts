/*
 * The BPF dataplane: turns the desired state into entries of vipr's maps, writing only what
 * changed, in an order that never exposes a half-written service:
 *   0. removed services first (entry, then slots, source ranges, scheduler state), so a full map
 *      has room for what replaces them; leftovers of an interrupted sync with them;
 *   1. backends, slots 0..n-1, source ranges, scheduler state (nothing reads them before 2),
 *   2. the service entries with their new slot counts,
 *   3. slots beyond a shrunk count, stale source ranges, then backends no slot references any
 *      more (the sweep), and the conntrack/affinity entries of UDP flows to removed backends.
 * Ids (svc_id, backend id) are allocated here and restored from the pinned maps on start, so a
 * restarted agent keeps every id and therefore every tracked connection.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { DesiredState, Endpoint, Scheduler, ServiceEntry } from '../model/types.js';
import type { Dataplane, SyncResult } from '../model/dataplane.js';
import {
  BE_F_LOCAL, BE_F_TERMINATING, CT_FORWARD, CT_REPLY, IPPROTO_TCP, IPPROTO_UDP, NODEPORT_VIP, SCOPE_EXTERNAL,
  SCOPE_INTERNAL, SCHEDULERS, SVC_F_AFFINITY, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_REJECT, SVC_F_SOURCE_RANGES,
  type AffinityKeyT, type AffinityValueT, type BackendConnsT, type BackendIdT, type BackendT, type ConfigT,
  type CtKeyT, type CtValueT, type NodeIpT, type SchedStateT, type SlotKeyT, type SourceRangeT, type SvcKeyT,
  type SvcValueT,
} from '../bpf/layouts.js';
import { readServiceNames } from '../bpf/inspect.js';
import { serviceNamesPath } from '../paths.js';
import { DEFAULT_MAGLEV_MAX_SIZE, maglevTable, maglevTableSize } from '../model/maglev.js';
import { componentLogger } from '../log.js';
import { BpfError } from '../errors.js';
import { JsonFileError } from '../json-file.js';
import { cidrContains, formatIpv4, formatMask, normalizeIpv4Cidr, parseIpv4Cidr } from '../model/ipv4.js';

const log = componentLogger('bpf-sync');

/** What the reconciler needs of a map: BpfMap, or a fake/fault-injecting one in tests. */
export interface MapLike<K, V> {
  readonly name: string;
  lookup(key: K): V | null;
  update(key: K, value: V): void;
  delete(key: K): boolean;
  entries(): Array<[K, V]>;
  updateBatch(entries: ReadonlyArray<readonly [K, V]>): void;
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
}

export interface BpfDataplaneOptions {
  /** Sources inside are pods (internal traffic); null = none known. */
  clusterCIDR: string | null;
  /** kube-proxy's --nodeport-addresses: node addresses in these CIDRs serve NodePorts; [] = all. */
  nodePortAddresses: string[];
  /** Scheduler for services without the `vipr.io/scheduler` annotation. */
  defaultScheduler: Scheduler;
  /** Source ports for SNAT (above Linux's default ephemeral range, so local sockets never clash). */
  snatPorts: [number, number];
  /** The largest Maglev table (--maglev-table-size), one of MAGLEV_SIZES. */
  maglevMaxSize: number;
}

export const DEFAULT_BPF_OPTIONS: BpfDataplaneOptions = {
  clusterCIDR: null,
  nodePortAddresses: [],
  defaultScheduler: 'random',
  snatPorts: [61000, 65535],
  maglevMaxSize: DEFAULT_MAGLEV_MAX_SIZE,
};

/** The most slots one frontend can have: the datapath's backend_count is 16 bits. */
const MAX_SLOTS = 0xffff;

/** One frontend as the datapath sees it. */
export interface Frontend {
  /** Service key `ns/name:port` it came from. */
  service: string;
  key: SvcKeyT;
  flags: number;
  affinityTimeout: number;
  scheduler: Scheduler;
  /** The backends, one per endpoint. */
  backends: BackendT[];
  /** loadBalancerSourceRanges, normalised `a.b.c.d/n`. */
  sourceRanges: string[];
}

const PROTO: Record<string, number | undefined> = { TCP: IPPROTO_TCP, UDP: IPPROTO_UDP };

/** `namespace/name` of a service port key (`namespace/name:port` or `namespace/name`). */
export function serviceOfKey(key: string): string {
  const colon = key.indexOf(':');
  return colon < 0 ? key : key.slice(0, colon);
}

function frontendId(k: SvcKeyT): string {
  return `${k.vip}:${k.port}/${k.proto}/${k.scope}`;
}

function frontendKey(fid: string): SvcKeyT {
  const [ip, rest] = fid.split(':') as [string, string];
  const [port, proto, scope] = rest.split('/').map(Number) as [number, number, number];
  return { vip: ip, port, proto, scope };
}

function backendKey(b: BackendT): string {
  return `${b.addr}:${b.port}/${b.proto}`;
}

function toBackend(e: Endpoint, proto: number): BackendT {
  return {
    addr: e.ip,
    port: e.port,
    proto,
    flags: (e.terminating ? BE_F_TERMINATING : 0) | (e.isLocal ? BE_F_LOCAL : 0),
  };
}

function rangeKey(svcId: number, cidr: string): SourceRangeT {
  const { network, prefix } = parseIpv4Cidr(cidr);
  return { prefixlen: 32 + prefix, svc_id: svcId, addr: formatIpv4(network) };
}

function rangeOf(k: SourceRangeT): string {
  return `${k.addr}/${k.prefixlen - 32}`;
}

/**
 * The frontends of the desired state, as kube-proxy would serve them:
 *  - the cluster IP, for internal traffic (internalTrafficPolicy picks the endpoints);
 *  - NodePort (on every node address), external IPs and LoadBalancer IPs, for external traffic
 *    (externalTrafficPolicy picks the endpoints; Cluster SNATs flows to other nodes' backends).
 *    With externalTrafficPolicy Local, each also gets an internal-scope entry with the cluster
 *    endpoints, so pods reaching them are not limited to this node's endpoints (kube-proxy does
 *    the same for traffic from the cluster CIDR).
 * A service without any endpoint rejects (ICMP port unreachable); one whose policy leaves it
 * no endpoint on this node drops, as kube-proxy's rules do.
 */
export function bpfFrontends(state: DesiredState, defaultScheduler: Scheduler): { frontends: Frontend[]; skipped: string[] } {
  const frontends: Frontend[] = [];
  const skipped: string[] = [];
  for (const entry of state.services) {
    try {
      const own: Frontend[] = [];
      expandEntry(entry, defaultScheduler, own, skipped);
      frontends.push(...own);
    } catch (err) {
      skipped.push(`${entry.key}: cannot be expanded into frontends (${(err as Error).message}); not programmed`);
    }
  }
  // Two Services claiming one frontend: the model gave each frontend one owner
  // (src/model/ownership.ts), so this only guards the maps against a state built without it.
  const seen = new Set<string>();
  const unique = frontends.filter((f) => {
    const id = frontendId(f.key);
    if (seen.has(id)) {
      skipped.push(`${f.service}: ${f.key.vip}:${f.key.port} is already used by another Service`);
      return false;
    }
    seen.add(id);
    return true;
  });
  return { frontends: unique, skipped };
}

function expandEntry(entry: ServiceEntry, defaultScheduler: Scheduler, frontends: Frontend[], skipped: string[]): void {
  const svc = entry.service;
  const proto = PROTO[svc.id.protocol];
  if (proto === undefined) {
    skipped.push(`${entry.key}: protocol ${svc.id.protocol} is not handled by the BPF dataplane`);
    return;
  }
  const sel = entry.selection;
  const reject = sel.hasAnyEndpoints ? 0 : SVC_F_REJECT;
  const affinity = svc.affinityTimeoutSeconds > 0 ? SVC_F_AFFINITY : 0;
  const base = { service: entry.key, affinityTimeout: svc.affinityTimeoutSeconds, scheduler: svc.scheduler ?? defaultScheduler };
  const add = (vip: string, port: number, scope: number, flags: number, eps: Endpoint[], ranges: string[] = []): void => {
    frontends.push({
      ...base,
      key: { vip, port, proto, scope },
      flags: flags | affinity | reject | (ranges.length > 0 ? SVC_F_SOURCE_RANGES : 0),
      backends: eps.map((e) => toBackend(e, proto)),
      sourceRanges: ranges,
    });
  };
  const itpLocal = svc.internalTrafficPolicy === 'Local';
  add(svc.clusterIP, svc.port, SCOPE_EXTERNAL, itpLocal ? SVC_F_LOCAL : 0, itpLocal ? sel.localEndpoints : sel.clusterEndpoints);

  const etpLocal = svc.externalTrafficPolicy === 'Local';
  const externalEps = etpLocal ? sel.localEndpoints : sel.clusterEndpoints;
  const external = (vip: string, port: number, ranges: string[] = []): void => {
    add(vip, port, SCOPE_EXTERNAL, SVC_F_EXTERNAL | (etpLocal ? SVC_F_LOCAL : 0), externalEps, ranges);
    if (etpLocal) add(vip, port, SCOPE_INTERNAL, 0, sel.clusterEndpoints, ranges);
  };
  if (svc.nodePort > 0) external(NODEPORT_VIP, svc.nodePort);
  for (const ip of svc.externalIPs) external(ip, svc.port);
  const ranges = svc.loadBalancerSourceRanges.map((c) => normalizeIpv4Cidr(c));
  for (const ip of svc.loadBalancerIPs) external(ip, svc.port, ranges);
}

/**
 * The slots of a frontend and the scheduler that reads them: one slot per backend, or the Maglev
 * table. Values index `backends`. A Maglev table keeps its current size while that still fits
 * the backends (at least 100 slots each, at most 8 times the size it would get new, never above
 * the node's cap): slot positions depend on the size, so a new size would move almost every
 * flow. More backends than the largest table can hold fall back to `random`, with a line; more
 * than the datapath can count fail this frontend alone (thrown, caught by the caller).
 */
function slotLayout(f: Frontend, currentMaglevSize: number | null, maxSize: number): { slots: number[]; scheduler: Scheduler } {
  if (f.backends.length > MAX_SLOTS) {
    throw new RangeError(`${f.backends.length} endpoints exceed the ${MAX_SLOTS} a BPF frontend can hold`);
  }
  if (f.scheduler !== 'maglev') return { slots: f.backends.map((_, i) => i), scheduler: f.scheduler };
  const fresh = maglevTableSize(f.backends.length, maxSize);
  if (fresh === null) {
    log.warn(
      { svc: f.service },
      `${f.service}: ${f.backends.length} endpoints do not fit a Maglev table of at most ${maxSize} slots (--maglev-table-size); using the random scheduler`,
    );
    return { slots: f.backends.map((_, i) => i), scheduler: 'random' };
  }
  const keep = currentMaglevSize !== null && currentMaglevSize >= 100 * f.backends.length && currentMaglevSize <= 8 * fresh && currentMaglevSize <= maxSize;
  return { slots: maglevTable(f.backends.map((b) => `${b.addr}:${b.port}`), keep ? currentMaglevSize : fresh), scheduler: 'maglev' };
}

interface Applied {
  svcId: number;
  value: SvcValueT;
  /** backend id per slot, 0..count-1 */
  slots: number[];
  ranges: Set<string>;
  sched: boolean;
  service: string;
}

/** Ids from 1 up, reusing freed ones (most recently freed first: O(1) both ways). */
class IdAllocator {
  private next = 1;
  private free: number[] = [];
  constructor(private readonly max: number, private readonly what: string) {}

  reset(used: Iterable<number>): void {
    const set = new Set(used);
    let max = 0;
    for (const id of set) if (id > max) max = id;
    this.next = max + 1;
    this.free = [];
    for (let i = this.next - 1; i >= 1; i--) if (!set.has(i)) this.free.push(i);
  }

  take(): number {
    const id = this.free.pop() ?? this.next++;
    if (id > this.max) throw new BpfError(`allocate ${this.what} id`, 28, null, { hint: `more than ${this.max} in use` });
    return id;
  }

  release(id: number): void {
    this.free.push(id);
  }
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
  private nodeIps = new Set<string>();
  private config: ConfigT | null = null;
  /** Slots referencing each backend, over every applied frontend. */
  private refs = new Map<number, number>();
  private namesDirty = true;
  private readonly opts: BpfDataplaneOptions;

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
    for (const [k, v] of this.maps.backends.entries()) {
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
    const services = this.maps.services.entries();
    const countOf = new Map(services.map(([, v]) => [v.svc_id, v.backend_count]));
    const slots = new Map<string, number>();
    for (const [k, v] of this.maps.slots.entries()) {
      const count = countOf.get(k.svc_id);
      if (count === undefined || k.slot >= count) this.orphanSlots.push(k);
      else slots.set(`${k.svc_id}/${k.slot}`, v.id);
    }
    const ranges = new Map<number, Set<string>>();
    for (const [k] of this.maps.sourceRanges.entries()) {
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
    this.nodeIps = new Set(this.maps.nodeIps.entries().map(([k]) => k.addr));
    this.config = this.maps.config.lookup(0);
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
      scope === null ? state : { node: state.node, services: state.services.filter((e) => inScope(e.key)) },
      this.opts.defaultScheduler,
    );
    for (const s of skipped) log.warn(s);
    const result: SyncResult = { services: 0, backends: 0, writes: 0, deletes: 0, failed: [], changed: [] };
    const desired = new Map(frontends.map((f) => [frontendId(f.key), f]));
    this.syncNode(state, result);
    /** Flows whose backend left their service: UDP ones are cut at once. */
    const gone: Array<{ svcId: number; backendId: number }> = [];

    // Phase 0: leftovers of an interrupted sync, then removed services.
    for (const k of this.orphanSlots) this.tryDelete(this.maps.slots, k, result);
    for (const k of this.orphanRanges) this.tryDelete(this.maps.sourceRanges, k, result);
    for (const id of this.orphanSched) this.tryDelete(this.maps.sched, id, result);
    this.orphanSlots = [];
    this.orphanRanges = [];
    this.orphanSched = [];
    for (const [fid, a] of [...this.applied]) {
      if (desired.has(fid) || !inScope(a.service)) continue;
      this.tryDelete(this.maps.services, frontendKey(fid), result);
      a.slots.forEach((_, slot) => this.tryDelete(this.maps.slots, { svc_id: a.svcId, slot }, result));
      for (const r of a.ranges) this.tryDelete(this.maps.sourceRanges, rangeKey(a.svcId, r), result);
      if (a.sched) this.tryDelete(this.maps.sched, a.svcId, result);
      for (const id of new Set(a.slots)) gone.push({ svcId: a.svcId, backendId: id });
      this.addRefs(a.slots, -1);
      this.svcIds.release(a.svcId);
      this.applied.delete(fid);
      this.namesDirty = true;
      if (a.service) result.changed.push(a.service);
    }

    // Phase 1: backends, slots, source ranges, scheduler state.
    const newBackends: Array<[BackendIdT, BackendT]> = [];
    const createdIds: number[] = [];
    const backendIdOf = (b: BackendT): number => {
      const k = backendKey(b);
      let id = this.backendIds.get(k);
      if (id === undefined) {
        id = this.beIds.take();
        this.backendIds.set(k, id);
        createdIds.push(id);
      }
      const cur = this.backendById.get(id);
      if (!cur || cur.flags !== b.flags) {
        newBackends.push([{ id }, b]);
        this.backendById.set(id, b);
      }
      return id;
    };

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
    }
    const pending: Pending[] = [];
    for (const [fid, f] of desired) {
      const prev = this.applied.get(fid);
      let layout: ReturnType<typeof slotLayout>;
      try {
        const currentMaglev = prev && prev.value.scheduler === SCHEDULERS.indexOf('maglev') ? prev.slots.length : null;
        layout = slotLayout(f, currentMaglev, this.opts.maglevMaxSize);
      } catch (err) {
        // This frontend alone: it keeps what it had (or stays absent), the others sync.
        result.failed.push({ service: f.service, error: `${f.key.vip}:${f.key.port}: ${(err as Error).message}` });
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
      pending.push({ fid, f, svcId, isNew: prev === undefined, value, slotIds, slotWrites, rangeWrites, rangeDeletes, schedWrite });
    }

    const failedSvc = new Set<number>();
    const failedBackends = new Set<number>();
    this.writeAll(this.maps.backends, newBackends, result, (k) => failedBackends.add(k.id));
    for (const id of failedBackends) {
      const b = this.backendById.get(id);
      this.backendById.delete(id);
      if (b) this.backendIds.delete(backendKey(b));
    }
    // lc's open-flow counters: one per backend, created with it (a missing one only means lc
    // counts that backend as idle).
    this.writeAll(
      this.maps.backendConns,
      createdIds.filter((id) => !failedBackends.has(id)).map((id) => [{ id }, { active: 0 }] as [BackendIdT, BackendConnsT]),
      result,
      () => undefined,
    );
    for (const p of pending) if (p.slotIds.some((id) => failedBackends.has(id))) failedSvc.add(p.svcId);
    const ok = (p: Pending): boolean => !failedSvc.has(p.svcId);
    this.writeAll(this.maps.slots, pending.filter(ok).flatMap((p) => p.slotWrites), result, (k) => failedSvc.add(k.svc_id));
    this.writeAll(
      this.maps.sourceRanges,
      pending.filter(ok).flatMap((p) => p.rangeWrites.map((r) => [rangeKey(p.svcId, r), 0] as [SourceRangeT, number])),
      result,
      (k) => failedSvc.add(k.svc_id),
    );
    for (const p of pending.filter((x) => ok(x) && x.schedWrite)) {
      if (!this.tryWrite(this.maps.sched, p.svcId, { rr_next: 0 }, result)) failedSvc.add(p.svcId);
    }

    // Phase 2: expose the services.
    const byFid = new Map(pending.map((p) => [p.fid, p]));
    this.writeAll(
      this.maps.services,
      pending.filter(ok).map((p) => [p.f.key, p.value] as [SvcKeyT, SvcValueT]),
      result,
      (k) => {
        const p = byFid.get(frontendId(k));
        if (p) failedSvc.add(p.svcId);
      },
    );

    const stillReferenced = new Set<number>();
    for (const p of pending) {
      const prev = this.applied.get(p.fid);
      if (failedSvc.has(p.svcId)) {
        result.failed.push({ service: p.f.service, error: `map full or rejected: ${p.f.key.vip}:${p.f.key.port}` });
        if (p.isNew) {
          // Roll back what was written for it; nothing exposed it.
          p.slotWrites.forEach(([k]) => this.tryDelete(this.maps.slots, k, result));
          p.rangeWrites.forEach((r) => this.tryDelete(this.maps.sourceRanges, rangeKey(p.svcId, r), result));
          if (p.schedWrite) this.tryDelete(this.maps.sched, p.svcId, result);
          this.svcIds.release(p.svcId);
        } else {
          // Its entry keeps the old count; slots below it may hold new, valid ids: keep those
          // backends out of the sweep. The next (full) sync re-reads the maps.
          p.slotIds.forEach((id) => stillReferenced.add(id));
          this.addRefs(p.slotIds, 1);
        }
        continue;
      }
      // Phase 3a: what the new entry no longer uses.
      if (prev) {
        for (let s = p.slotIds.length; s < prev.slots.length; s++) this.tryDelete(this.maps.slots, { svc_id: p.svcId, slot: s }, result);
        const now = new Set(p.slotIds);
        for (const id of new Set(prev.slots)) if (!now.has(id)) gone.push({ svcId: p.svcId, backendId: id });
      }
      p.rangeDeletes.forEach((r) => this.tryDelete(this.maps.sourceRanges, rangeKey(p.svcId, r), result));
      const wantSched = p.f.scheduler === 'rr';
      if (prev?.sched && !wantSched) this.tryDelete(this.maps.sched, p.svcId, result);
      if (prev) this.addRefs(prev.slots, -1);
      this.addRefs(p.slotIds, 1);
      this.applied.set(p.fid, {
        svcId: p.svcId, value: p.value, slots: p.slotIds, ranges: new Set(p.f.sourceRanges), sched: wantSched, service: p.f.service,
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

    // Phase 3b: sweep backends no slot references.
    for (const [id, b] of [...this.backendById]) {
      if ((this.refs.get(id) ?? 0) > 0 || stillReferenced.has(id)) continue;
      this.refs.delete(id);
      this.tryDelete(this.maps.backends, { id }, result);
      this.tryDelete(this.maps.backendConns, { id }, result);
      this.backendById.delete(id);
      this.backendIds.delete(backendKey(b));
      this.beIds.release(id);
    }
    if (gone.length > 0) this.cutGoneFlows(gone, result);

    result.services = this.applied.size;
    result.backends = this.backendById.size;
    this.writeNames();
    for (const f of result.failed) log.error({ svc: f.service }, `service not programmed: ${f.error}`);
    return result;
  }

  /**
   * A backend left a service: its UDP flows through that service move at once (their next
   * datagram is balanced again; kube-proxy instead leaves them to the kernel's conntrack, which
   * blackholes them until it expires), and affinity to it ends. TCP flows drain: they keep their
   * backend until they close. Costs one walk of the UDP conntrack map, only on syncs that removed
   * a backend.
   */
  private cutGoneFlows(gone: Array<{ svcId: number; backendId: number }>, result: SyncResult): void {
    const pairs = new Set(gone.map((g) => `${g.svcId}/${g.backendId}`));
    for (const [k, v] of this.maps.ctUdp.entries()) {
      if (k.dir !== CT_FORWARD || !pairs.has(`${v.svc_id}/${v.backend_id}`)) continue;
      if (k.proto !== IPPROTO_UDP) continue;
      this.tryDelete(this.maps.ctUdp, k, result);
      this.tryDelete(this.maps.ctUdp, replyKeyOf(k, v), result);
    }
    for (const [k, v] of this.maps.affinity.entries()) {
      if (pairs.has(`${k.svc_id}/${v.backend_id}`)) this.tryDelete(this.maps.affinity, k, result);
    }
  }

  /** Node addresses that serve NodePorts, and the datapath's settings. */
  private syncNode(state: DesiredState, result: SyncResult): void {
    const allowed = this.opts.nodePortAddresses;
    const ips = new Set(state.node.ips.filter((ip) => allowed.length === 0 || allowed.some((c) => cidrContains(parseIpv4Cidr(c), ip))));
    for (const ip of ips) if (!this.nodeIps.has(ip)) this.tryWrite(this.maps.nodeIps, { addr: ip }, 0, result);
    for (const ip of this.nodeIps) if (!ips.has(ip)) this.tryDelete(this.maps.nodeIps, { addr: ip }, result);
    this.nodeIps = ips;
    const cluster = this.opts.clusterCIDR === null ? null : parseIpv4Cidr(this.opts.clusterCIDR);
    const config: ConfigT = {
      snat_addr: state.node.ips[0] ?? '0.0.0.0',
      cluster_cidr: cluster ? formatIpv4(cluster.network) : '0.0.0.0',
      cluster_mask: cluster ? formatMask(cluster.prefix) : '0.0.0.0',
      snat_port_min: this.opts.snatPorts[0],
      snat_port_max: this.opts.snatPorts[1],
    };
    if (JSON.stringify(config) !== JSON.stringify(this.config) && this.tryWrite(this.maps.config, 0, config, result)) this.config = config;
  }

  /**
   * Writes entries, in one batch when there are many. A failing batch is retried entry by entry
   * so that one full map or bad entry costs only the services it belongs to.
   */
  private writeAll<K, V>(map: MapLike<K, V>, entries: Array<[K, V]>, result: SyncResult, onFail: (k: K) => void): void {
    if (entries.length === 0) return;
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

/** The reply entry that belongs to a forward entry. */
export function replyKeyOf(k: CtKeyT, v: CtValueT): CtKeyT {
  const snat = v.snat_addr !== '0.0.0.0';
  return {
    saddr: v.nat_addr,
    daddr: snat ? v.snat_addr : k.saddr,
    sport: v.nat_port,
    dport: snat ? v.snat_port : k.sport,
    proto: k.proto,
    dir: CT_REPLY,
  };
}

export type { ServiceEntry };
