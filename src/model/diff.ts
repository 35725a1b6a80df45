/*
 * What changed between two desired states, by service key. Entries are compared by value, so a
 * rebuild that produced the same entry (a no-op update from the API server, a re-saved manifest)
 * is not a change and costs the dataplane nothing.
 */
import type { DesiredState, ServiceEntry } from './types.js';

export interface DesiredStateDiff {
  /** Keys only in `next`, sorted. */
  added: string[];
  /** Keys only in `prev`, sorted. */
  removed: string[];
  /** Keys in both whose entries differ, sorted. */
  changed: string[];
}

/**
 * Structural equality of plain data: primitives, arrays, plain objects, Maps and Sets (compared
 * in iteration order). Object key order does not matter; `undefined` properties count as absent.
 */
export function plainEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) || Array.isArray(b)) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) return false;
    return a.every((v, i) => plainEqual(v, b[i]));
  }
  if (a instanceof Map || b instanceof Map || a instanceof Set || b instanceof Set) {
    if (a.constructor !== b.constructor) return false;
    return plainEqual([...(a as Iterable<unknown>)], [...(b as Iterable<unknown>)]);
  }
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const ka = Object.keys(ra).filter((k) => ra[k] !== undefined);
  const kb = Object.keys(rb).filter((k) => rb[k] !== undefined);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(rb, k) && plainEqual(ra[k], rb[k]));
}

function byKey(state: DesiredState): Map<string, ServiceEntry> {
  return new Map(state.services.map((e) => [e.key, e]));
}

export function diffDesiredState(prev: DesiredState, next: DesiredState): DesiredStateDiff {
  const before = byKey(prev);
  const after = byKey(next);
  const added: string[] = [];
  const removed: string[] = [];
  const changed: string[] = [];
  for (const [key, entry] of after) {
    const old = before.get(key);
    if (old === undefined) added.push(key);
    else if (!plainEqual(old, entry)) changed.push(key);
  }
  for (const key of before.keys()) {
    if (!after.has(key)) removed.push(key);
  }
  return { added: added.sort(), removed: removed.sort(), changed: changed.sort() };
}
