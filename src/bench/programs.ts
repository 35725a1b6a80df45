/*
 * The bench's C programs (bench/rr.c, bench/responder.c): where they are, building them when
 * `make build` has not (same flags as the Makefile rule), and running the load generator pinned
 * to a CPU inside a namespace.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';
import { nsenterArgv } from '../lab/exec.js';
import { inCgroupArgv } from '../lab/cgroups.js';
import { ConfigError, ToolError } from '../errors.js';
import { run } from '../process/run.js';
import type { TrafficMetric } from './plan.js';

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

/** What bench/bin/rr prints. */
export interface RrOutput {
  mode: TrafficMetric;
  target: string;
  samples: number;
  errors: number;
  elapsed_s: number;
  rate: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  mean_us: number;
  min_us: number;
  max_us: number;
  first_error: string | null;
}

function isRrOutput(v: unknown): v is RrOutput {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return ['samples', 'errors', 'rate', 'p50_us', 'p99_us'].every((k) => typeof o[k] === 'number');
}

export function parseRrOutput(text: string): RrOutput {
  const line = text.trim().split('\n').pop() ?? '';
  let parsed: unknown;
  try {
    parsed = JSON.parse(line);
  } catch {
    throw new Error(`rr printed no JSON: '${line.slice(0, 200)}'`);
  }
  if (!isRrOutput(parsed)) throw new Error(`rr printed unexpected JSON: ${line.slice(0, 200)}`);
  return parsed;
}

export interface LoadOptions {
  netns: string;
  cpu: number;
  metric: TrafficMetric;
  target: string;
  durationMs: number;
  warmupMs: number;
  signal?: AbortSignal;
  /** Run as a process of this cgroup (the lab node's: where socket LB applies), or not. */
  cgroup?: string | null;
}

/** Runs bench/bin/rr in `netns`, pinned to `cpu` with taskset. */
export async function runLoad(o: LoadOptions): Promise<RrOutput> {
  const args = [
    '-c', String(o.cpu), benchBinary('rr'),
    '--mode', o.metric, '--target', o.target,
    '--duration-ms', String(o.durationMs), '--warmup-ms', String(o.warmupMs),
  ];
  const [nsFile, nsArgv] = nsenterArgv(o.netns, 'taskset', args);
  const [file, argv] = o.cgroup ? inCgroupArgv(o.cgroup, nsFile, nsArgv) : [nsFile, nsArgv];
  const { stdout } = await run(file, argv, {
    timeoutMs: o.durationMs + o.warmupMs + 30_000,
    maxBuffer: 16 * 1024 * 1024,
    ...(o.signal ? { signal: o.signal } : {}),
  });
  return parseRrOutput(stdout);
}
