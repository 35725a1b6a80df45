/*
 * The BPF dataplane: turns the desired state into entries of vipr's maps, writing only what
 * changed, in an order that never exposes a half-written service:
 *   1. backends, reverse-NAT entries and slots 0..n-1 (nothing reads them before step 2),
 *   2. the service entries with their new backend counts,
 *   3. slots beyond a shrunk count, and finally backends no slot references any more (the sweep).
 * Removed services go first of all (entry, then slots and reverse NAT), so a full map has room
 * for what replaces them.
 * Ids (svc_id, backend id) are allocated here and restored from the pinned maps on start, so a
 * restarted agent keeps every id and therefore every tracked connection.
 */
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { DesiredState, Endpoint } from '../model/types.js';
import type { Dataplane, SyncResult } from './dataplane.js';
import {
  BE_F_LOCAL, BE_F_TERMINATING, IPPROTO_TCP, IPPROTO_UDP, SCOPE_EXTERNAL, SCHEDULERS, SVC_F_AFFINITY,
  SVC_F_LOCAL, type BackendIdT, type BackendT, type RevNatT, type SlotKeyT, type SvcKeyT, type SvcValueT,
} from '../bpf/layouts.js';
import { readServiceNames } from '../bpf/inspect.js';
import { serviceNamesPath } from '../paths.js';
import { componentLogger } from '../log.js';
import { BpfError } from '../errors.js';

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
  revnat: MapLike<number, RevNatT>;
}

/** One frontend as the datapath sees it. */
export interface Frontend {
  /** Service key `ns/name:port` it came from. */
  service: string;
  key: SvcKeyT;
  flags: number;
  affinityTimeout: number;
  scheduler: number;
  backends: BackendT[];
}

const PROTO: Record<string, number | undefined> = { TCP: IPPROTO_TCP, UDP: IPPROTO_UDP };

