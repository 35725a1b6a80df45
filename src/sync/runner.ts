/*
 * A bounded-frequency runner, after kube-proxy's pkg/util/async/bounded_frequency_runner.go:
 * event handlers call `run()` as often as they like; the function runs at most once per
 * `minInterval` (measured from the end of one run to the start of the next, as kube-proxy does),
 * at least once per `maxInterval`, never two at a time, and a run requested while one is in
 * progress becomes exactly one more run afterwards. Unlike kube-proxy's runner, `fn` is async and
 * may fail: a failed run is retried with capped exponential backoff (kube-proxy's proxiers do
 * this by hand with `RetryAfter`).
 *
 * Time comes from an injected `Clock`, so tests drive it deterministically.
 */
import { componentLogger, type Logger } from '../log.js';

export type TimerHandle = ReturnType<typeof setTimeout> | number;

/** The time source and timers the runner (and anything else that waits) uses. */
export interface Clock {
  /** Milliseconds, monotonic for the runner's purposes. */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** The process clock: Date.now and the global timers. */
export const realClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle),
};

export interface BackoffOptions {
  /** Delay before the first retry after a failure (ms). */
  initial: number;
  /** Cap on the delay (ms). */
  max: number;
}

export interface RunResult {
  ok: boolean;
  /** Wall time of the run, by the runner's clock (ms). */
  durationMs: number;
  /** What `fn` threw, when it failed. */
  error?: unknown;
  /** Failures in a row, this one included; 0 after a success. */
  consecutiveFailures: number;
}

export interface BoundedFrequencyRunnerOptions {
  /** Used in logs. */
  name: string;
  fn: () => Promise<void>;
  /** Minimum time between the end of a run and the start of the next (ms). */
  minInterval: number;
  /** Maximum time between runs: a run happens at least this long after the last one (ms). */
  maxInterval: number;
  /** Retry schedule after a failed run; default 1 s doubling up to 30 s. */
  backoff?: BackoffOptions;
  clock?: Clock;
  log?: Logger;
  /** Called after every run, e.g. to feed metrics. */
  onRun?: (result: RunResult) => void;
}

const DEFAULT_BACKOFF: BackoffOptions = { initial: 1000, max: 30_000 };

export class BoundedFrequencyRunner {
  readonly name: string;
  private readonly fn: () => Promise<void>;
  private readonly minInterval: number;
  private readonly maxInterval: number;
  private readonly backoff: BackoffOptions;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly onRun: ((result: RunResult) => void) | undefined;

  private looping = false;
  private stopped = false;
  private running: Promise<void> | null = null;
  /** When the earliest outstanding run() was requested; null when none is. */
  private requestedAt: number | null = null;
  /** When a retry is due; null when none is. */
  private retryAt: number | null = null;
  /** When the periodic run is due. */
  private periodicAt = 0;
  /** When the last run ended; null before the first. */
  private lastRunEnd: number | null = null;
  private failures = 0;
  private timer: TimerHandle | null = null;
  private kickQueued = false;
  private resolveLoop: (() => void) | null = null;

  constructor(options: BoundedFrequencyRunnerOptions) {
    if (options.minInterval < 0 || options.maxInterval < options.minInterval) {
      throw new RangeError(
        `${options.name}: need 0 <= minInterval (${options.minInterval}) <= maxInterval (${options.maxInterval})`,
      );
    }
    const backoff = options.backoff ?? DEFAULT_BACKOFF;
    if (backoff.initial <= 0 || backoff.max < backoff.initial) {
      throw new RangeError(`${options.name}: need 0 < backoff.initial <= backoff.max`);
    }
    this.name = options.name;
    this.fn = options.fn;
    this.minInterval = options.minInterval;
    this.maxInterval = options.maxInterval;
    this.backoff = backoff;
    this.clock = options.clock ?? realClock;
    this.log = options.log ?? componentLogger('runner').child({ runner: options.name });
    this.onRun = options.onRun;
  }

