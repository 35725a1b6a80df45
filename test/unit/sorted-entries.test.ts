/*
 * The agent's entries in key order across partial syncs: replacing a few Services' entries by
 * binary search must give exactly what sorting everything again gives.
 */
import fc from 'fast-check';
import { SortedEntries, compareEntries } from '../../src/model/sorted-entries.js';
import type { ServiceEntry } from '../../src/model/types.js';
import { servicePortOf } from '../helpers/objects.js';

function entry(key: string, tag = 0): ServiceEntry {
  return { key, service: servicePortOf({ port: tag + 1 }), endpoints: [], selection: { clusterEndpoints: [], localEndpoints: [], allReachableEndpoints: [], hasAnyEndpoints: false } };
}

test('replace() keeps the same order as a full sort, through any sequence of changes', () => {
  const name = fc.constantFrom('a/web', 'a/web-2', 'b/api', 'a/web:http', 'z/x', 'a/b', 'a/b:z', 'a/b-c:y', 'm/n:dns');
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.uniqueArray(name, { maxLength: 4 }), fc.nat(3)), { maxLength: 30 }), (steps) => {
      const sorted = new SortedEntries();
      let model = new Map<string, ServiceEntry>();
      sorted.reset([]);
      for (const [keys, tag] of steps) {
        // Each step replaces the entries named: some removed (tag 0), others added or changed.
        const before = keys.map((k) => model.get(k)).filter((e): e is ServiceEntry => e !== undefined);
        const after = tag === 0 ? [] : keys.map((k) => entry(k, tag));
        sorted.replace(before, after);
        model = new Map(model);
        for (const k of keys) model.delete(k);
        for (const e of after) model.set(e.key, e);
        expect(sorted.snapshot()).toEqual([...model.values()].sort(compareEntries));
      }
    }),
  );
});

test('snapshot() is a copy: later changes do not reach a state already handed out', () => {
  const sorted = new SortedEntries();
  sorted.reset([entry('b/x'), entry('a/y')]);
  const first = sorted.snapshot();
  sorted.replace([], [entry('a/a')]);
  expect(first.map((e) => e.key)).toEqual(['a/y', 'b/x']);
  expect(sorted.snapshot().map((e) => e.key)).toEqual(['a/a', 'a/y', 'b/x']);
});