function frontendId(k: SvcKeyT): string {
  return `${k.vip}:${k.port}/${k.proto}/${k.scope}`;
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

/**
 * The frontends of the desired state. ClusterIP traffic follows internalTrafficPolicy:
 * kube-proxy's selection already holds the endpoints each policy may use.
 */
export function bpfFrontends(state: DesiredState): { frontends: Frontend[]; skipped: string[] } {
  const frontends: Frontend[] = [];
  const skipped: string[] = [];
  for (const entry of state.services) {
    const svc = entry.service;
    const proto = PROTO[svc.id.protocol];
    if (proto === undefined) {
      skipped.push(`${entry.key}: protocol ${svc.id.protocol} is not handled by the BPF dataplane`);
      continue;
    }
    const local = svc.internalTrafficPolicy === 'Local';
    const eps = local ? entry.selection.localEndpoints : entry.selection.clusterEndpoints;
    frontends.push({
      service: entry.key,
      key: { vip: svc.clusterIP, port: svc.port, proto, scope: SCOPE_EXTERNAL },
      flags: (svc.affinityTimeoutSeconds > 0 ? SVC_F_AFFINITY : 0) | (local ? SVC_F_LOCAL : 0),
      affinityTimeout: svc.affinityTimeoutSeconds,
      // The datapath balances at random (kube-proxy's behaviour) until more schedulers land.
      scheduler: SCHEDULERS.indexOf('random'),
      backends: eps.map((e) => toBackend(e, proto)),
    });
  }
  return { frontends, skipped };
}

interface Applied {
  svcId: number;
  value: SvcValueT;
  /** backend id per slot, 0..count-1 */
  slots: number[];
  service: string;
}

/** Ids from 1 up, reusing freed ones lowest first. */
class IdAllocator {
  private next = 1;
  private readonly free: number[] = [];
  constructor(private readonly max: number, private readonly what: string) {}

  reset(used: Iterable<number>): void {
    const set = new Set(used);
    this.next = set.size === 0 ? 1 : Math.max(...set) + 1;
    this.free.length = 0;
    for (let i = 1; i < this.next; i++) if (!set.has(i)) this.free.push(i);
  }

  take(): number {
    const id = this.free.shift() ?? this.next++;
    if (id > this.max) throw new BpfError(`allocate ${this.what} id`, 28, null, { hint: `more than ${this.max} in use` });
    return id;
  }

  release(id: number): void {
    this.free.push(id);
    this.free.sort((a, b) => a - b);
  }
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
  private orphanRevnat: number[] = [];
  /** Services whose reverse-NAT entry is known to be right. */
  private revnatOk = new Set<number>();

  constructor(
    private readonly maps: ServiceMaps,
    private readonly pinDir: string | null,
  ) {}

  /**
   * Rebuilds what is installed from the maps (on start, and before every full sync), including
   * what a crash mid-sync can leave: slots and reverse-NAT entries no service entry owns, slots
   * beyond a service's count, missing or wrong reverse-NAT entries. The next sync removes or
   * rewrites those.
   */
  restore(): void {
    this.applied = new Map();
    this.backendIds = new Map();
    this.backendById = new Map();
    this.orphanSlots = [];
    this.orphanRevnat = [];
    this.revnatOk = new Set();
    for (const [k, v] of this.maps.backends.entries()) {
      this.backendIds.set(backendKey(v), k.id);
      this.backendById.set(k.id, v);
    }
    const names = this.pinDir === null ? new Map<number, string>() : readServiceNames(this.pinDir);
    const services = this.maps.services.entries();
    const countOf = new Map(services.map(([, v]) => [v.svc_id, v.backend_count]));
    const slots = new Map<string, number>();
    for (const [k, v] of this.maps.slots.entries()) {
      const count = countOf.get(k.svc_id);
      if (count === undefined || k.slot >= count) this.orphanSlots.push(k);
      else slots.set(`${k.svc_id}/${k.slot}`, v.id);
    }
    const revnat = new Map(this.maps.revnat.entries());
    for (const [k, v] of services) {
      const ids: number[] = [];
      for (let s = 0; s < v.backend_count; s++) ids.push(slots.get(`${v.svc_id}/${s}`) ?? 0);
      this.applied.set(frontendId(k), { svcId: v.svc_id, value: v, slots: ids, service: names.get(v.svc_id) ?? '' });
      const rev = revnat.get(v.svc_id);
      if (rev && rev.vip === k.vip && rev.port === k.port) this.revnatOk.add(v.svc_id);
    }
    for (const id of revnat.keys()) if (!countOf.has(id)) this.orphanRevnat.push(id);
    this.svcIds.reset([...this.applied.values()].map((a) => a.svcId));
    this.beIds.reset(this.backendById.keys());
    this.restored = true;
    log.info(
      { services: this.applied.size, backends: this.backendById.size, orphanSlots: this.orphanSlots.length, orphanRevnat: this.orphanRevnat.length },
      'restored state from pinned maps',
    );
  }

  async sync(state: DesiredState, full: boolean): Promise<SyncResult> {
    if (full || !this.restored) this.restore();
    const { frontends, skipped } = bpfFrontends(state);
    for (const s of skipped) log.warn(s);
    const result: SyncResult = { services: 0, backends: 0, writes: 0, deletes: 0, failed: [], changed: [] };
    const desired = new Map(frontends.map((f) => [frontendId(f.key), f]));

    // Phase 0: leftovers of an interrupted sync, then removed services (entry first, then its
    // slots and reverse NAT), so their room in full maps is free for what is added below.
    for (const k of this.orphanSlots) this.tryDelete(this.maps.slots, k, result);
    for (const id of this.orphanRevnat) this.tryDelete(this.maps.revnat, id, result);
    this.orphanSlots = [];
    this.orphanRevnat = [];
    for (const [fid, a] of [...this.applied]) {
      if (desired.has(fid)) continue;
      const [ip, rest] = fid.split(':') as [string, string];
      const [port, proto, scope] = rest.split('/').map(Number) as [number, number, number];
      this.tryDelete(this.maps.services, { vip: ip, port, proto, scope }, result);
      a.slots.forEach((_, slot) => this.tryDelete(this.maps.slots, { svc_id: a.svcId, slot }, result));
      this.tryDelete(this.maps.revnat, a.svcId, result);
      this.revnatOk.delete(a.svcId);
      this.svcIds.release(a.svcId);
      this.applied.delete(fid);
      if (a.service) result.changed.push(a.service);
    }

    // Phase 1: backends, reverse NAT, slots.
    const newBackends: Array<[BackendIdT, BackendT]> = [];
    const backendIdOf = (b: BackendT): number => {
      const k = backendKey(b);
      let id = this.backendIds.get(k);
      if (id === undefined) {
        id = this.beIds.take();
        this.backendIds.set(k, id);
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
    }
    const pending: Pending[] = [];
    for (const [fid, f] of desired) {
      const prev = this.applied.get(fid);
      const slotIds = f.backends.map(backendIdOf);
      const svcId = prev?.svcId ?? this.svcIds.take();
      const value: SvcValueT = {
        svc_id: svcId,
        backend_count: slotIds.length,
        flags: f.flags,
        affinity_timeout: f.affinityTimeout,
        scheduler: f.scheduler,
      };
      const sameValue = prev !== undefined && JSON.stringify(prev.value) === JSON.stringify(value);
      const sameSlots = prev !== undefined && prev.slots.length === slotIds.length && prev.slots.every((id, i) => id === slotIds[i]);
      if (sameValue && sameSlots && this.revnatOk.has(svcId)) continue;
      const slotWrites: Array<[SlotKeyT, BackendIdT]> = [];
      slotIds.forEach((id, slot) => {
        if (prev?.slots[slot] !== id) slotWrites.push([{ svc_id: svcId, slot }, { id }]);
      });
      pending.push({ fid, f, svcId, isNew: prev === undefined, value, slotIds, slotWrites });
    }

    const failedSvc = new Set<number>();
    const failedBackends = new Set<number>();
    this.writeAll(this.maps.backends, newBackends, result, (k) => failedBackends.add(k.id));
    for (const id of failedBackends) {
      const b = this.backendById.get(id);
      this.backendById.delete(id);
      if (b) this.backendIds.delete(backendKey(b));
    }
    for (const p of pending) if (p.slotIds.some((id) => failedBackends.has(id))) failedSvc.add(p.svcId);
    const revnats: Array<[number, RevNatT]> = pending
      .filter((p) => !this.revnatOk.has(p.svcId))
      .map((p) => [p.svcId, { vip: p.f.key.vip, port: p.f.key.port }]);
    this.writeAll(this.maps.revnat, revnats, result, (k) => {
      failedSvc.add(k);
    });
    const slotWrites = pending.filter((p) => !failedSvc.has(p.svcId)).flatMap((p) => p.slotWrites);
    this.writeAll(this.maps.slots, slotWrites, result, (k) => {
      failedSvc.add(k.svc_id);
    });

    // Phase 2: expose the services.
    const svcWrites = pending.filter((p) => !failedSvc.has(p.svcId)).map((p) => [p.f.key, p.value] as [SvcKeyT, SvcValueT]);
    this.writeAll(this.maps.services, svcWrites, result, (k) => {
      const p = pending.find((x) => frontendId(x.f.key) === frontendId(k));
      if (p) failedSvc.add(p.svcId);
    });

    const stillReferenced = new Set<number>();
    for (const p of pending) {
      const prev = this.applied.get(p.fid);
      if (failedSvc.has(p.svcId)) {
        result.failed.push({ service: p.f.service, error: `map full or rejected: ${p.f.key.vip}:${p.f.key.port}` });
        if (p.isNew) {
          // Roll back what was written for it; nothing exposed it.
          p.slotWrites.forEach(([k]) => this.tryDelete(this.maps.slots, k, result));
          this.tryDelete(this.maps.revnat, p.svcId, result);
          this.svcIds.release(p.svcId);
        } else {
          // Its entry keeps the old count; slots below it may hold new, valid ids: keep those
          // backends out of the sweep. The next (full) sync re-reads the maps.
          p.slotIds.forEach((id) => stillReferenced.add(id));
        }
        continue;
      }
      // Phase 3a: slots beyond a shrunk count.
      if (prev) {
        for (let s = p.slotIds.length; s < prev.slots.length; s++) this.tryDelete(this.maps.slots, { svc_id: p.svcId, slot: s }, result);
      }
      this.applied.set(p.fid, { svcId: p.svcId, value: p.value, slots: p.slotIds, service: p.f.service });
      this.revnatOk.add(p.svcId);
      result.changed.push(p.f.service);
    }
    // Names may change without any map change (a Service renamed onto the same address).
    for (const [fid, f] of desired) {
      const a = this.applied.get(fid);
      if (a) a.service = f.service;
    }

    // Phase 3c: sweep backends no slot references.
    const referenced = new Set<number>(stillReferenced);
    for (const a of this.applied.values()) a.slots.forEach((id) => referenced.add(id));
    for (const [id, b] of [...this.backendById]) {
      if (referenced.has(id)) continue;
      this.tryDelete(this.maps.backends, { id }, result);
      this.backendById.delete(id);
      this.backendIds.delete(backendKey(b));
      this.beIds.release(id);
    }

    result.services = this.applied.size;
    result.backends = this.backendById.size;
    this.writeNames();
    if (result.failed.length > 0) {
      for (const f of result.failed) log.error({ svc: f.service }, `service not programmed: ${f.error}`);
    }
    return result;
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
    for (const [k, v] of entries) {
      try {
        map.update(k, v);
        result.writes++;
      } catch (err) {
        log.error({ err: (err as Error).message, map: map.name }, 'map update failed');
        onFail(k);
      }
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
    if (this.pinDir === null) return;
    const names: Record<string, string> = {};
    for (const a of this.applied.values()) names[String(a.svcId)] = a.service;
    const path = serviceNamesPath(this.pinDir);
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, JSON.stringify(names));
  }

  /** Service keys currently programmed, by frontend (for tests and status). */
  programmed(): Map<string, { svcId: number; backends: BackendT[] }> {
    const out = new Map<string, { svcId: number; backends: BackendT[] }>();
    for (const [fid, a] of this.applied) {
      out.set(fid, { svcId: a.svcId, backends: a.slots.map((id) => this.backendById.get(id)).filter((b): b is BackendT => !!b) });
    }
    return out;
  }

  async close(): Promise<void> {}
}
