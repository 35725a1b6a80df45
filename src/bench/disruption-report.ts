/*
 * What the disruption soak counts, as pure functions of what it recorded, and how it is printed.
 *
 * The rollout (`rolloutStep`): a pool of backends in a pipeline, as a Deployment's rolling update
 * moves pods: each step, the oldest ready endpoint becomes not ready, the not-ready one becomes
 * terminating, the terminating one leaves the EndpointSlice, and the longest-gone one comes back
 * ready (a new pod on a reused IP). One step is one churn.
 *
 * "Reached a not-ready endpoint": a request answered by backend X on a connection opened after the
 * sync that took X out of the ready set had completed on that node (the agent's `synced` log line
 * of the first sync that wrote something and started at or after the API change; its timestamp has
 * millisecond resolution, so the sync counts as complete 1 ms after it), and before X was made
 * ready again. Connections opened before that moment were balanced while X was still
 * programmed: they keep X (conntrack), as with kube-proxy, and X's server ends them gracefully.
 */
import { percentile } from './results.js';

/** One request of the soak's client, or one idle long-lived connection reset (`idle`). */
export interface ClientRecord {
  kind: 'new' | 'long' | 'idle';
  /** When its connection was opened (ms since the epoch, sub-ms precision). */
  connStart: number;
  /** When the request was sent (for `idle`: when the reset was seen). */
  reqStart: number;
  /** The client's port (0 when the connection never connected). */
  port: number;
  /** The backend that answered, null when none did. */
  backend: string | null;
  /** Why no answer came: an errno code (ECONNRESET, ECONNREFUSED, ...), EOF, TIMEOUT or HTTP_<status>. */
  error: string | null;
}

/** Error codes that mean the peer reset the connection. */
export const RESET_ERRORS: ReadonlySet<string> = new Set(['ECONNRESET', 'EPIPE']);

export type EndpointState = 'ready' | 'notready' | 'terminating' | 'gone';

export interface RolloutState {
  /** Ready endpoints, oldest first. */
  ready: string[];
  notReady: string | null;
  terminating: string | null;
  /** Backends out of the slice, longest gone first. */
  gone: string[];
}

export function initialRollout(pool: readonly string[], ready: number): RolloutState {
  if (ready < 2 || pool.length < ready + 1) throw new RangeError(`a rollout needs at least 2 ready endpoints and a spare, got ${ready} of ${pool.length}`);
  return { ready: pool.slice(0, ready), notReady: null, terminating: null, gone: pool.slice(ready) };
}

export interface RolloutStep {
  next: RolloutState;
  /** Leaves the ready set now (becomes not ready). */
  leaving: string;
  /** Joins the ready set now, if a spare was there. */
  joining: string | null;
}

export function rolloutStep(s: RolloutState): RolloutStep {
  const [leaving, ...stillReady] = s.ready;
  if (leaving === undefined) throw new RangeError('rollout without ready endpoints');
  const gone = s.terminating === null ? [...s.gone] : [...s.gone, s.terminating];
  const joining = gone.shift() ?? null;
  return {
    next: { ready: joining === null ? stillReady : [...stillReady, joining], notReady: leaving, terminating: s.notReady, gone },
    leaving,
    joining,
  };
}

/** Each endpoint of the slice and its state (gone ones are absent). */
export function sliceEndpoints(s: RolloutState): Array<{ name: string; state: Exclude<EndpointState, 'gone'> }> {
  return [
    ...s.ready.map((name) => ({ name, state: 'ready' as const })),
    ...(s.notReady === null ? [] : [{ name: s.notReady, state: 'notready' as const }]),
    ...(s.terminating === null ? [] : [{ name: s.terminating, state: 'terminating' as const }]),
  ];
}

/** One churn as the soak made it, and when each mode's agent had synced it. */
export interface StepRecord {
  /** When the EndpointSlice was written (ms since the epoch). */
  t0: number;
  leaving: string;
  joining: string | null;
  /** Per mode: when the sync that carried this change completed. */
  synced: Record<string, number>;
}

/** A stretch of time in which connections opened must not reach `backend`. */
export interface NotReadyWindow {
  backend: string;
  /** The churn (1-based) that opened it; 0 for a backend out of the slice from the start. */
  step: number;
  from: number;
  until: number;
}

/**
 * The windows of one mode: from the sync that took each backend out of the ready set to the
 * moment it was written back as ready (open-ended for one never brought back), plus, for backends
 * not in the slice at the start, from the agent's first sync.
 */
/** pino's ISO timestamps: the sync ended before its line's time, which is at most this much later than written. */
export const LOG_TIME_RESOLUTION_MS = 1;

