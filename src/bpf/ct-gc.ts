/*
 * Conntrack garbage collection without the event loop: bpf/ct_gc.bpf.c holds one map-element
 * iterator per conntrack map (IPv4's three and IPv6's three), which deletes expired flows in the kernel. A pass creates an
 * iterator per map and reads it with fs.read, which runs on libuv's thread pool: the kernel walks
 * the map while the agent keeps answering /healthz. The reads return the iterator's reports
 * (struct vipr_ct_gc_report); the last one of a map is its result: entries seen, entries deleted.
 */
import { close, read } from 'node:fs';
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import * as libbpf from './libbpf.js';
import { CT_ROLES, CtGcReport, CtTimeoutsLayout, MAPS, type CtRole } from './layouts.js';
import { DEFAULT_CT_TIMEOUTS, type CtTimeouts } from './conntrack.js';
import { ConfigError } from '../errors.js';
import { ctGcObjectPath } from '../paths.js';

const PROGRAMS: Record<CtRole, string> = {
  ctTcp: 'vipr_ct_gc_tcp', ctTcpSyn: 'vipr_ct_gc_tcp_syn', ctUdp: 'vipr_ct_gc_udp',
  ctTcp6: 'vipr_ct6_gc_tcp', ctTcpSyn6: 'vipr_ct6_gc_tcp_syn', ctUdp6: 'vipr_ct6_gc_udp',
};

export interface CtGcResult {
  /** Entries the pass visited (a reply entry deleted with its flow before its turn is not). */
  seen: number;
  deleted: number;
  /** Entries left: the map's size after the pass, give or take the flows created meanwhile. */
  kept: number;
}

export type CtGcPass = Record<CtRole, CtGcResult>;

function readAsync(fd: number, buf: Buffer): Promise<number> {
  return new Promise((resolve, reject) => read(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))));
}

function closeAsync(fd: number): Promise<void> {
  return new Promise((resolve) => close(fd, () => resolve()));
}

export class CtGc {
  private running: Promise<CtGcPass> | null = null;

  private constructor(
    private readonly obj: libbpf.ObjectHandle,
    private readonly links: Record<CtRole, number>,
  ) {}

  /** Loads the iterators against the conntrack maps pinned in `pinDir` and attaches one per map. */
  static load(pinDir: string, timeouts: CtTimeouts = DEFAULT_CT_TIMEOUTS, objectPath = ctGcObjectPath()): CtGc {
    if (!existsSync(objectPath)) throw new ConfigError(`BPF object ${objectPath} is missing: run 'make build'`);
    const obj = libbpf.openObject(objectPath, pinDir);
    const links: Partial<Record<CtRole, number>> = {};
    try {
      const ns = (s: number): bigint => BigInt(Math.round(s * 1e9));
      libbpf.mapSetInitialValue(
        libbpf.findMap(obj, '.rodata'),
        CtTimeoutsLayout.encode({ syn_ns: ns(timeouts.syn), established_ns: ns(timeouts.established), closing_ns: ns(timeouts.closing), udp_ns: ns(timeouts.udp) }),
        'ct_gc .rodata',
      );
      libbpf.loadObject(obj, basename(objectPath));
      for (const role of CT_ROLES) {
        const prog = libbpf.programFd(libbpf.findProgram(obj, PROGRAMS[role]), PROGRAMS[role]);
        const map = libbpf.mapFd(libbpf.findMap(obj, MAPS[role].name), MAPS[role].name);
        links[role] = libbpf.linkCreateMapIter(prog, map, `GC iterator of ${MAPS[role].name}`);
      }
      return new CtGc(obj, links as Record<CtRole, number>);
    } catch (err) {
      for (const fd of Object.values(links)) libbpf.closeFd(fd);
      libbpf.closeObject(obj);
      throw err;
    }
  }

  /** One pass over every conntrack map; a pass asked for while one runs joins it. */
  pass(): Promise<CtGcPass> {
    if (this.running === null) {
      this.running = this.runPass().finally(() => {
        this.running = null;
      });
    }
    return this.running;
  }

  private async runPass(): Promise<CtGcPass> {
    const out = {} as CtGcPass;
    for (const role of CT_ROLES) out[role] = await this.passOver(role);
    return out;
  }

  private async passOver(role: CtRole): Promise<CtGcResult> {
    const fd = libbpf.iterCreate(this.links[role], `GC iterator of ${MAPS[role].name}`);
    const size = CtGcReport.size;
    // Each read() walks the map until this much is written (a report per VIPR_CT_GC_REPORT_EVERY
    // entries): ~4,000 entries per read, so no read keeps a CPU in the kernel for long.
    const buf = Buffer.alloc(64 * size);
    const last = Buffer.alloc(size);
    let have = 0;
    try {
      for (;;) {
        const n = await readAsync(fd, buf);
        if (n === 0) break;
        // Reports are whole records: keep the last complete one.
        const end = n - (n % size);
        if (end >= size) {
          buf.copy(last, 0, end - size, end);
          have = size;
        }
      }
    } finally {
      await closeAsync(fd);
    }
    if (have === 0) return { seen: 0, deleted: 0, kept: 0 };
    const r = CtGcReport.decode(last);
    return { seen: Number(r.seen), deleted: Number(r.deleted), kept: Number(r.kept) };
  }

  close(): void {
    for (const fd of Object.values(this.links)) libbpf.closeFd(fd);
    libbpf.closeObject(this.obj);
  }
}

/** A map this full is worth a warning (logged once per crossing). */
export const CT_PRESSURE_WARN = 0.9;
/** ... and it is re-armed once the map is back below this. */
export const CT_PRESSURE_REARM = 0.8;

export interface CtPressureChange {
  map: string;
  entries: number;
  maxEntries: number;
  /** true: the map just passed CT_PRESSURE_WARN; false: it just fell back under CT_PRESSURE_REARM. */
  over: boolean;
}

/** Follows each conntrack map's fill across GC passes and says when one crosses the thresholds. */
export class CtPressure {
  private readonly over = new Set<CtRole>();

  update(pass: CtGcPass, maxEntries: Record<CtRole, number>): CtPressureChange[] {
    const changes: CtPressureChange[] = [];
    for (const role of CT_ROLES) {
      const entries = pass[role].kept;
      const ratio = entries / maxEntries[role];
      const change = { map: MAPS[role].name, entries, maxEntries: maxEntries[role] };
      if (ratio >= CT_PRESSURE_WARN && !this.over.has(role)) {
        this.over.add(role);
        changes.push({ ...change, over: true });
      } else if (ratio < CT_PRESSURE_REARM && this.over.has(role)) {
        this.over.delete(role);
        changes.push({ ...change, over: false });
      }
    }
    return changes;
  }
}
