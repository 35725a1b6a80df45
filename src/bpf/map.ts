/*
 * Typed access to one BPF map through its codecs. Keys and values are plain TypeScript values;
 * buffers, byte order and per-CPU layouts stay in here.
 */
import * as libbpf from './libbpf.js';
import type { MapSpec } from './layouts.js';
import { BpfError } from '../errors.js';

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

/** What the reconciler needs of a map: BpfMap, or a fake or fault-injecting one in tests. */
export interface MapLike<K, V> {
  readonly name: string;
  lookup(key: K): V | null;
  update(key: K, value: V): void;
  delete(key: K): boolean;
  entries(): Array<[K, V]>;
  updateBatch(entries: ReadonlyArray<readonly [K, V]>): void;
}


/** Batch sizes: large enough to amortise the syscall, small enough for modest buffers. */
const BATCH = 4096;

export class BpfMap<K, V> {
  private readonly keyBuf: Buffer;
  private readonly valueBuf: Buffer;
  /** Bytes per value as the kernel copies it: per-CPU maps repeat it 8-byte aligned per CPU. */
  private readonly valueStride: number;
  private readonly cpus: number;

  constructor(
    readonly spec: MapSpec<K, V>,
    readonly fd: number,
  ) {
    this.cpus = spec.perCpu ? libbpf.numPossibleCpus() : 1;
    this.valueStride = spec.perCpu ? Math.ceil(spec.value.size / 8) * 8 : spec.value.size;
    this.keyBuf = Buffer.alloc(spec.key.size);
    this.valueBuf = Buffer.alloc(this.valueStride * this.cpus);
  }

  get name(): string {
    return this.spec.name;
  }

  /** Verifies that the kernel's map has the key/value sizes the codecs expect. */
  checkLayout(): void {
    const info = libbpf.mapInfo(this.fd, this.name);
    if (info.keySize !== this.spec.key.size || info.valueSize !== this.spec.value.size) {
      throw new BpfError(`open map ${this.name}`, 22, null, {
        hint:
          `its key/value sizes are ${info.keySize}/${info.valueSize}, this vipr expects ` +
          `${this.spec.key.size}/${this.spec.value.size}; run 'vipr cleanup' and restart the agent`,
      });
    }
  }

  lookup(key: K): V | null {
    this.spec.key.encode(key, this.keyBuf);
    if (!libbpf.mapLookup(this.fd, this.keyBuf, this.valueBuf, this.name)) return null;
    return this.spec.value.decode(this.valueBuf);
  }

  /** Per-CPU maps: one value per possible CPU. */
  lookupPerCpu(key: K): V[] | null {
    this.spec.key.encode(key, this.keyBuf);
    if (!libbpf.mapLookup(this.fd, this.keyBuf, this.valueBuf, this.name)) return null;
    const out: V[] = [];
    for (let c = 0; c < this.cpus; c++) out.push(this.spec.value.decode(this.valueBuf, c * this.valueStride));
    return out;
  }

  update(key: K, value: V, flags = BPF_ANY): void {
    if (this.spec.perCpu) throw new Error(`${this.name} is per-CPU: use updatePerCpu`);
    this.spec.key.encode(key, this.keyBuf);
    this.spec.value.encode(value, this.valueBuf);
    libbpf.mapUpdate(this.fd, this.keyBuf, this.valueBuf, flags, this.name);
  }

  /** Sets the same value on every CPU (e.g. zeroing counters). */
  updatePerCpu(key: K, value: V): void {
    this.spec.key.encode(key, this.keyBuf);
    for (let c = 0; c < this.cpus; c++) this.spec.value.encode(value, this.valueBuf, c * this.valueStride);
    libbpf.mapUpdate(this.fd, this.keyBuf, this.valueBuf, BPF_ANY, this.name);
  }

  delete(key: K): boolean {
    this.spec.key.encode(key, this.keyBuf);
    return libbpf.mapDelete(this.fd, this.keyBuf, this.name);
  }

  /** Writes many entries with one bpf_map_update_batch per BATCH entries. */
  updateBatch(entries: ReadonlyArray<readonly [K, V]>): void {
    if (this.spec.perCpu) throw new Error(`${this.name} is per-CPU: batch updates are not used`);
    for (let start = 0; start < entries.length; start += BATCH) {
      const chunk = entries.slice(start, start + BATCH);
      const keys = Buffer.alloc(chunk.length * this.spec.key.size);
      const values = Buffer.alloc(chunk.length * this.spec.value.size);
      chunk.forEach(([k, v], i) => {
        this.spec.key.encode(k, keys, i * this.spec.key.size);
        this.spec.value.encode(v, values, i * this.spec.value.size);
      });
      libbpf.mapUpdateBatch(this.fd, keys, values, chunk.length, this.name);
    }
  }

  /** All keys, read before any is visited (safe against deletes while iterating). */
  keys(): K[] {
    const out: K[] = [];
    const next = Buffer.alloc(this.spec.key.size);
    let prev: Buffer | null = null;
    while (libbpf.mapNextKey(this.fd, prev, next, this.name)) {
      out.push(this.spec.key.decode(next));
      prev = Buffer.from(next);
    }
    return out;
  }

  /** All entries. Hash maps are read in batches; others key by key. */
  entries(): Array<[K, V]> {
    if (this.spec.perCpu) throw new Error(`${this.name} is per-CPU: use entriesPerCpu`);
    const out: Array<[K, V]> = [];
    try {
      return this.entriesBatched(out);
    } catch (err) {
      // Array maps and old kernels lack batch lookups: fall back to the key walk.
      if (!(err instanceof BpfError) || out.length > 0) throw err;
    }
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v !== null) out.push([k, v]);
    }
    return out;
  }

  private entriesBatched(out: Array<[K, V]>): Array<[K, V]> {
    const ks = this.spec.key.size;
    const vs = this.spec.value.size;
    const keys = Buffer.alloc(BATCH * ks);
    const values = Buffer.alloc(BATCH * vs);
    // Hash maps use a bucket cursor of 4 bytes; give room for any.
    let inBatch: Buffer | null = null;
    const outBatch = Buffer.alloc(Math.max(8, ks));
    for (;;) {
      const { count, done } = libbpf.mapLookupBatch(this.fd, inBatch, outBatch, keys, values, BATCH, this.name);
      for (let i = 0; i < count; i++) {
        out.push([this.spec.key.decode(keys, i * ks), this.spec.value.decode(values, i * vs)]);
      }
      if (done) return out;
      inBatch = Buffer.from(outBatch);
    }
  }

  entriesPerCpu(): Array<[K, V[]]> {
    const out: Array<[K, V[]]> = [];
    for (const k of this.keys()) {
      const v = this.lookupPerCpu(k);
      if (v !== null) out.push([k, v]);
    }
    return out;
  }

  close(): void {
    libbpf.closeFd(this.fd);
  }
}
