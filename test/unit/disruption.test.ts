/*
 * The disruption soak's rollout and counting rules (src/bench/disruption-report.ts): which
 * endpoints the slice holds at each churn, and which requests count as failed, reset, or as
 * having reached an endpoint after the sync that removed it (the race between the API write and
 * the sync excluded).
 */
import {
  countDisruption, formatDisruption, initialRollout, stepsWithExtraSyncs, notReadyWindows, pendingWindows, rolloutStep, sliceEndpoints,
  type ClientRecord, type RolloutState, type StepRecord,
} from '../../src/bench/disruption-report.js';
import { spreadSteps } from '../../src/bench/disruption.js';

const POOL = ['be1', 'be2', 'be3', 'be4', 'be5', 'be6'];

describe('rollout', () => {
  test('each churn: the oldest ready endpoint goes not ready, then terminating, then gone; the longest gone comes back ready', () => {
    let s: RolloutState = initialRollout(POOL, 3);
    const seen: string[] = [];
    for (let k = 0; k < 4; k++) {
      const step = rolloutStep(s);
      s = step.next;
      seen.push(`${step.leaving}->${step.joining} ${sliceEndpoints(s).map((e) => `${e.name}:${e.state}`).join(',')}`);
    }
    expect(seen).toEqual([
      'be1->be4 be2:ready,be3:ready,be4:ready,be1:notready',
      'be2->be5 be3:ready,be4:ready,be5:ready,be2:notready,be1:terminating',
      'be3->be6 be4:ready,be5:ready,be6:ready,be3:notready,be2:terminating',
      'be4->be1 be5:ready,be6:ready,be1:ready,be4:notready,be3:terminating',
    ]);
  });

  test('1,000 churns keep 3 ready endpoints and every backend passes through every state', () => {
    let s = initialRollout(POOL, 3);
    const states = new Map<string, Set<string>>();
    for (let k = 0; k < 1000; k++) {
      s = rolloutStep(s).next;
      expect(s.ready).toHaveLength(3);
      for (const e of sliceEndpoints(s)) states.set(e.name, (states.get(e.name) ?? new Set()).add(e.state));
    }
    for (const b of POOL) expect([b, [...(states.get(b) ?? [])].sort()]).toEqual([b, ['notready', 'ready', 'terminating']]);
  });

  test('a pool too small for a rollout is refused', () => {
    expect(() => initialRollout(['be1', 'be2'], 2)).toThrow(/a spare/);
  });
});

