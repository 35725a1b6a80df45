/*
 * Measurements of every round, and what is reported from them: per (mode, services, placement,
 * metric) the median over rounds of each figure, in the `--json` shape
 * `{env, results: [{mode, services, placement, metric, p50, p99, rate, unit}]}`. Fields added
 * later (heap and churn results, resolutionMs) are extra rows and optional fields: files written
 * before them read the same.
 */
import type { BenchMode, Metric } from './plan.js';
import type { IpFamily } from '../model/ip.js';
import type { DisruptionSummary } from './disruption-report.js';

/** `none` for figures that do not depend on where the service sits (direct, control plane). */
export type ResultPlacement = 'last' | 'middle' | 'none';

export type Unit = 'us' | 'ms' | 'MiB';

export const METRIC_UNITS: Record<Metric, Unit> = {
  rr: 'us', crr: 'us', udp: 'us', sync_all: 'ms', sync_one: 'ms', rss: 'MiB', heap: 'MiB', churn: 'ms',
};

/** One figure of one round. */
export interface Sample {
  mode: BenchMode;
  services: number;
  placement: ResultPlacement;
  metric: Metric;
  /** Traffic metrics: the address family of the traffic (absent in files from before IPv6: IPv4). */
  family?: IpFamily;
  round: number;
  p50: number;
  p99: number | null;
  /** Transactions, connections or queries per second; churn: endpoint changes per second made; null for other control-plane metrics. */
  rate: number | null;
  /** Failed transactions (traffic metrics). */
  errors?: number;
  /** BPF sync metrics: the part spent in map calls, ms. */
  mapWork?: number;
  /** churn: the median time one look at the dataplane took, ms (how finely a change is seen landing). */
  resolutionMs?: number;
}

export interface BenchResult {
  mode: BenchMode;
  services: number;
  placement: ResultPlacement;
  metric: Metric;
  /** Traffic metrics: the address family of the traffic (absent: IPv4, as files from before IPv6). */
  family?: IpFamily;
  p50: number;
  p99: number | null;
  rate: number | null;
  unit: Unit;
  /** Rounds the medians are taken over. */
  rounds: number;
  /** Each round's p50, in round order: the spread behind the median (absent in older files). */
  p50ByRound?: number[];
  errors?: number;
  /** BPF sync_all / sync_one: median over rounds of the time spent in map calls, ms. */
  mapWork?: number;
  /** churn: median over rounds of the time one look at the dataplane took, ms. */
  resolutionMs?: number;
}

export interface BenchEnv {
  kernel: string;
  cpu: string;
  cpus: number;
  tools: Record<string, string>;
  date: string;
  command: string;
  /** Whether /dev/cpu_dma_latency was held at 0 for the run. */
  cpuDmaLatency: 'held at 0' | string;
  /** CPU the load generator and responders ran on. */
  pinnedCpu: number;
  /** The families whose traffic was measured (absent in files from before IPv6: IPv4 only). */
  families?: IpFamily[];
  backends: number;
  rounds: number;
  /** `--traffic-only`: rr, crr and udp (and the agent's rss and heap), each node programmed once per count. */
  trafficOnly?: true;
  wallSeconds: number;
  /** 1/5/15-minute load averages at the start and the end: other work on the machine shows here. */
  loadAverage: { start: number[]; end: number[] };
}

export interface Unavailable {
  mode: BenchMode;
  reason: string;
}

/**
 * A mode that could not be measured at a service count (it is then skipped in later rounds), or,
 * with `metric`, only that metric of it (its other figures stand; the metric is not retried).
 */
export interface CellFailure {
  mode: BenchMode;
  services: number;
  round: number;
  reason: string;
  /** Absent: the whole cell. `churn`: the endpoint churn alone (its own agent, its own window). */
  metric?: 'churn';
}

/** Whether `failures` cover `metric` of `mode` at `services`. */
export function failedMetric(failures: readonly CellFailure[], mode: BenchMode, services: number, metric: Metric): boolean {
  return failures.some((f) => f.mode === mode && f.services === services && (f.metric === undefined || f.metric === metric));
}

/** The samples no failure covers: every round of a failed metric goes (no medians of part of the rounds). */
export function keptSamples(samples: readonly Sample[], failures: readonly CellFailure[]): Sample[] {
  return samples.filter((s) => !failedMetric(failures, s.mode, s.services, s.metric));
}

export interface BenchReport {
  env: BenchEnv;
  results: BenchResult[];
  unavailable: Unavailable[];
  failures: CellFailure[];
  /** iptables modes: where the measured Services' TCP rules sat in KUBE-SERVICES (last round). */
  placements: Array<{ mode: BenchMode; services: number; placement: string; position: number; of: number }>;
  /** `--disruption`: the soak's counts per mode (results is then empty). */
  disruption?: DisruptionSummary;
}

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new RangeError('median of nothing');
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Nearest-rank percentile. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) throw new RangeError('percentile of nothing');
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length)));
  return s[rank - 1] as number;
}

function key(s: Pick<Sample, 'mode' | 'services' | 'placement' | 'metric' | 'family'>): string {
  return `${s.mode}|${s.services}|${s.placement}|${s.metric}|${s.family ?? 'IPv4'}`;
}

const round3 = (v: number): number => Math.round(v * 1000) / 1000;

/** Medians over rounds, in the order samples first appeared. */
export function summarize(samples: readonly Sample[]): BenchResult[] {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    const k = key(s);
    const g = groups.get(k);
    if (g) g.push(s);
    else groups.set(k, [s]);
  }
  const out: BenchResult[] = [];
  for (const g of groups.values()) {
    const first = g[0] as Sample;
    const p99s = g.map((s) => s.p99).filter((v): v is number => v !== null);
    const rates = g.map((s) => s.rate).filter((v): v is number => v !== null);
    const errors = g.reduce((n, s) => n + (s.errors ?? 0), 0);
    const mapWork = g.map((s) => s.mapWork).filter((v): v is number => v !== undefined);
    const resolution = g.map((s) => s.resolutionMs).filter((v): v is number => v !== undefined);
    out.push({
      mode: first.mode,
      services: first.services,
      placement: first.placement,
      metric: first.metric,
      ...(first.family === undefined ? {} : { family: first.family }),
      p50: round3(median(g.map((s) => s.p50))),
      p99: p99s.length === 0 ? null : round3(median(p99s)),
      rate: rates.length === 0 ? null : Math.round(median(rates)),
      unit: METRIC_UNITS[first.metric],
      rounds: g.length,
      p50ByRound: [...g].sort((a, b) => a.round - b.round).map((s) => round3(s.p50)),
      ...(first.errors === undefined ? {} : { errors }),
      ...(mapWork.length === 0 ? {} : { mapWork: round3(median(mapWork)) }),
      ...(resolution.length === 0 ? {} : { resolutionMs: round3(median(resolution)) }),
    });
  }
  return out;
}

/** The result of `q`; a traffic result of `q.family` (default IPv4, which rows without a family are). */
export function findResult(
  results: readonly BenchResult[],
  q: Pick<BenchResult, 'mode' | 'services' | 'placement' | 'metric' | 'family'>,
): BenchResult | undefined {
  const family = q.family ?? 'IPv4';
  return results.find(
    (r) => r.mode === q.mode && r.services === q.services && r.placement === q.placement && r.metric === q.metric && (r.family ?? 'IPv4') === family,
  );
}
