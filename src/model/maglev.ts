/*
 * Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of M slots (M prime)
 * that each backend fills in the order of its own permutation of the slots. Every backend gets
 * M/N slots give or take one, and when a backend goes, only about 1/N of the slots change owner,
 * so only about 1/N of the flows move.
 */
import { createHash } from 'node:crypto';

/**
 * Table sizes: primes roughly doubling. Slot positions depend on the size, so changing it moves
 * almost every flow: the BPF dataplane keeps a service's size while it still fits.
 */
export const MAGLEV_SIZES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071] as const;

/** The table size for `backends` backends: the first of MAGLEV_SIZES >= 100 × backends. */
export function maglevTableSize(backends: number): number {
  const want = 100 * Math.max(1, backends);
  const size = MAGLEV_SIZES.find((m) => m >= want);
  if (size === undefined) throw new RangeError(`maglev: ${backends} backends exceed the largest table (${MAGLEV_SIZES.at(-1)} slots)`);
  return size;
}

function hash64(text: string, seed: string): bigint {
  return createHash('sha256').update(seed).update(text).digest().readBigUInt64BE(0);
}

/**
 * The lookup table: for each slot, the index (into `names`) of its backend. `names` identify
 * backends stably (e.g. `ip:port`); their order does not matter.
 */
export function maglevTable(names: readonly string[], size = maglevTableSize(names.length)): number[] {
  const n = names.length;
  if (n === 0) return [];
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