export function notReadyWindows(mode: string, steps: readonly StepRecord[], initiallyOut: readonly string[], firstSync: number): NotReadyWindow[] {
  const open = new Map<string, { from: number; step: number }>();
  for (const b of initiallyOut) open.set(b, { from: firstSync + LOG_TIME_RESOLUTION_MS, step: 0 });
  const windows: NotReadyWindow[] = [];
  steps.forEach((step, i) => {
    if (step.joining !== null) {
      const o = open.get(step.joining);
      if (o !== undefined) windows.push({ backend: step.joining, step: o.step, from: o.from, until: step.t0 });
      open.delete(step.joining);
    }
    const synced = step.synced[mode];
    if (synced === undefined) throw new RangeError(`step at ${step.t0} has no sync time for ${mode}`);
    open.set(step.leaving, { from: synced + LOG_TIME_RESOLUTION_MS, step: i + 1 });
  });
  for (const [backend, o] of open) windows.push({ backend, step: o.step, from: o.from, until: Infinity });
  return windows;
}

/**
 * The stretches between each API write that took a backend out of the ready set and the end of
 * the sync that carried it: connections opened there may still reach it (allowed). Counting them
 * shows the measure sees a stale datapath when there is one.
 */
export function pendingWindows(mode: string, steps: readonly StepRecord[]): NotReadyWindow[] {
  return steps.map((s, i) => ({ backend: s.leaving, step: i + 1, from: s.t0, until: (s.synced[mode] ?? s.t0) + LOG_TIME_RESOLUTION_MS }));
}

export interface DisruptionCounts {
  /** Requests sent (new connections and long-lived requests). */
  requests: number;
  newConnections: number;
  longLivedRequests: number;
  /** Requests that got no answer from a backend. */
  failed: number;
  /** Connections reset (ECONNRESET / EPIPE), with a request in flight or idle. */
  resets: number;
  /** Requests answered by a backend on a connection opened inside one of its not-ready windows. */
  notReadyHits: number;
  /** Allowed: answered by a backend on a connection opened after the API write that took it out, before the sync. */
  answeredBeforeSync: number;
  /** Failed requests and idle resets by error code. */
  errors: Record<string, number>;
  /** The first few not-ready hits, for the report. */
  notReadyExamples: Array<{
    backend: string;
    kind: string;
    /** The churn that took the backend out. */
    step: number;
    connStartAfterSyncMs: number;
    port: number;
    /** The last earlier connection from the same client port: how long before, and who answered it. */
    portLastUsed: { msBefore: number; backend: string | null } | null;
  }>;
}

function byBackend(windows: readonly NotReadyWindow[]): Map<string, NotReadyWindow[]> {
  const out = new Map<string, NotReadyWindow[]>();
  for (const w of windows) {
    const list = out.get(w.backend);
    if (list) list.push(w);
    else out.set(w.backend, [w]);
  }
  return out;
}

const inside = (t: number, w: NotReadyWindow): boolean => t > w.from && t < w.until;

export function countDisruption(
  records: readonly ClientRecord[],
  windows: readonly NotReadyWindow[],
  pending: readonly NotReadyWindow[] = [],
): DisruptionCounts {
  const notReady = byBackend(windows);
  const beforeSync = byBackend(pending);
  const c: DisruptionCounts = {
    requests: 0, newConnections: 0, longLivedRequests: 0, failed: 0, resets: 0, notReadyHits: 0, answeredBeforeSync: 0, errors: {}, notReadyExamples: [],
  };
  const lastByPort = new Map<number, ClientRecord>();
  for (const r of [...records].sort((a, b) => a.connStart - b.connStart)) {
    const previous = r.port === 0 ? undefined : lastByPort.get(r.port);
    if (r.port !== 0 && r.kind !== 'idle') lastByPort.set(r.port, r);
    if (r.error !== null) {
      c.errors[r.error] = (c.errors[r.error] ?? 0) + 1;
      if (RESET_ERRORS.has(r.error)) c.resets++;
    }
    if (r.kind === 'idle') continue;
    c.requests++;
    if (r.kind === 'new') c.newConnections++;
    else c.longLivedRequests++;
    if (r.backend === null) {
      c.failed++;
      continue;
    }
    if ((beforeSync.get(r.backend) ?? []).some((w) => inside(r.connStart, w))) c.answeredBeforeSync++;
    const hit = (notReady.get(r.backend) ?? []).find((w) => inside(r.connStart, w));
    if (hit !== undefined) {
      c.notReadyHits++;
      if (c.notReadyExamples.length < 5) {
        const before = previous !== undefined && previous.connStart < r.connStart ? previous : undefined;
        c.notReadyExamples.push({
          backend: r.backend,
          kind: r.kind,
          step: hit.step,
          connStartAfterSyncMs: Math.round((r.connStart - hit.from + LOG_TIME_RESOLUTION_MS) * 1000) / 1000,
          port: r.port,
          portLastUsed: before === undefined ? null : { msBefore: Math.round(r.connStart - before.connStart), backend: before.backend },
        });
      }
    }
  }
  return c;
}

