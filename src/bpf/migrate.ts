/*
 * Upgrades that lose no connection: state pinned by a previous agent is carried into maps of a
 * new layout (a map renamed `_v1` → `_v2`, or split) or of a new size (max_entries changed by an
 * option or by the compiled-in default), instead of being dropped or refusing the load.
 *
 * The sequence, around LoadedDatapath.load and the attach in `vipr run`:
 *   plan       (before the object is opened) finds what needs migrating: a pin named by
 *              LAYOUT_MIGRATIONS, or a pinned map whose size differs from the one wanted. A
 *              resized map's pin is moved aside (`vipr_resizing_<what>_v<n>`), so the object
 *              creates and pins a new map under the name its programs use. The old programs keep
 *              running on the old maps: they hold them by reference, not by path.
 *   copyAll    (after load, before the reconciler restores its ids from the maps) copies every
 *              entry, routed by the migration for a layout change, as is for a resize.
 *   refresh    (just before the programs are swapped) copies again what the old programs wrote
 *              meanwhile into maps they write (conntrack, affinity, ...), overwriting.
 *   finish     (after every link was updated to the new programs) copies the delta: entries the
 *              old programs created between the refresh and the swap, each only where the new
 *              programs have not written the key already (BPF_NOEXIST); then the old pins go.
 * A flow whose first packet the old programs handled in the milliseconds between refresh and
 * swap and whose next packet reaches the new programs before finish copies it is the one case
 * left: for TCP that packet is the SYN-ACK or the client's next segment, and the client's SYN
 * retransmission (1 s later) finds the flow copied by then, so the connection is delayed, not lost.
 *
 * Crash safety: the old pins stay until finish. An agent that dies midway leaves them, and the
 * next one migrates again, in "top-up" mode: maps the previous attempt created already keep what
 * they hold (the new programs may have written them) and only missing keys are added.
 *
 * Conntrack flows keep their two entries together: a flow's forward and reply entries are routed
 * to the same map, and an entry moved to another map by a later pass is deleted from the first.
 *
 * Counters (vipr_stats_v1 → vipr_stats_v2) are not entries to copy but sums to continue: each pass
 * adds to the new map what the old one counted since the previous pass, CPU by CPU, so a counter
 * neither restarts from zero nor counts anything twice. In top-up mode they are not carried: the
 * new map has them already (or, a pin left by an agent that did not migrate, has counted on its
 * own since, and adding the old sums now would show as a burst). A map retired without a successor
 * (no roles, a route that returns nothing) has its pin removed at finish like the others.
 */
import { existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as libbpf from './libbpf.js';
import {
  CT_F_SEEN_REPLY, CT_FORWARD, CT_REPLY, CtKey, CtValue, IPPROTO_TCP, MAPS, STAT_NAMES, StatValue, U32,
  type CtRole, type MapRole,
} from './layouts.js';
import { BpfError, ConfigError } from '../errors.js';
import { componentLogger } from '../log.js';

const log = componentLogger('migrate');

/** One entry as the kernel stores it. */
export interface RawEntry {
  key: Buffer;
  value: Buffer;
}

/** An entry of a previous layout, converted, with the current map it belongs in. */
export interface RoutedEntry extends RawEntry {
  role: MapRole;
}

/** Which side writes a map: the agent (services, backends...) or the programs (conntrack...). */
type Writer = 'agent' | 'datapath';

/*
 * enum bpf_map_type: what a previous layout's pin must be, and the kinds a resize copies (arrays
 * and per-CPU maps keep their pinned size).
 */
const BPF_MAP_TYPE_HASH = 1;
const BPF_MAP_TYPE_PERCPU_HASH = 5;
const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
const BPF_MAP_TYPE_LRU_HASH = 9;
const BPF_MAP_TYPE_LRU_PERCPU_HASH = 10;
const BPF_MAP_TYPE_LPM_TRIE = 11;
const RESIZABLE = new Set([BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LPM_TRIE]);
const PER_CPU = new Set([BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH]);

/** How a pinned map of a previous layout becomes maps of the current one. */
export interface LayoutMigration {
  /** The pinned name of the previous layout's map. */
  from: string;
  /** enum bpf_map_type it was created with (a per-CPU one: values read and written for every CPU). */
  mapType: number;
  keySize: number;
  /** For a per-CPU map, one CPU's value. */
  valueSize: number;
  /** The current maps it feeds; none for a map retired without a successor. */
  roles: readonly MapRole[];
  writtenBy: Writer;
  /**
   * 'entries': a key is one thing (a flow, an affinity), copied as the opening comment says.
   * 'counters': values are u64 counters the programs add to: every pass adds the increase since
   * the previous one (and none in top-up mode), see the opening comment.
   */
  carry: 'entries' | 'counters';
  /** Converts every entry (the whole map at once: entries may depend on each other). */
  route(entries: readonly RawEntry[]): RoutedEntry[];
}

const TCP_FLAG_ACK = 0x10;

/* Offsets of the fields routing reads, from the codecs (checked against BTF): entries stay raw. */
const at = (codec: { fields: ReadonlyArray<{ name: string; offset: number }> }, field: string): number => {
  const f = codec.fields.find((x) => x.name === field);
  if (f === undefined) throw new Error(`no field ${field}`);
  return f.offset;
};
const K = { saddr: at(CtKey, 'saddr'), daddr: at(CtKey, 'daddr'), sport: at(CtKey, 'sport'), dport: at(CtKey, 'dport'), proto: at(CtKey, 'proto'), dir: at(CtKey, 'dir') };
const V = { natAddr: at(CtValue, 'nat_addr'), natPort: at(CtValue, 'nat_port'), flags: at(CtValue, 'flags'), tcpFlags: at(CtValue, 'tcp_flags'), snatAddr: at(CtValue, 'snat_addr'), snatPort: at(CtValue, 'snat_port') };

/** replyKeyOf (src/bpf/conntrack.ts) on raw bytes: a flow's reply key from its forward entry. */
function rawReplyKey(key: Buffer, value: Buffer): Buffer {
  const rep = Buffer.alloc(CtKey.size);
  const snat = value.readUInt32BE(V.snatAddr) !== 0;
  value.copy(rep, K.saddr, V.natAddr, V.natAddr + 4);
  value.copy(rep, K.sport, V.natPort, V.natPort + 2);
  if (snat) {
    value.copy(rep, K.daddr, V.snatAddr, V.snatAddr + 4);
    value.copy(rep, K.dport, V.snatPort, V.snatPort + 2);
  } else {
    key.copy(rep, K.daddr, K.saddr, K.saddr + 4);
    key.copy(rep, K.dport, K.sport, K.sport + 2);
  }
  rep[K.proto] = key[K.proto] as number;
  rep[K.dir] = CT_REPLY;
  return rep;
}

/** A map key as a string, for sets and maps of keys. */
export const keyId = (key: Buffer): string => key.toString('latin1');

/**
 * vipr_conntrack_v1 (one LRU for every flow, before 592a603) → vipr_ct_tcp_v1 (established TCP),
 * vipr_ct_tcp_syn_v1 (half-open TCP), vipr_ct_udp_v1 (UDP). Key and value layouts did not change.
 * A TCP flow is established when the backend answered (its reply entry has SEEN_REPLY) and the
 * client acknowledged (ACK among the forward entry's flags): what promotion asks of a live flow.
 * Entries without their other half (an LRU may evict one) go where new flows start.
 */
export function routeConntrackV1(entries: readonly RawEntry[]): RoutedEntry[] {
  const byKey = new Map(entries.map((e) => [keyId(e.key), e]));
  const out: RoutedEntry[] = [];
  const paired = new Set<string>();
  const startMap = (proto: number | undefined): CtRole => (proto === IPPROTO_TCP ? 'ctTcpSyn' : 'ctUdp');
  for (const e of entries) {
    if (e.key[K.dir] !== CT_FORWARD) continue;
    const repId = keyId(rawReplyKey(e.key, e.value));
    const rep = byKey.get(repId);
    let role: CtRole = startMap(e.key[K.proto]);
    if (e.key[K.proto] === IPPROTO_TCP && rep !== undefined &&
        ((rep.value[V.flags] as number) & CT_F_SEEN_REPLY) !== 0 && ((e.value[V.tcpFlags] as number) & TCP_FLAG_ACK) !== 0) {
      role = 'ctTcp';
    }
    out.push({ key: e.key, value: e.value, role });
    if (rep !== undefined) {
      out.push({ key: rep.key, value: rep.value, role });
      paired.add(repId);
    }
  }
  for (const e of entries) {
    if (e.key[K.dir] === CT_REPLY && !paired.has(keyId(e.key))) out.push({ key: e.key, value: e.value, role: startMap(e.key[K.proto]) });
  }
  return out;
}

/**
 * vipr_stats_v1 (per-CPU array of VIPR_STAT_MAX slots, before b715cb1: 14, then 23) →
 * vipr_stats_v2 (64 slots), slot for slot: enum vipr_stat has only grown at its end since its
 * first commit (bb5a287), so an index names the same counter in both. Slots the current enum does
 * not name (none today) are left behind.
 */
export function routeStatsV1(entries: readonly RawEntry[]): RoutedEntry[] {
  return entries.filter((e) => e.key.readUInt32LE(0) < STAT_NAMES.length).map((e) => ({ ...e, role: 'stats' }));
}

/** Every previous layout this agent reads, newest last. */
export const LAYOUT_MIGRATIONS: readonly LayoutMigration[] = [
  {
    from: 'vipr_stats_v1',
    mapType: BPF_MAP_TYPE_PERCPU_ARRAY,
    keySize: U32.size,
    valueSize: StatValue.size,
    roles: ['stats'],
    writtenBy: 'datapath',
    carry: 'counters',
    route: routeStatsV1,
  },
  {
    from: 'vipr_conntrack_v1',
    mapType: BPF_MAP_TYPE_LRU_HASH,
    keySize: CtKey.size,
    valueSize: CtValue.size,
    roles: ['ctTcp', 'ctTcpSyn', 'ctUdp'],
    writtenBy: 'datapath',
    carry: 'entries',
    route: routeConntrackV1,
  },
];

/** Maps the programs write (the others only the agent writes, so one copy at load is enough). */
const DATAPATH_WRITTEN: ReadonlySet<MapRole> = new Set<MapRole>([
  'ctTcp', 'ctTcpSyn', 'ctUdp', 'affinity', 'backendConns', 'sched', 'sockRev', 'sockAffinity',
  'ctTcp6', 'ctTcpSyn6', 'ctUdp6', 'affinity6', 'sockRev6',
]);

const EEXIST = 17;
const BPF_NOEXIST = 1;
const BATCH = 4096;

/** Where a resize parks the old map's pin while its entries are copied. */
export function resizingPinName(name: string): string {
  return name.replace(/^vipr_/, 'vipr_resizing_');
}

/** Reads every entry of a map: in batches where the kernel has them (hash maps), else key by key. */
export function readRawEntries(fd: number, keySize: number, valueSize: number, what: string): RawEntry[] {
  const out: RawEntry[] = [];
  const outBatch = Buffer.alloc(Math.max(8, keySize));
  let inBatch: Buffer | null = null;
  try {
    for (;;) {
      // A fresh buffer per batch: the entries are views into it, not copies.
      const keys = Buffer.alloc(BATCH * keySize);
      const values = Buffer.alloc(BATCH * valueSize);
      const { count, done } = libbpf.mapLookupBatch(fd, inBatch, outBatch, keys, values, BATCH, what);
      for (let i = 0; i < count; i++) {
        out.push({ key: keys.subarray(i * keySize, (i + 1) * keySize), value: values.subarray(i * valueSize, (i + 1) * valueSize) });
      }
      if (done) return out;
      inBatch = Buffer.from(outBatch);
    }
  } catch (err) {
    // LPM tries have no batch lookup: walk the keys (only before the first batch succeeded).
    if (!(err instanceof BpfError) || out.length > 0) throw err;
  }
  const next = Buffer.alloc(keySize);
  let prev: Buffer | null = null;
  while (libbpf.mapNextKey(fd, prev, next, what)) {
    const value = Buffer.alloc(valueSize);
    const key = Buffer.from(next);
    if (libbpf.mapLookup(fd, key, value, what)) out.push({ key, value });
    prev = key;
  }
  return out;
}

/** Writes entries, overwriting (BPF_ANY), in batches; maps without batch updates key by key. */
function writeAll(fd: number, entries: readonly RawEntry[], keySize: number, valueSize: number, what: string): void {
  for (let start = 0; start < entries.length; start += BATCH) {
    const chunk = entries.slice(start, start + BATCH);
    const keys = Buffer.alloc(chunk.length * keySize);
    const values = Buffer.alloc(chunk.length * valueSize);
    chunk.forEach((e, i) => {
      e.key.copy(keys, i * keySize);
      e.value.copy(values, i * valueSize);
    });
    try {
      libbpf.mapUpdateBatch(fd, keys, values, chunk.length, what);
    } catch (err) {
      if (!(err instanceof BpfError) || err.errno === 7 /* E2BIG */ || err.errno === 28 /* ENOSPC */) throw err;
      for (const e of chunk) libbpf.mapUpdate(fd, e.key, e.value, 0, what);
    }
  }
}

/** Writes an entry unless its key is there already; true when written. */
function writeIfAbsent(fd: number, e: RawEntry, what: string): boolean {
  try {
    libbpf.mapUpdate(fd, e.key, e.value, BPF_NOEXIST, what);
    return true;
  } catch (err) {
    if (err instanceof BpfError && err.errno === EEXIST) return false;
    throw err;
  }
}

/** A pinned map whose entries move into maps of the new object. */
interface Source {
  /** The old map's pin now: its own name (layout change) or the resizing name (resize). */
  pin: string;
  fd: number;
  keySize: number;
  /** Bytes of one value as the kernel copies it: for a per-CPU map, every CPU's, 8-byte aligned. */
  valueSize: number;
  carry: LayoutMigration['carry'];
  /** Map names of the new object its entries go to, by role (a resize: the one map). */
  route: (entries: readonly RawEntry[]) => Array<RawEntry & { target: string }>;
  targets: readonly string[];
  writtenBy: Writer;
  /** A resize: the pin it had before being moved aside, to put it back if the load fails. */
  movedFrom: string | null;
  /**
   * 'fill': the targets are new, copies overwrite; 'top-up': an earlier, interrupted migration
   * made the targets already (the new programs may have written them): only missing keys.
   */
  mode: 'fill' | 'top-up';
  /** Key (keyId) → target map each entry was written to. */
  placed: Map<string, string>;
  /** Counters: key (keyId) → the old map's value the last pass carried up to. */
  carried: Map<string, Buffer>;
  what: string;
  copied: number;
  delta: number;
}

export interface MigrationPlanOptions {
  /** Sizes wanted for maps (by pinned name) instead of the object's compiled-in ones. */
  sizes: ReadonlyMap<string, number>;
  /** Maps that keep their pinned size when `sizes` asks none (the agent sizes them, not the object). */
  adopt: ReadonlySet<string>;
}

/** What `vipr run` carries from the load to the swap: see the file's opening comment. */
export class Migration {
  private targetFds = new Map<string, number>();

  private constructor(
    readonly pinDir: string,
    private readonly sources: Source[],
  ) {}

  /** What is migrated, one line each (for the log and tests). */
  describe(): string[] {
    return this.sources.map((s) => s.what);
  }

  /**
   * Finds what the object at `objectPath` cannot take over as pinned, and moves resized maps'
   * pins aside. Returns null when nothing needs migrating. Throws ConfigError, having changed
   * nothing, when a map would shrink below what it holds.
   */
  static plan(pinDir: string, objectPath: string, opts: MigrationPlanOptions): Migration | null {
    const declared = libbpf.declaredMaps(objectPath);
    const declaredNames = new Set(declared.map((m) => m.name));
    const sources: Source[] = [];
    const toMove: Array<{ from: string; to: string; source: Source }> = [];
    try {
      for (const m of LAYOUT_MIGRATIONS) {
        const pin = join(pinDir, m.from);
        // An object of that layout (a test build) uses the map as it is.
        if (declaredNames.has(m.from) || !existsSync(pin)) continue;
        const targets = m.roles.map((r) => MAPS[r].name);
        const fd = libbpf.objGet(pin);
        const mode = targets.some((t) => existsSync(join(pinDir, t))) ? 'top-up' : 'fill';
        const perCpu = PER_CPU.has(m.mapType);
        sources.push({
          pin, fd, keySize: m.keySize, valueSize: perCpu ? Math.ceil(m.valueSize / 8) * 8 * libbpf.numPossibleCpus() : m.valueSize,
          carry: m.carry, targets, writtenBy: m.writtenBy, movedFrom: null,
          route: (entries) => m.route(entries).map((e) => ({ key: e.key, value: e.value, target: MAPS[e.role].name })),
          mode, placed: new Map(), carried: new Map(), copied: 0, delta: 0,
          what: targets.length === 0 ? `${m.from} retired`
            : m.carry === 'counters' && mode === 'top-up' ? `${m.from} retired (${targets.join(', ')} counts already)`
            : `${m.from} → ${targets.join(', ')}`,
        });
        const info = libbpf.mapInfo(fd, m.from);
        if (info.type !== m.mapType || info.keySize !== m.keySize || info.valueSize !== m.valueSize) {
          throw new ConfigError(
            `${pin} is a map of type ${info.type} with key/value sizes ${info.keySize}/${info.valueSize}, not the type ${m.mapType} with ${m.keySize}/${m.valueSize} of the layout vipr migrates from: remove it ('vipr cleanup' drops tracked connections and counters)`,
          );
        }
      }
      for (const { name, maxEntries } of declared) {
        if (!opts.sizes.has(name) && opts.adopt.has(name)) continue;
        const want = opts.sizes.get(name) ?? maxEntries;
        const pin = join(pinDir, name);
        const aside = join(pinDir, resizingPinName(name));
        const role = (Object.keys(MAPS) as MapRole[]).find((r) => MAPS[r].name === name);
        const writtenBy: Writer = role !== undefined && DATAPATH_WRITTEN.has(role) ? 'datapath' : 'agent';
        if (existsSync(aside)) {
          // A resize that did not finish: its new map is pinned under `name` already.
          if (libbpf.pinnedMaxEntries(pin) !== null && libbpf.pinnedMaxEntries(pin) !== want) {
            throw new ConfigError(
              `an earlier resize of ${name} did not finish (${aside} is still pinned): start the agent with the size it asked for then (${libbpf.pinnedMaxEntries(pin)} entries), or run 'vipr cleanup' (drops tracked connections)`,
            );
          }
          sources.push(resizeSource(aside, name, null, 'top-up', writtenBy));
          continue;
        }
        const fd = openIfPinned(pin);
        if (fd === null) continue;
        let info: libbpf.MapInfo;
        try {
          info = libbpf.mapInfo(fd, name);
        } catch (err) {
          libbpf.closeFd(fd);
          throw err;
        }
        if (info.maxEntries === want || !RESIZABLE.has(info.type)) {
          libbpf.closeFd(fd);
          continue;
        }
        const source = { ...resizeSource(pin, name, fd, 'fill', writtenBy), what: `${name}: ${info.maxEntries} → ${want} entries` };
        sources.push(source);
        if (info.type !== BPF_MAP_TYPE_LRU_HASH) {
          const held = readRawEntries(fd, info.keySize, info.valueSize, name).length;
          if (held > want) {
            throw new ConfigError(`${name} holds ${held} entries and cannot shrink to ${want}: ask for at least ${held}`);
          }
        }
        toMove.push({ from: pin, to: aside, source });
      }
    } catch (err) {
      for (const s of sources) libbpf.closeFd(s.fd);
      throw err;
    }
    if (sources.length === 0) return null;
    // Only now, all checks passed: move the resized maps' pins aside.
    for (const m of toMove) {
      libbpf.objPin(m.source.fd, m.to);
      unlinkSync(m.from);
      m.source.pin = m.to;
      m.source.movedFrom = m.from;
    }
    const migration = new Migration(pinDir, sources);
    log.info({ pinDir, migrations: migration.describe() }, 'pinned maps to migrate');
    return migration;
  }

  /**
   * First copy, right after the new object was loaded (its maps pinned): `fdOf` gives the new
   * object's map fds by name.
   */
  copyAll(fdOf: (name: string) => number): void {
    for (const s of this.sources) for (const t of s.targets) this.targetFds.set(t, fdOf(t));
    for (const s of this.sources) this.pass(s, s.mode === 'fill' ? 'overwrite' : 'absent');
  }

  /** Just before the programs are swapped: what the old programs wrote since copyAll. */
  refresh(): void {
    for (const s of this.sources) if (s.writtenBy === 'datapath') this.pass(s, s.mode === 'fill' ? 'overwrite' : 'absent');
  }

  /** After the swap: the delta the old programs wrote since refresh, then the old pins go. */
  finish(): void {
    for (const s of this.sources) {
      if (s.writtenBy === 'datapath') s.delta += this.pass(s, 'absent', { onlyNew: true });
      unlinkSync(s.pin);
      libbpf.closeFd(s.fd);
      log.info({ migration: s.what, copied: s.copied, delta: s.delta }, 'migrated; old pin removed');
    }
    this.sources.length = 0;
  }

  /**
   * The load failed: resized maps' pins go back where they were (the old programs never left
   * them), and the new maps pinned in their place are dropped. Layout sources simply stay.
   */
  abort(): void {
    for (const s of this.sources) {
      if (s.movedFrom !== null) {
        if (existsSync(s.movedFrom)) unlinkSync(s.movedFrom);
        libbpf.objPin(s.fd, s.movedFrom);
        unlinkSync(s.pin);
      }
      libbpf.closeFd(s.fd);
    }
    this.sources.length = 0;
  }

  /**
   * Copies `s` into its targets. 'overwrite' writes every entry (BPF_ANY); 'absent' only keys the
   * target lacks. `onlyNew`: entries placed by an earlier pass are left to the new programs.
   * Returns how many entries were written.
   */
  private pass(s: Source, how: 'overwrite' | 'absent', opts: { onlyNew?: boolean } = {}): number {
    if (s.carry === 'counters') return s.mode === 'fill' ? this.addCounters(s) : 0;
    const routed = s.route(readRawEntries(s.fd, s.keySize, s.valueSize, s.pin));
    const byTarget = new Map<string, RawEntry[]>();
    let written = 0;
    for (const e of routed) {
      const id = keyId(e.key);
      const before = s.placed.get(id);
      if (opts.onlyNew && before !== undefined) continue;
      if (before !== undefined && before !== e.target) {
        // The flow moved (half-open → established): drop the entry where an earlier pass put it.
        libbpf.mapDelete(this.fdOf(before), e.key, before);
      }
      s.placed.set(id, e.target);
      if (how === 'absent') {
        if (writeIfAbsent(this.fdOf(e.target), e, e.target)) written++;
        continue;
      }
      let list = byTarget.get(e.target);
      if (list === undefined) byTarget.set(e.target, (list = []));
      list.push(e);
    }
    for (const [target, list] of byTarget) {
      writeAll(this.fdOf(target), list, s.keySize, s.valueSize, target);
      written += list.length;
    }
    s.copied = s.placed.size;
    return written;
  }

  /**
   * Adds to each target slot what the old map's slot counted since the last pass, lane by lane
   * (every u64 of every CPU). The target is read and written back: an increment the new programs
   * make on that CPU in between is lost (one counter, microseconds, after the swap only).
   * Returns how many slots changed.
   */
  private addCounters(s: Source): number {
    const now = Buffer.alloc(s.valueSize);
    let changed = 0;
    for (const e of s.route(readRawEntries(s.fd, s.keySize, s.valueSize, s.pin))) {
      const id = keyId(e.key);
      const before = s.carried.get(id);
      const fd = this.fdOf(e.target);
      // An array has every slot; a hash may lack the key (then it starts at zero).
      if (!libbpf.mapLookup(fd, e.key, now, e.target)) now.fill(0);
      let grew = false;
      for (let off = 0; off + 8 <= s.valueSize; off += 8) {
        const old = e.value.readBigUInt64LE(off);
        const last = before?.readBigUInt64LE(off) ?? 0n;
        // A counter below what was carried was reset: all it holds is new.
        const increase = old >= last ? old - last : old;
        if (increase === 0n) continue;
        now.writeBigUInt64LE(BigInt.asUintN(64, now.readBigUInt64LE(off) + increase), off);
        grew = true;
      }
      s.carried.set(id, Buffer.from(e.value));
      if (!grew) continue;
      libbpf.mapUpdate(fd, e.key, now, 0, e.target);
      changed++;
    }
    s.copied = s.carried.size;
    return changed;
  }

  private fdOf(name: string): number {
    const fd = this.targetFds.get(name);
    if (fd === undefined) throw new Error(`migration: no map ${name} in the new object`);
    return fd;
  }
}

function openIfPinned(pin: string): number | null {
  if (!existsSync(pin)) return null;
  return libbpf.objGet(pin);
}

function resizeSource(pin: string, name: string, fd: number | null, mode: Source['mode'], writtenBy: Writer): Source {
  const openFd = fd ?? libbpf.objGet(pin);
  const info = libbpf.mapInfo(openFd, name);
  return {
    pin, fd: openFd, keySize: info.keySize, valueSize: info.valueSize, carry: 'entries', targets: [name], writtenBy, movedFrom: null,
    route: (entries) => entries.map((e) => ({ ...e, target: name })),
    mode, placed: new Map(), carried: new Map(), what: `${name}: resized`, copied: 0, delta: 0,
  };
}
