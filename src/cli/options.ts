/* Option parsing shared by the commands: node's parseArgs with vipr's error style. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../errors.js';

export function parseOptions<T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  argv: string[],
  options: T,
  allowPositionals = false,
): ReturnType<typeof parseArgs<{ args: string[]; options: T; allowPositionals: boolean; strict: true }>> {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    throw new ConfigError(`vipr ${command}: ${(err as Error).message}; see 'vipr ${command} --help'`);
  }
}

/** Parses a whole number within [min, max], naming the option in the error. */
export function intOption(name: string, value: string | undefined, def: number, min: number, max: number): number {
  if (value === undefined) return def;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`--${name} ${value}: expected a whole number from ${min} to ${max}`);
  }
  return n;
}
