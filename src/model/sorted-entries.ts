/*
 * The desired state's entries kept in key order across syncs: a partial sync replaces the
 * entries of a few Services by binary search instead of sorting every entry again, so its cost
 * follows the change, not the cluster (one change at 100,000 Services moves pointers, it does not
 * compare strings 1.7 million times).
 */
import type { ServiceEntry } from './types.js';

export function compareEntries(a: ServiceEntry, b: ServiceEntry): number {
  return a.key < b.key ? -1 : a.key > b.key ? 1 : 0;
}

export class SortedEntries {
  private entries: ServiceEntry[] = [];

  /** Index of the first entry whose key is not below `key`. */
  private lowerBound(key: string): number {
    let lo = 0;
    let hi = this.entries.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.entries[mid] as ServiceEntry).key < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Starts over from `all`, in any order. */
  reset(all: ServiceEntry[]): void {
    this.entries = [...all].sort(compareEntries);
  }

  /** Removes `before` (entries held now, by key) and adds `after`. */
  replace(before: readonly ServiceEntry[], after: readonly ServiceEntry[]): void {
    for (const e of before) {
      const i = this.lowerBound(e.key);
      if (this.entries[i]?.key === e.key) this.entries.splice(i, 1);
    }
    for (const e of after) {
      const i = this.lowerBound(e.key);
      if (this.entries[i]?.key === e.key) this.entries[i] = e;
      else this.entries.splice(i, 0, e);
    }
  }

  /** A copy in key order (the caller may keep it). */
  snapshot(): ServiceEntry[] {
    return this.entries.slice();
  }
}