/** One mode's line of the table, as written to the JSON. */
export interface DisruptionResult extends DisruptionCounts {
  mode: string;
  /**
   * Churns during whose stretch (API write to the next churn's) the agent logged more than one
   * sync that wrote something: there the sync taken for the churn's may not be the one that carried it.
   */
  stepsWithExtraSyncs: number[];
  /** From the API write to the end of the sync that carried it, over every churn (ms). */
  syncLatencyMs: { p50: number; p99: number; max: number };
}

export interface DisruptionSummary {
  churns: number;
  agentRestarts: number;
  watchDrops: number;
  newConnectionsPerSecond: number;
  longLivedConnections: number;
  longLivedIntervalMs: number;
  backends: number;
  minSyncPeriod: string;
  /** Soak time, from the first churn to the last answer (s). */
  seconds: number;
  /** The churns at which the agents were SIGKILLed and restarted, and after which the API dropped every connection. */
  restartSteps: number[];
  watchDropSteps: number[];
  results: DisruptionResult[];
}

/** Churns (1-based) whose stretch saw more than one sync that wrote something (`syncs`: start, writes + deletes). */
export function stepsWithExtraSyncs(steps: readonly StepRecord[], syncs: ReadonlyArray<{ start: number; changes: number }>): number[] {
  const out: number[] = [];
  steps.forEach((s, i) => {
    const until = steps[i + 1]?.t0 ?? Infinity;
    if (syncs.filter((x) => x.changes > 0 && x.start >= s.t0 && x.start < until).length > 1) out.push(i + 1);
  });
  return out;
}

export function syncLatency(mode: string, steps: readonly StepRecord[]): DisruptionResult['syncLatencyMs'] {
  const lat = steps.map((s) => (s.synced[mode] ?? NaN) - s.t0).filter((v) => Number.isFinite(v));
  if (lat.length === 0) return { p50: 0, p99: 0, max: 0 };
  const r = (v: number): number => Math.round(v * 10) / 10;
  return { p50: r(percentile(lat, 50)), p99: r(percentile(lat, 99)), max: r(Math.max(...lat)) };
}

const num = (n: number): string => n.toLocaleString('en-US');

export function formatDisruption(d: DisruptionSummary): string {
  const lines = [
    `Disruption soak: ${num(d.churns)} endpoint churns (rolling: ready → not ready → terminating → gone, a new one ready), ` +
      `${d.agentRestarts} agent SIGKILL + restarts, ${d.watchDrops} API watch drops, ${d.seconds} s`,
    `traffic per mode: ${d.newConnectionsPerSecond} new connections/s and ${d.longLivedConnections} keep-alive connections ` +
      `with a request every ${d.longLivedIntervalMs} ms, to a ClusterIP Service of ${d.backends} pods; --min-sync-period ${d.minSyncPeriod}`,
    '',
  ];
  const head = ['mode', 'requests', 'failed', 'resets', 'not-ready hits', 'sync p50/p99 ms'];
  const rows = d.results.map((r) => [
    r.mode, num(r.requests), num(r.failed), num(r.resets), num(r.notReadyHits), `${r.syncLatencyMs.p50}/${r.syncLatencyMs.p99}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] as string).length)));
  const fmt = (cells: string[]): string => `  ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  ')}`;
  lines.push(fmt(head), ...rows.map(fmt));
  for (const r of d.results) {
    if (r.stepsWithExtraSyncs.length > 0) lines.push(`  ${r.mode}: churns with more than one sync that wrote something: ${r.stepsWithExtraSyncs.join(', ')}`);
    const errs = Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(', ');
    if (errs) lines.push(`  ${r.mode}: errors ${errs}`);
    lines.push(`  ${r.mode}: ${num(r.answeredBeforeSync)} requests reached an endpoint between the API write that removed it and the sync (allowed; the race the soak sees)`);
    for (const e of r.notReadyExamples) {
      const reuse = e.portLastUsed === null ? '' : `; its port ${e.port} was last used ${e.portLastUsed.msBefore} ms before (answered by ${e.portLastUsed.backend ?? 'nobody'})`;
      lines.push(`  ${r.mode}: ${e.kind} connection to ${e.backend} opened ${e.connStartAfterSyncMs} ms after the sync that removed it (churn ${e.step})${reuse}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
