/*
 * The lab's traffic programs (bench/rr.c, a load generator, and bench/responder.c): where they
 * are, and building them when `make build` has not (same flags as the Makefile rule). The
 * north-south generator (bench/xdp-flood.c) links libbpf and loads BPF objects: `make build` only. The bench and the VM lab both run them, so they live here,
 * below both.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';
import { ConfigError, ToolError } from '../errors.js';
import { run } from '../process/run.js';

export const BENCH_PROGRAMS = ['rr', 'responder'] as const;
export type BenchProgram = (typeof BENCH_PROGRAMS)[number];

export function benchSource(program: BenchProgram): string {
  return join(packageRoot(), 'bench', `${program}.c`);
}

export function benchBinary(program: BenchProgram): string {
  return join(packageRoot(), 'bench', 'bin', program);
}

export const BENCH_CFLAGS = ['-O2', '-Wall', '-Wextra', '-Werror'];

/** Compiles a program into bench/bin/ when its binary is missing or older than its source. */
export async function ensureBenchProgram(program: BenchProgram): Promise<string> {
  const src = benchSource(program);
  const bin = benchBinary(program);
  if (existsSync(bin) && (!existsSync(src) || statSync(bin).mtimeMs >= statSync(src).mtimeMs)) return bin;
  if (!existsSync(src)) throw new ConfigError(`${bin} is missing and so is its source ${src}`);
  mkdirSync(join(packageRoot(), 'bench', 'bin'), { recursive: true });
  // The Makefile's compiler first; clang-16 (installed for the BPF objects) where no cc is.
  const compilers = process.env.CC !== undefined ? [process.env.CC] : ['cc', 'clang-16'];
  let lastError: unknown = null;
  for (const cc of compilers) {
    try {
      await run(cc, [...BENCH_CFLAGS, '-o', bin, src], { timeoutMs: 120_000 });
      return bin;
    } catch (err) {
      lastError = err;
      // Only a missing compiler moves on to the next one; a failed build is the answer.
      if (!(err instanceof ToolError && err.notFound)) break;
    }
  }
  throw new ConfigError(`building ${bin} failed (run 'make build'; needs a C compiler): ${(lastError as Error).message}`, { cause: lastError });
}

