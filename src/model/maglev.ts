/*
 * Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of M slots (M prime)
 * that each backend fills in the order of its own permutation of the slots. Every backend gets
 * M/N slots give or take one, and when a backend goes, only about 1/N of the slots change owner,
 * so only about 1/N of the flows move.
 */
import { createHash } from 'node:crypto';

/**
 * Table sizes: primes roughly doubling, Cilium's list (--bpf-lb-maglev-table-size) up to the
 * largest that the datapath's 16-bit slot count can hold (Cilium's 131071 cannot). Slot positions
 * depend on the size, so changing it moves almost every flow: the BPF dataplane keeps a
 * service's size while it still fits.
 */
export const MAGLEV_SIZES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521] as const;

/** The node's default cap on a table (--maglev-table-size), Cilium's default. */
export const DEFAULT_MAGLEV_MAX_SIZE = 16381;

/**
 * The table size for `backends` backends: the first of MAGLEV_SIZES >= 100 × backends (about 1 %
 * imbalance at most), but never above `maxSize`; with more backends than that allows, fewer slots
 * per backend. Null when `maxSize` cannot hold the backends at all (Maglev needs more slots than
 * backends; the caller falls back to another scheduler).
 */
export function maglevTableSize(backends: number, maxSize: number = DEFAULT_MAGLEV_MAX_SIZE): number | null {
  const want = 100 * Math.max(1, backends);
  const size = Math.min(MAGLEV_SIZES.find((m) => m >= want) ?? maxSize, maxSize);
  return size > backends ? size : null;
}

function hash64(text: string, seed: string): bigint {
  return createHash('sha256').update(seed).update(text).digest().readBigUInt64BE(0);
}

/**
 * The lookup table: for each slot, the index (into `names`) of its backend. `names` identify
 * backends stably (e.g. `ip:port`); their order does not matter.
 */
export function maglevTable(names: readonly string[], size: number): number[] {
  const n = names.length;
  if (n === 0) return [];
  if (n >= size) throw new RangeError(`maglev: ${n} backends need a table larger than ${size} slots`);
  const m = BigInt(size);
  // Sorted so that the table does not depend on the order endpoints were listed in.
  const order = names.map((name, i) => ({ name, i })).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const offset = order.map(({ name }) => Number(hash64(name, 'maglev-offset') % m));
  const skip = order.map(({ name }) => Number(hash64(name, 'maglev-skip') % (m - 1n)) + 1);
  const next = new Array<number>(n).fill(0);
  const table = new Array<number>(size).fill(-1);
  let filled = 0;
  for (;;) {
    for (let b = 0; b < n; b++) {
      let c = (offset[b]! + next[b]! * skip[b]!) % size;
      while (table[c] !== -1) {
        next[b]!++;
        c = (offset[b]! + next[b]! * skip[b]!) % size;
      }
      table[c] = order[b]!.i;
      next[b]!++;
      if (++filled === size) return table;
    }
  }
}
