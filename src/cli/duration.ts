import { ConfigError } from '../errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses a Go-style duration (`500ms`, `1s`, `30s`, `1m`, `1m30s`) into milliseconds. */
export function parseDuration(option: string, value: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  for (const m of value.matchAll(re)) {
    if (m.index !== consumed) break;
    total += Number(m[1]) * (UNITS[m[2] as string] ?? 0);
    consumed += m[0].length;
  }
  if (value.length === 0 || consumed !== value.length) {
    throw new ConfigError(`--${option} ${value}: not a duration; use e.g. 500ms, 1s, 30s, 1m`);
  }
  return total;
}
