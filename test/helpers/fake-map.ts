/*
 * An in-memory BPF hash map for reconciler tests. Keys and values go through the real codecs, so
 * identity is byte equality as in the kernel and what comes back is what a real map would decode
 * (field order, dropped padding). It behaves like the kernel where the reconciler depends on it:
 * a write of a new key into a full map fails with E2BIG, a delete of a missing key reports false,
 * a batch update writes entries in order until one fails and then throws. Faults can be injected,
 * and every operation on every map sharing one log is recorded in order.
 */
import {
  MAPS, type AffinityKeyT, type AffinityValueT, type BackendConnsT, type BackendIdT, type BackendT, type Config6T, type ConfigT, type CtKeyT,
  type CtValueT, type MapSpec, type NodeIpT, type SchedStateT, type SlotKeyT, type SourceRangeT, type SvcKeyT, type SvcValueT,
} from '../../src/bpf/layouts.js';
import { BpfError } from '../../src/errors.js';
import type { MapLike } from '../../src/bpf/map.js';
import type { ServiceMaps } from '../../src/bpf/reconciler/reconciler.js';

export const E2BIG = 7;
export const EIO = 5;

export interface MapOp {
  op: 'update' | 'delete';
  /** The map's pinned name. */
  map: string;
  /** The key as decoded from its bytes. */
  key: unknown;
  /** For updates: the value as decoded from its bytes. */
  value?: unknown;
  /** The update was written / the deleted key existed. */
  ok: boolean;
  /** The update came from updateBatch. */
  batch: boolean;
}

interface KeyFault<K> {
  matches: (key: K) => boolean;
  errno: number;
}

export class FakeMap<K, V> implements MapLike<K, V> {
  private readonly data = new Map<string, { key: Buffer; value: Buffer }>();
  private readonly keyFaults: Array<KeyFault<K>> = [];
  /** Entry writes still to pass before the injected failure (single and batched writes count). */
  private failAfter: { remaining: number; errno: number } | null = null;
  /** Calls of updateBatch, whether they succeeded or not. */
  batchCalls = 0;

  constructor(
    private readonly spec: MapSpec<K, V>,
    /** Entries the map holds at most (the map's max_entries). */
    public capacity: number,
    /** Log shared by the maps whose relative order a test checks. */
    readonly ops: MapOp[] = [],
  ) {}

  get name(): string {
    return this.spec.name;
  }

  get size(): number {
    return this.data.size;
  }

  /** Makes the `n`th entry write from now on (1 = the next) fail once with `errno`. */
  failNthUpdate(n: number, errno = EIO): void {
    this.failAfter = { remaining: n - 1, errno };
  }

  /** Makes every write of a key matching `matches` fail with `errno` until clearFaults(). */
  failUpdatesWhere(matches: (key: K) => boolean, errno = EIO): void {
    this.keyFaults.push({ matches, errno });
  }

  clearFaults(): void {
    this.keyFaults.length = 0;
    this.failAfter = null;
  }

  lookup(key: K): V | null {
    const e = this.data.get(this.id(key));
    return e ? this.spec.value.decode(e.value) : null;
  }

  update(key: K, value: V): void {
    this.write(key, value, false);
  }

  delete(key: K): boolean {
    const id = this.id(key);
    const ok = this.data.delete(id);
    this.ops.push({ op: 'delete', map: this.name, key: this.decodedKey(key), ok, batch: false });
    return ok;
  }

  entries(): Array<[K, V]> {
    return [...this.data.values()].map((e) => [this.spec.key.decode(e.key), this.spec.value.decode(e.value)]);
  }

  /** As BPF_MAP_UPDATE_BATCH: entries are written in order; the first failure stops it and throws. */
  updateBatch(entries: ReadonlyArray<readonly [K, V]>): void {
    this.batchCalls++;
    for (const [k, v] of entries) this.write(k, v, true);
  }

  /** Whether the map holds `key`. */
  has(key: K): boolean {
    return this.data.has(this.id(key));
  }

  private write(key: K, value: V, batch: boolean): void {
    const keyBuf = this.spec.key.encode(key);
    const valueBuf = this.spec.value.encode(value);
    const id = keyBuf.toString('hex');
    const record = (ok: boolean): void => {
      this.ops.push({ op: 'update', map: this.name, key: this.spec.key.decode(keyBuf), value: this.spec.value.decode(valueBuf), ok, batch });
    };
    const fail = (errno: number): never => {
      record(false);
      throw new BpfError(`bpf_map_update_${batch ? 'batch' : 'elem'}(${this.name})`, errno, null);
    };
    const countdown = this.failAfter;
    if (countdown !== null) {
      if (countdown.remaining === 0) {
        this.failAfter = null;
        fail(countdown.errno);
      }
      countdown.remaining--;
    }
    const fault = this.keyFaults.find((f) => f.matches(key));
    if (fault) fail(fault.errno);
    // The kernel refuses a new key in a full hash map; replacing an existing key still works.
    if (!this.data.has(id) && this.data.size >= this.capacity) fail(E2BIG);
    this.data.set(id, { key: keyBuf, value: valueBuf });
    record(true);
  }

