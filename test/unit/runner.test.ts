import { BoundedFrequencyRunner, type Clock, type RunResult, type TimerHandle } from '../../src/sync/runner.js';

/** A clock that only moves when told to; timers fire in due order while advancing. */
class FakeClock implements Clock {
  private t = 1_000_000;
  private nextId = 1;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: TimerHandle): void {
    if (typeof handle === 'number') this.timers.delete(handle);
  }

  pendingTimers(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing due timers in order and letting promises settle. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    await settle();
    for (;;) {
      let earliest: [number, { at: number; fn: () => void }] | null = null;
      for (const entry of this.timers) {
        if (entry[1].at <= end && (earliest === null || entry[1].at < earliest[1].at)) earliest = entry;
      }
      if (earliest === null) break;
      this.timers.delete(earliest[0]);
      this.t = earliest[1].at;
      earliest[1].fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

/** Lets queued microtasks and promise chains run to completion. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

interface Harness {
  clock: FakeClock;
  runner: BoundedFrequencyRunner;
  /** Clock times at which fn started. */
  starts: number[];
  results: RunResult[];
}

function harness(
  fn: (call: number) => Promise<void> = async () => {},
  options: { min?: number; max?: number } = {},
): Harness {
  const clock = new FakeClock();
  const starts: number[] = [];
  const results: RunResult[] = [];
  const runner = new BoundedFrequencyRunner({
    name: 'test',
    fn: () => {
      starts.push(clock.now());
      return fn(starts.length);
    },
    minInterval: options.min ?? 1000,
    maxInterval: options.max ?? 60_000,
    backoff: { initial: 500, max: 4000 },
    clock,
    onRun: (r) => results.push(r),
  });
  return { clock, runner, starts, results };
}

/** A promise the test resolves or rejects by hand. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('BoundedFrequencyRunner', () => {
  test('does nothing until loop() starts, then serves a run requested before', async () => {
    const h = harness();
    h.runner.run();
    await h.clock.advance(5000);
    expect(h.starts).toEqual([]);
    const t0 = h.clock.now();
    void h.runner.loop();
    await h.clock.advance(0);
    expect(h.starts).toEqual([t0]);
    await h.runner.stop();
  });

  test('coalesces a burst of run() into one run', async () => {
    const h = harness();
    void h.runner.loop();
    for (let i = 0; i < 10; i++) h.runner.run();
    await h.clock.advance(0);
    expect(h.starts).toHaveLength(1);
    await h.clock.advance(10_000);
    expect(h.starts).toHaveLength(1);
    await h.runner.stop();
  });

  test('never starts a run sooner than minInterval after the previous one ended', async () => {
    const h = harness();
    void h.runner.loop();
    const t0 = h.clock.now();
    h.runner.run();
    await h.clock.advance(0);
    await h.clock.advance(200);
    h.runner.run();
    h.runner.run();
    await h.clock.advance(700);
    expect(h.starts).toEqual([t0]);
    await h.clock.advance(100);
    expect(h.starts).toEqual([t0, t0 + 1000]);
    // A request long after the interval passed runs at once.
    await h.clock.advance(5000);
    h.runner.run();
    await h.clock.advance(0);
    expect(h.starts).toEqual([t0, t0 + 1000, t0 + 6000]);
    await h.runner.stop();
  });

  test('minInterval counts from the end of a slow run', async () => {
    const gate = deferred();
    const h = harness((call) => (call === 1 ? gate.promise : Promise.resolve()));
    void h.runner.loop();
    const t0 = h.clock.now();
    h.runner.run();
    await h.clock.advance(3000);
    gate.resolve();
    await h.clock.advance(0);
    h.runner.run();
    await h.clock.advance(999);
    expect(h.starts).toEqual([t0]);
    await h.clock.advance(1);
    expect(h.starts).toEqual([t0, t0 + 4000]);
    await h.runner.stop();
  });

  test('runs periodically every maxInterval without requests', async () => {
    const h = harness(async () => {}, { min: 1000, max: 10_000 });
    const t0 = h.clock.now();
    void h.runner.loop();
    await h.clock.advance(9999);
    expect(h.starts).toEqual([]);
    await h.clock.advance(1);
    expect(h.starts).toEqual([t0 + 10_000]);
    // A requested run pushes the periodic one back to maxInterval after it.
    await h.clock.advance(2000);
    h.runner.run();
    await h.clock.advance(0);
    await h.clock.advance(10_000);
    expect(h.starts).toEqual([t0 + 10_000, t0 + 12_000, t0 + 22_000]);
    await h.runner.stop();
  });

  test('retries failures with capped exponential backoff and resets after a success', async () => {
    let failUntil = 6;
    const h = harness(async (call) => {
      if (call <= failUntil) throw new Error(`boom ${call}`);
    });
    void h.runner.loop();
    const t0 = h.clock.now();
    h.runner.run();
    await h.clock.advance(30_000);
    const gaps = h.starts.slice(1).map((s, i) => s - (h.starts[i] ?? 0));
    // 500, 1000, 2000, 4000, 4000 (capped), then the 7th call succeeds and nothing is pending.
    expect(h.starts[0]).toBe(t0);
    expect(gaps).toEqual([1000, 1000, 2000, 4000, 4000, 4000]);
    expect(h.results.map((r) => r.consecutiveFailures)).toEqual([1, 2, 3, 4, 5, 6, 0]);
    expect(h.results.at(-1)?.ok).toBe(true);
    expect(h.runner.consecutiveFailures).toBe(0);

    // Next failure starts the backoff from the beginning again (held back by minInterval).
    failUntil = 8;
    h.runner.run();
    await h.clock.advance(0);
    const n = h.starts.length;
    await h.clock.advance(999);
    expect(h.starts).toHaveLength(n);
    await h.clock.advance(1);
    expect(h.starts).toHaveLength(n + 1);
    await h.runner.stop();
  });

  test('backoff beyond minInterval is honoured exactly', async () => {
    const h = harness(
      async (call) => {
        if (call <= 3) throw new Error('no');
      },
      { min: 100, max: 60_000 },
    );
    void h.runner.loop();
    const t0 = h.clock.now();
    h.runner.run();
    await h.clock.advance(10_000);
    expect(h.starts).toEqual([t0, t0 + 500, t0 + 1500, t0 + 3500]);
    await h.runner.stop();
  });

  test('a run() during a run yields exactly one more run afterwards', async () => {
    const gates = [deferred(), deferred()];
    const h = harness((call) => gates[call - 1]?.promise ?? Promise.resolve(), { min: 0, max: 60_000 });
    void h.runner.loop();
    h.runner.run();
    await h.clock.advance(0);
    expect(h.starts).toHaveLength(1);
    h.runner.run();
    h.runner.run();
    h.runner.run();
    await h.clock.advance(100);
    expect(h.starts).toHaveLength(1); // never two at once
    gates[0]?.resolve();
    await h.clock.advance(0);
    expect(h.starts).toHaveLength(2);
    gates[1]?.resolve();
    await h.clock.advance(1000);
    expect(h.starts).toHaveLength(2);
    await h.runner.stop();
  });

  test('retryAfter schedules a run, and the soonest retry wins', async () => {
    const h = harness(async () => {}, { min: 0, max: 60_000 });
    void h.runner.loop();
    const t0 = h.clock.now();
    h.runner.retryAfter(5000);
    h.runner.retryAfter(2000);
    h.runner.retryAfter(8000);
    await h.clock.advance(10_000);
    expect(h.starts).toEqual([t0 + 2000]);
    await h.runner.stop();
  });

  test('stop() waits for the run in progress and cancels timers', async () => {
    const gate = deferred();
    const h = harness(() => gate.promise);
    const loopDone = h.runner.loop();
    h.runner.run();
    await h.clock.advance(0);
    let stopped = false;
    const stopping = h.runner.stop().then(() => {
      stopped = true;
    });
    await h.clock.advance(0);
    expect(stopped).toBe(false);
    gate.resolve();
    await stopping;
    await loopDone;
    expect(stopped).toBe(true);
    h.runner.run();
    await h.clock.advance(120_000);
    expect(h.starts).toHaveLength(1);
    expect(h.clock.pendingTimers()).toBe(0);
  });

  test('rejects maxInterval below minInterval', () => {
    expect(
      () => new BoundedFrequencyRunner({ name: 'x', fn: async () => {}, minInterval: 10, maxInterval: 5 }),
    ).toThrow(RangeError);
  });
});