describe('counting', () => {
  // be1 leaves the ready set at t0 = 1000, its sync completes at 1050; it comes back at 5000.
  const steps: StepRecord[] = [
    { t0: 1000, leaving: 'be1', joining: 'be4', synced: { bpf: 1050 } },
    { t0: 5000, leaving: 'be2', joining: 'be1', synced: { bpf: 5040 } },
  ];
  const windows = notReadyWindows('bpf', steps, ['be4'], 500);
  const pending = pendingWindows('bpf', steps);
  const rec = (over: Partial<ClientRecord>): ClientRecord => ({ kind: 'new', connStart: 0, reqStart: 0, port: 40000, backend: 'be3', error: null, ...over });

  test('windows run from the removing sync (its log line\'s millisecond over) to the write that brings the backend back', () => {
    expect(windows).toEqual(expect.arrayContaining([
      { backend: 'be4', step: 0, from: 501, until: 1000 },
      { backend: 'be1', step: 1, from: 1051, until: 5000 },
      { backend: 'be2', step: 2, from: 5041, until: Infinity },
    ]));
    expect(windows).toHaveLength(3);
  });

  test('a connection opened after the removing sync and answered by the removed backend is a not-ready hit', () => {
    const c = countDisruption([
      rec({ connStart: 700, port: 41000, backend: 'be1' }),
      rec({ connStart: 1052, reqStart: 1052, port: 41000, backend: 'be1' }),
    ], windows, pending);
    expect(c).toEqual(expect.objectContaining({ requests: 2, notReadyHits: 1, failed: 0, answeredBeforeSync: 0 }));
    expect(c.notReadyExamples).toEqual([
      { backend: 'be1', kind: 'new', step: 1, connStartAfterSyncMs: 2, port: 41000, portLastUsed: { msBefore: 352, backend: 'be1' } },
    ]);
  });

  test('the race is no hit: opened after the API write but before the sync completed, or within its log line\'s millisecond', () => {
    const c = countDisruption([
      rec({ connStart: 1049, reqStart: 1049, backend: 'be1' }),
      rec({ connStart: 1050.9, reqStart: 1050.9, backend: 'be1' }),
    ], windows, pending);
    expect(c).toEqual(expect.objectContaining({ notReadyHits: 0, answeredBeforeSync: 2 }));
  });

  test('a long-lived connection opened before the removal keeps its backend without a hit', () => {
    const c = countDisruption([rec({ kind: 'long', connStart: 900, reqStart: 2000, backend: 'be1' })], windows, pending);
    expect(c).toEqual(expect.objectContaining({ requests: 1, longLivedRequests: 1, notReadyHits: 0 }));
  });

  test('after the backend is written back as ready, it may answer again', () => {
    const c = countDisruption([rec({ connStart: 5001, reqStart: 5001, backend: 'be1' })], windows, pending);
    expect(c.notReadyHits).toBe(0);
  });

  test('failures: no answer is a failed request; ECONNRESET / EPIPE also a reset; an idle reset is a reset only', () => {
    const c = countDisruption([
      rec({ backend: null, error: 'ECONNRESET' }),
      rec({ kind: 'long', backend: null, error: 'EPIPE' }),
      rec({ backend: null, error: 'TIMEOUT' }),
      rec({ backend: null, error: 'ECONNREFUSED' }),
      rec({ kind: 'idle', backend: null, error: 'ECONNRESET' }),
      rec({}),
    ], windows, pending);
    expect(c).toEqual(expect.objectContaining({ requests: 5, failed: 4, resets: 3, notReadyHits: 0 }));
    expect(c.errors).toEqual({ ECONNRESET: 2, EPIPE: 1, TIMEOUT: 1, ECONNREFUSED: 1 });
  });

  test('the table names every mode with its counts', () => {
    const counts = countDisruption([rec({ connStart: 1052, backend: 'be1' }), rec({ backend: null, error: 'ECONNRESET' })], windows, pending);
    const text = formatDisruption({
      churns: 2, agentRestarts: 0, watchDrops: 0, newConnectionsPerSecond: 100, longLivedConnections: 8, longLivedIntervalMs: 100,
      backends: 6, minSyncPeriod: '100ms', seconds: 1, restartSteps: [], watchDropSteps: [],
      results: [{ mode: 'bpf', ...counts, syncLatencyMs: { p50: 40, p99: 50, max: 50 }, stepsWithExtraSyncs: [] }],
    });
    expect(text).toMatch(/^ {2}mode +requests +failed +resets +not-ready hits +sync p50\/p99 ms$/m);
    expect(text).toMatch(/^ {2}bpf +2 +1 +1 +1 +40\/50$/m);
    expect(text).toMatch(/bpf: new connection to be1 opened 2 ms after the sync that removed it \(churn 1\); its port 40000 was last used 1052 ms before \(answered by nobody\)$/m);
  });
});

describe('sync attribution', () => {
  test('churns whose stretch holds more than one sync that wrote something are named', () => {
    const steps: StepRecord[] = [
      { t0: 1000, leaving: 'be1', joining: 'be4', synced: { bpf: 1010 } },
      { t0: 2000, leaving: 'be2', joining: 'be5', synced: { bpf: 2010 } },
    ];
    const syncs = [{ start: 1002, changes: 3 }, { start: 1500, changes: 0 }, { start: 2001, changes: 3 }, { start: 2600, changes: 1 }];
    expect(stepsWithExtraSyncs(steps, syncs)).toEqual([2]);
  });
});

describe('schedule', () => {
  test('restarts and watch drops are spread over the churns', () => {
    expect([...spreadSteps(1000, 10, 0.5)]).toEqual([51, 151, 251, 351, 451, 551, 651, 751, 851, 951]);
    expect([...spreadSteps(30, 2, 0.5)]).toEqual([8, 23]);
    expect(spreadSteps(30, 0, 0.5).size).toBe(0);
  });
});
