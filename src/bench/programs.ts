/*
 * Running the lab's load generator (bench/rr.c, built by src/lab/traffic-programs.ts) pinned to
 * a CPU inside a namespace, and reading what it prints.
 */
import { nsenterArgv } from '../lab/exec.js';
import { inCgroupArgv } from '../lab/cgroups.js';
import { ConfigError, ToolError } from '../errors.js';
import { benchBinary } from '../lab/traffic-programs.js';
import { run } from '../process/run.js';
import type { TrafficMetric } from './plan.js';

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
