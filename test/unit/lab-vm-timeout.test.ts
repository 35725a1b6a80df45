/*
 * How long `vipr lab vm` lets the guest run by default: a quick run of every mode at 1,000
 * Services over 2 rounds takes 30-40 minutes under emulation, past the 40 minutes a quick run at
 * 1 Service is given, so the default grows with the rounds and the Service count.
 */
import { defaultTimeoutMinutes } from '../../src/lab/vm.js';

test('quick runs get 40 minutes for 2 rounds, 20 more per round, twice as long at 1,000 Services; full runs 4 hours', () => {
  expect(defaultTimeoutMinutes(true, undefined, undefined)).toBe(40);
  expect(defaultTimeoutMinutes(true, [1], 2)).toBe(40);
  expect(defaultTimeoutMinutes(true, [1], 1)).toBe(40);
  expect(defaultTimeoutMinutes(true, [1], 3)).toBe(60);
  expect(defaultTimeoutMinutes(true, [1000], 2)).toBe(80);
  expect(defaultTimeoutMinutes(true, [1, 1000], 3)).toBe(120);
  expect(defaultTimeoutMinutes(false, [1000], 3)).toBe(240);
});
