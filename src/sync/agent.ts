/*
 * The node agent's sync loop, as kube-proxy's: sources report objects, the change tracker keeps
 * only real changes, a bounded-frequency runner coalesces them into syncs, and each sync builds
 * the desired state and hands it to the dataplane. After a failure the next sync is full; a full
 * sync also happens every `syncPeriodMs`.
 */
import type { ClusterObjects } from '../model/k8s.js';
import type { DesiredState, NodeInfo, ServiceEntry } from '../model/types.js';
import { buildDesiredState } from '../model/build.js';
import { ClusterChangeTracker } from './tracker.js';
import { BoundedFrequencyRunner, realClock, type Clock, type RunResult } from './runner.js';
import type { Dataplane, SyncResult } from './dataplane.js';
import { componentLogger, type Logger } from '../log.js';

/** How soon services that could not be programmed are tried again. */
const PARTIAL_FAILURE_RETRY_MS = 5000;

export interface SyncReport {
  result: SyncResult | null;
  full: boolean;
  durationMs: number;
  error: unknown;
  /** When the changes this sync programmed were first seen, per affected Service (ns/name). */
  changeSeenAt: Map<string, number>;
  state: DesiredState | null;
}

export interface AgentOptions {
  dataplane: Dataplane;
  node: NodeInfo;
  /** kube-proxy's --min-sync-period (ms). */
  minSyncPeriodMs: number;
  /** kube-proxy's --sync-period: a full sync at least this often (ms). */
  syncPeriodMs: number;
  clock?: Clock;
  log?: Logger;
  onSync?: (report: SyncReport) => void;
  /** A change that needs a sync was seen (kube-proxy's "queued" for metrics and healthz). */
  onQueued?: (now: number) => void;
}

export class Agent {
  private readonly tracker = new ClusterChangeTracker();
  private readonly runner: BoundedFrequencyRunner;
  private readonly log: Logger;
  private readonly clock: Clock;
  private node: NodeInfo;
  private needFull = true;
  private lastFullAt = 0;
  private loopDone: Promise<void> | null = null;
  /** First time a still-unsynced change to each Service was seen. */
  private readonly seenAt = new Map<string, number>();
  private lastState: DesiredState | null = null;
  /** The last built entries, by Service (`namespace/name`). */
  private entries = new Map<string, ServiceEntry[]>();
  private nodeChanged = false;
  private resolveFirstSync: (() => void) | null = null;
  /** Resolves after the first successful sync. */
  readonly firstSync: Promise<void> = new Promise((resolve) => {
    this.resolveFirstSync = resolve;
  });

  constructor(private readonly opts: AgentOptions) {
    this.log = opts.log ?? componentLogger('agent');
    this.clock = opts.clock ?? realClock;
    this.node = opts.node;
    this.runner = new BoundedFrequencyRunner({
      name: `sync-${opts.dataplane.mode}`,
      fn: () => this.syncOnce(),
      minInterval: opts.minSyncPeriodMs,
      maxInterval: opts.syncPeriodMs,
      clock: this.clock,
      log: this.log,
      onRun: (r: RunResult) => {
        if (!r.ok) this.log.error({ err: r.error, failures: r.consecutiveFailures }, 'sync failed; retrying with backoff, next sync is full');
      },
    });
  }

  /** Starts the sync loop; the first sync is a full one. */
  start(): void {
    this.opts.onQueued?.(this.clock.now());
    this.loopDone = this.runner.loop();
    this.runner.run();
  }

  async stop(): Promise<void> {
    await this.runner.stop();
    await this.loopDone;
  }

  /** A source's complete current set of objects (snapshot sources: manifest files, informers). */
  updateObjects(objects: ClusterObjects): void {
    const diff = this.tracker.applySnapshot(objects);
    if (!diff.changed) return;
    const now = this.clock.now();
    for (const s of diff.affectedServices) if (!this.seenAt.has(s)) this.seenAt.set(s, now);
    this.opts.onQueued?.(now);
    this.runner.run();
  }

  /** The node's addresses or zone changed (they decide local endpoints and NodePort IPs). */
  updateNode(node: NodeInfo): void {
    if (JSON.stringify(node) === JSON.stringify(this.node)) return;
    this.node = node;
    this.nodeChanged = true;
    this.opts.onQueued?.(this.clock.now());
    this.runner.run();
  }

  /**
   * The desired state after the pending changes, and which Services they touched (null: all).
   * Only the Services the change trackers name are rebuilt, as kube-proxy's partial syncs; a full
   * sync, the first one, or a node change rebuilds everything.
   */
  private desiredAfter(changed: ReadonlySet<string>, rebuildAll: boolean): { state: DesiredState; changed: ReadonlySet<string> | null } {
    const objects = this.tracker.current();
    if (rebuildAll || this.lastState === null) {
      const state = buildDesiredState(objects, this.node);
      this.entries = new Map();
      for (const e of state.services) this.addEntry(e);
      return { state, changed: null };
    }
    const part = buildDesiredState(objects, this.node, undefined, changed);
    for (const name of changed) this.entries.delete(name);
    for (const e of part.services) this.addEntry(e);
    const services = [...this.entries.values()].flat().sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { state: { node: part.node, services }, changed };
  }

  private addEntry(e: ServiceEntry): void {
    const name = `${e.service.id.namespace}/${e.service.id.name}`;
    const list = this.entries.get(name);
    if (list) list.push(e);
    else this.entries.set(name, [e]);
  }

  private async syncOnce(): Promise<void> {
    const start = this.clock.now();
    const full = this.needFull || start - this.lastFullAt >= this.opts.syncPeriodMs;
    const changes = this.tracker.take();
    const changeSeenAt = new Map(this.seenAt);
    this.seenAt.clear();
    const rebuildAll = full || this.nodeChanged;
    this.nodeChanged = false;
    let state: DesiredState | null = null;
    try {
      const desired = this.desiredAfter(changes.affectedServices, rebuildAll);
      state = desired.state;
      const result = await this.opts.dataplane.sync(state, full, desired.changed);
      this.lastState = state;
      this.needFull = result.failed.length > 0;
      // Services left unprogrammed (a full map) are retried by a full sync soon, not only on
      // the next change.
      if (this.needFull) this.runner.retryAfter(Math.min(this.opts.syncPeriodMs, Math.max(this.opts.minSyncPeriodMs, PARTIAL_FAILURE_RETRY_MS)));
      if (full) this.lastFullAt = start;
      const durationMs = this.clock.now() - start;
      this.log.info(
        { full, services: result.services, backends: result.backends, writes: result.writes, deletes: result.deletes, failed: result.failed.length, durationMs },
        'synced',
      );
      this.opts.onSync?.({ result, full, durationMs, error: null, changeSeenAt, state });
      this.resolveFirstSync?.();
      this.resolveFirstSync = null;
    } catch (err) {
      // What was taken from the trackers is lost to this sync: the next one rebuilds everything.
      this.needFull = true;
      // The changes are still unsynced: keep their first-seen times for the retry.
      for (const [s, t] of changeSeenAt) if (!this.seenAt.has(s)) this.seenAt.set(s, t);
      this.opts.onSync?.({ result: null, full, durationMs: this.clock.now() - start, error: err, changeSeenAt, state });
      throw err;
    }
  }
}