  private id(key: K): string {
    return this.spec.key.encode(key).toString('hex');
  }

  private decodedKey(key: K): K {
    return this.spec.key.decode(this.spec.key.encode(key));
  }
}

/** The maps the reconciler uses, sharing one operation log. */
export class FakeMaps {
  readonly ops: MapOp[] = [];
  readonly services: FakeMap<SvcKeyT, SvcValueT>;
  readonly slots: FakeMap<SlotKeyT, BackendIdT>;
  readonly backends: FakeMap<BackendIdT, BackendT>;
  readonly sourceRanges: FakeMap<SourceRangeT, number>;
  readonly sched: FakeMap<number, SchedStateT>;
  readonly backendConns: FakeMap<BackendIdT, BackendConnsT>;
  readonly nodeIps: FakeMap<NodeIpT, number>;
  readonly config: FakeMap<number, ConfigT>;
  readonly ctUdp: FakeMap<CtKeyT, CtValueT>;
  readonly affinity: FakeMap<AffinityKeyT, AffinityValueT>;
  readonly services6: FakeMap<SvcKeyT, SvcValueT>;
  readonly backends6: FakeMap<BackendIdT, BackendT>;
  readonly sourceRanges6: FakeMap<SourceRangeT, number>;
  readonly nodeIps6: FakeMap<NodeIpT, number>;
  readonly config6: FakeMap<number, Config6T>;
  readonly ctUdp6: FakeMap<CtKeyT, CtValueT>;
  readonly affinity6: FakeMap<AffinityKeyT, AffinityValueT>;

  constructor(capacity: Partial<Record<keyof ServiceMaps, number>> = {}) {
    const cap = (role: keyof ServiceMaps): number => capacity[role] ?? 65536;
    this.services = new FakeMap(MAPS.services, cap('services'), this.ops);
    this.slots = new FakeMap(MAPS.slots, cap('slots'), this.ops);
    this.backends = new FakeMap(MAPS.backends, cap('backends'), this.ops);
    this.sourceRanges = new FakeMap(MAPS.sourceRanges, cap('sourceRanges'), this.ops);
    this.sched = new FakeMap(MAPS.sched, cap('sched'), this.ops);
    this.backendConns = new FakeMap(MAPS.backendConns, cap('backendConns'), this.ops);
    this.nodeIps = new FakeMap(MAPS.nodeIps, cap('nodeIps'), this.ops);
    this.config = new FakeMap(MAPS.config, cap('config'), this.ops);
    this.ctUdp = new FakeMap(MAPS.ctUdp, cap('ctUdp'), this.ops);
    this.affinity = new FakeMap(MAPS.affinity, cap('affinity'), this.ops);
    this.services6 = new FakeMap(MAPS.services6, cap('services6'), this.ops);
    this.backends6 = new FakeMap(MAPS.backends6, cap('backends6'), this.ops);
    this.sourceRanges6 = new FakeMap(MAPS.sourceRanges6, cap('sourceRanges6'), this.ops);
    this.nodeIps6 = new FakeMap(MAPS.nodeIps6, cap('nodeIps6'), this.ops);
    this.config6 = new FakeMap(MAPS.config6, cap('config6'), this.ops);
    this.ctUdp6 = new FakeMap(MAPS.ctUdp6, cap('ctUdp6'), this.ops);
    this.affinity6 = new FakeMap(MAPS.affinity6, cap('affinity6'), this.ops);
  }

  /** The ServiceMaps view the reconciler takes. */
  get maps(): ServiceMaps {
    return {
      services: this.services, slots: this.slots, backends: this.backends, sourceRanges: this.sourceRanges, sched: this.sched,
      backendConns: this.backendConns, nodeIps: this.nodeIps, config: this.config, ctUdp: this.ctUdp, affinity: this.affinity,
      services6: this.services6, backends6: this.backends6, sourceRanges6: this.sourceRanges6, nodeIps6: this.nodeIps6,
      config6: this.config6, ctUdp6: this.ctUdp6, affinity6: this.affinity6,
    };
  }

  /** Forgets the recorded operations (e.g. after setting up a starting state). */
  clearOps(): void {
    this.ops.length = 0;
  }

  /** Successful writes and deletes only, in order. */
  effects(): MapOp[] {
    return this.ops.filter((o) => o.ok);
  }
}
