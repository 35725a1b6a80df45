/*
 * Cooperative time slicing for long synchronous work on the event loop (a 100,000-Service sync):
 * `if (slice.due()) await slice.yield()` costs a clock read until the slice is used up, then yields once through setImmediate, so timers,
 * HTTP requests (/healthz, /metrics) and watch events run in between. Real time, never the
 * agent's injected clock: it is about the process, not about sync semantics.
 */
import { performance } from 'node:perf_hooks';

export class TimeSlice {
  private started = performance.now();

  constructor(private readonly budgetMs: number) {}

  /** Starts a fresh slice (at the start of a unit of work). */
  begin(): void {
    this.started = performance.now();
  }

  /** Whether this slice has run for its budget (cheap: check it in hot loops). */
  due(): boolean {
    return performance.now() - this.started >= this.budgetMs;
  }

  /** Lets the event loop run, then starts a fresh slice. */
  async yield(): Promise<void> {
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.started = performance.now();
  }
}