  /** Failed runs in a row (0 after a success). */
  get consecutiveFailures(): number {
    return this.failures;
  }

  /**
   * Starts serving run requests and the periodic run. The promise resolves when `stop()` has
   * finished, so a caller may either await it or keep it aside.
   */
  loop(): Promise<void> {
    if (this.looping || this.stopped) throw new Error(`${this.name}: loop() called twice`);
    this.looping = true;
    this.periodicAt = this.clock.now() + this.maxInterval;
    const done = new Promise<void>((resolve) => {
      this.resolveLoop = resolve;
    });
    this.schedule();
    return done;
  }

  /** Stops the loop; resolves once a run in progress (if any) has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimer();
    if (this.running) await this.running;
    this.resolveLoop?.();
    this.resolveLoop = null;
  }

  /**
   * Requests a run as soon as the minimum interval allows. Requests made before the run starts
   * coalesce into it; a request made while a run is in progress yields one more run after it.
   */
  run(): void {
    if (this.stopped) return;
    if (this.requestedAt === null) this.requestedAt = this.clock.now();
    this.schedule();
  }

  /** Ensures a run no later than `ms` from now (earlier requests win), as kube-proxy's RetryAfter. */
  retryAfter(ms: number): void {
    if (this.stopped) return;
    const at = this.clock.now() + Math.max(0, ms);
    if (this.retryAt === null || at < this.retryAt) this.retryAt = at;
    this.schedule();
  }

  /** When the next run should start: the earliest wanted time, held back by minInterval. */
  private nextDue(): number {
    let wanted = this.periodicAt;
    if (this.requestedAt !== null) wanted = Math.min(wanted, this.requestedAt);
    if (this.retryAt !== null) wanted = Math.min(wanted, this.retryAt);
    if (this.lastRunEnd !== null) wanted = Math.max(wanted, this.lastRunEnd + this.minInterval);
    return wanted;
  }

  /** Arms the timer (or a microtask, when a run is due now) for the next run. */
  private schedule(): void {
    if (!this.looping || this.stopped || this.running) return;
    this.clearTimer();
    const delay = this.nextDue() - this.clock.now();
    if (delay <= 0) {
      // A microtask rather than a synchronous call: run() is called from event handlers, which
      // must finish recording their change before the function reads the state.
      if (!this.kickQueued) {
        this.kickQueued = true;
        queueMicrotask(() => {
          this.kickQueued = false;
          this.tick();
        });
      }
      return;
    }
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.tick();
    }, delay);
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      this.clock.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private tick(): void {
    if (!this.looping || this.stopped || this.running) return;
    if (this.nextDue() > this.clock.now()) {
      this.schedule();
      return;
    }
    this.running = this.execute().finally(() => {
      this.running = null;
      this.schedule();
    });
  }

  private async execute(): Promise<void> {
    const start = this.clock.now();
    // This run satisfies every request made so far; later ones will need another run.
    this.requestedAt = null;
    this.retryAt = null;
    let result: RunResult;
    try {
      await this.fn();
      this.failures = 0;
      result = { ok: true, durationMs: this.clock.now() - start, consecutiveFailures: 0 };
    } catch (error: unknown) {
      this.failures += 1;
      const delay = Math.min(this.backoff.initial * 2 ** (this.failures - 1), this.backoff.max);
      const at = this.clock.now() + delay;
      if (this.retryAt === null || at < this.retryAt) this.retryAt = at;
      this.log.warn({ err: error, failures: this.failures, retryInMs: delay }, 'run failed');
      result = {
        ok: false,
        durationMs: this.clock.now() - start,
        error,
        consecutiveFailures: this.failures,
      };
    }
    this.lastRunEnd = this.clock.now();
    this.periodicAt = this.lastRunEnd + this.maxInterval;
    try {
      this.onRun?.(result);
    } catch (error: unknown) {
      this.log.warn({ err: error }, 'onRun callback threw');
    }
  }
}
