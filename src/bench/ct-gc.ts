/*
 * The ct_gc metric of `vipr bench`: how long one conntrack GC pass takes, and the largest stall it
 * causes the agent's event loop, at 262,144 and 1,000,000 entries. A private pin dir holds a
 * datapath whose established-TCP map is sized to the count and filled with flows last seen at boot,
 * collected with 1-second timeouts: every entry is expired, the worst pass (every entry deleted). For comparison, the same table read in JavaScript with
 * batched lookups, as the agent's GC did before: that read alone blocks the loop for its whole
 * duration.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { LoadedDatapath, cleanupDatapath } from '../bpf/datapath.js';
import { CtGc } from '../bpf/ct-gc.js';
import { ctSizes } from '../bpf/conntrack.js';
import * as libbpf from '../bpf/libbpf.js';
import { CT_FORWARD, CT_REPLY, CtKey, CtValue, IPPROTO_TCP, type CtKeyT, type CtValueT } from '../bpf/layouts.js';
import type { BpfMap } from '../bpf/map.js';

export const CT_GC_SIZES = [262_144, 1_000_000] as const;

export interface CtGcSample {
  metric: 'ct_gc';
  /** Entries in the map when the pass started (two per flow). */
  entries: number;
  /** The in-kernel pass (the iterator read from libuv's thread pool). */
  passMs: number;
  maxStallMs: number;
  deleted: number;
  kept: number;
  /**
   * What a second pass deleted: entries the first skipped (the kernel's hash iterator may step past
   * an entry next to one deleted under it), and what it left (0: the table is empty).
   */
  secondPassDeleted: number;
  secondPassKept: number;
  /** The same table read in JavaScript (batched lookups, on the event loop), for comparison. */
  jsReadMs: number;
  jsReadMaxStallMs: number;
}


/**
 * Fills a conntrack map with `entries` entries: flows of a forward and a reply entry, all last seen
 * at `lastSeenNs` (bpf_ktime_get_ns()'s clock). Entries are encoded once through the codecs, then
 * only the client address and port are patched, so filling leaves no garbage for V8 to collect
 * while the pass is measured.
 */
export function fillConntrack(map: BpfMap<CtKeyT, CtValueT>, entries: number, lastSeenNs: bigint): void {
  const base = { created_ns: lastSeenNs, last_seen_ns: lastSeenNs, flags: 0, tcp_flags: 0x10, snat_addr: '0.0.0.0', snat_port: 0, svc_id: 1, backend_id: 1 };
  const fwdKey = CtKey.encode({ saddr: '0.0.0.0', daddr: '10.96.0.1', sport: 0, dport: 80, proto: IPPROTO_TCP, dir: CT_FORWARD });
  const repKey = CtKey.encode({ saddr: '10.244.1.10', daddr: '0.0.0.0', sport: 8080, dport: 0, proto: IPPROTO_TCP, dir: CT_REPLY });
  const fwdVal = CtValue.encode({ ...base, nat_addr: '10.244.1.10', nat_port: 8080 });
  const repVal = CtValue.encode({ ...base, nat_addr: '10.96.0.1', nat_port: 80 });
  const ks = CtKey.size;
  const vs = CtValue.size;
  const CHUNK = 65536;
  const keys = Buffer.alloc(CHUNK * ks);
  const values = Buffer.alloc(CHUNK * vs);
  let n = 0;
  const flush = (): void => {
    if (n > 0) libbpf.mapUpdateBatch(map.fd, keys, values, n, map.name);
    n = 0;
  };
  for (let i = 0; i < entries / 2; i++) {
    const client = ((172 << 24) | (16 << 16) | (i >>> 4)) >>> 0;
    const sport = 1024 + (i & 15);
    fwdKey.copy(keys, n * ks);
    keys.writeUInt32BE(client, n * ks); // saddr
    keys.writeUInt16BE(sport, n * ks + 8); // sport
    fwdVal.copy(values, n * vs);
    n++;
    repKey.copy(keys, n * ks);
    keys.writeUInt32BE(client, n * ks + 4); // daddr
    keys.writeUInt16BE(sport, n * ks + 10); // dport
    repVal.copy(values, n * vs);
    n++;
    if (n === CHUNK) flush();
  }
  flush();
}

/** Runs `work` with the event loop watched; returns its duration and the loop's largest stall, ms. */
export async function watchLoop<T>(work: () => Promise<T> | T): Promise<{ ms: number; maxStallMs: number; value: T }> {
  const h = monitorEventLoopDelay({ resolution: 1 });
  // The histogram's first tick only sets its baseline: let it tick before the work starts.
  h.enable();
  await new Promise((r) => setTimeout(r, 20));
  const started = performance.now();
  const value = await work();
  const ms = performance.now() - started;
  await new Promise((r) => setTimeout(r, 20));
  h.disable();
  return { ms, maxStallMs: h.max / 1e6, value };
}

/** One ct_gc measurement at `entries` entries, in pin dir `pinDir` (removed afterwards). */
export async function measureCtGc(entries: number, pinDir: string): Promise<CtGcSample> {
  cleanupDatapath(pinDir);
  const dp = LoadedDatapath.load(pinDir, undefined, { ctSizes: ctSizes({ tcp: entries, udp: 1024 }) });
  let gc: CtGc | null = null;
  try {
    const map = dp.maps.ctTcp;
    fillConntrack(map, entries, 1n);
    gc = CtGc.load(pinDir, { syn: 1, established: 1, closing: 1, udp: 1 });
    const pass = await watchLoop(() => gc!.pass());
    const second = await gc.pass();
    fillConntrack(map, entries, 1n);
    const js = await watchLoop(() => map.entries().length);
    return {
      metric: 'ct_gc', entries: js.value, passMs: pass.ms, maxStallMs: pass.maxStallMs, deleted: pass.value.ctTcp.deleted, kept: pass.value.ctTcp.kept, secondPassDeleted: second.ctTcp.deleted, secondPassKept: second.ctTcp.kept,
      jsReadMs: js.ms, jsReadMaxStallMs: js.maxStallMs,
    };
  } finally {
    gc?.close();
    dp.close();
    cleanupDatapath(pinDir);
  }
}

export function formatCtGc(samples: CtGcSample[]): string {
  const lines = [
    'conntrack GC (ct_gc): one pass over expired flows, in the kernel (map iterator read from the thread pool)',
    `  ${'entries'.padStart(9)}  ${'pass ms'.padStart(9)}  ${'max stall ms'.padStart(12)}  ${'deleted'.padStart(9)}   | JS batched read: ${'ms'.padStart(7)}  ${'stall ms'.padStart(8)}`,
  ];
  for (const s of samples) {
    lines.push(`  ${String(s.entries).padStart(9)}  ${s.passMs.toFixed(1).padStart(9)}  ${s.maxStallMs.toFixed(1).padStart(12)}  ${String(s.deleted).padStart(9)}   |                  ${s.jsReadMs.toFixed(0).padStart(7)}  ${s.jsReadMaxStallMs.toFixed(0).padStart(8)}`);
  }
  return `${lines.join('\n')}\n`;
}
