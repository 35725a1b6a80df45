/*
 * The node agent's sync loop, as kube-proxy's: sources report objects, the change tracker keeps
 * only real changes, a bounded-frequency runner coalesces them into syncs, and each sync builds
 * the desired state and hands it to the dataplane. After a failure the next sync is full; a full
 * sync also happens every `syncPeriodMs`.
 *
 * Nothing syncs before the source has completed one full read (`sourceSynced()`, as kube-proxy
 * waits for its informers): a sync from a partial view would delete what the rest programmed.
 * Each Service is built on its own: one that throws is skipped and reported, never the sync.
 * Frontend ownership (src/model/ownership.ts) is kept across syncs, so a partial sync that changes
 * one Service also rebuilds the Services that gained or lost a frontend by it.
 */
import type { ClusterObjects, EndpointSliceObject, ServiceObject } from '../model/k8s.js';
import type { DesiredState, NodeInfo, ServiceEntry } from '../model/types.js';
import {
  DEFAULT_BUILD_OPTIONS, UnservedFamilies, servedFamilies, admitService, buildFailure, buildServiceEntries, slicesByService, type BuildOptions,
} from '../model/build.js';
import { SortedEntries } from '../model/sorted-entries.js';
import { TimeSlice } from '../time-slice.js';
import { FrontendOwners, describeConflict } from '../model/ownership.js';
import { ClusterChangeTracker, type ClusterDiff } from './tracker.js';
import type { ObjectDeltas } from '../sources/types.js';
import { BoundedFrequencyRunner, realClock, type Clock, type RunResult } from './runner.js';
import type { Dataplane, SyncResult } from '../model/dataplane.js';
import { componentLogger, type Logger } from '../log.js';

/** The longest a sync runs before letting the event loop serve others (health, watches). */
const SLICE_MS = 20;

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
  /** Frontend claims not programmed because another Service owns the frontend. */
  frontendConflicts: number;
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
  /** The node's options for Services (--external-ip-cidrs, --nodeport-range, the families it serves). */
  build?: BuildOptions;
  /** Builds one Service's entries; replaced only to inject faults in tests. */
  buildService?: typeof buildServiceEntries;
}

export class Agent {
  private readonly tracker = new ClusterChangeTracker();
  private readonly runner: BoundedFrequencyRunner;
  private readonly log: Logger;
  private readonly clock: Clock;
  private node: NodeInfo;
  private needFull = true;
  /** When the last successful full sync ended: the sync period counts from there, as kube-proxy's lastFullSync. */
  private lastFullAt = 0;
  private loopDone: Promise<void> | null = null;
  /** First time a still-unsynced change to each Service was seen. */
  private readonly seenAt = new Map<string, number>();
  private lastState: DesiredState | null = null;
  /** The last built entries, by Service (`namespace/name`), and all of them in key order. */
  private entries = new Map<string, ServiceEntry[]>();
  private readonly sorted = new SortedEntries();
  /** Yields to the event loop during long syncs, so /healthz and watch events are served. */
  private readonly slice = new TimeSlice(SLICE_MS);
  /** Services whose last build threw, with the line reported (they are retried on every sync). */
  private buildFailures = new Map<string, string>();
  private readonly owners = new FrontendOwners();
  /** A family the node does not serve is said once for the agent's life, not per sync. */
  private readonly unserved = new UnservedFamilies();
  /** The conflict lines last logged per Service: a conflict is logged once, when it appears. */
  private readonly reportedConflicts = new Map<string, Set<string>>();
  /** The next sync rebuilds every entry (the first one, after a node change or a thrown sync). */
  private rebuildAll = true;
  private sourceReady = false;
  private startRequested = false;
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

  /**
   * Starts the sync loop; the first sync is a full one, and waits for `sourceSynced()`: until the
   * source has read everything once, the dataplane keeps what it has.
   */
  start(): void {
    this.opts.onQueued?.(this.clock.now());
    this.loopDone = this.runner.loop();
    this.startRequested = true;
    if (this.sourceReady) this.runner.run();
  }

  /** The source has completed one full read: syncing may begin. */
  sourceSynced(): void {
    if (this.sourceReady) return;
    this.sourceReady = true;
    if (this.startRequested) this.runner.run();
  }

  async stop(): Promise<void> {
    await this.runner.stop();
    await this.loopDone;
  }

  /** A source's complete current set of objects: its first view, or a manifest reload. */
  updateObjects(objects: ClusterObjects): void {
    this.noteChanges(this.tracker.applySnapshot(objects));
  }

  /**
   * Only what changed (informer events, one manifest file): each object's current version goes
   * to the change tracker, which keeps the version the last sync saw and drops no-ops.
   */
  applyDeltas(deltas: ObjectDeltas): void {
    const diff: ClusterDiff = { changed: false, affectedServices: new Set() };
    const merge = (d: ClusterDiff): void => {
      diff.changed ||= d.changed;
      for (const s of d.affectedServices) diff.affectedServices.add(s);
    };
    for (const [key, change] of deltas.services) merge(this.tracker.setService(key, change.current));
    for (const [key, change] of deltas.endpointSlices) merge(this.tracker.setEndpointSlice(key, change.current));
    this.noteChanges(diff);
  }

  private noteChanges(diff: ClusterDiff): void {
    if (!diff.changed) return;
    const now = this.clock.now();
    for (const s of diff.affectedServices) if (!this.seenAt.has(s)) this.seenAt.set(s, now);
    this.opts.onQueued?.(now);
    if (this.sourceReady) this.runner.run();
  }

  /** The node's addresses or zone changed (they decide local endpoints and NodePort IPs). */
  updateNode(node: NodeInfo): void {
    if (JSON.stringify(node) === JSON.stringify(this.node)) return;
    this.node = node;
    this.rebuildAll = true;
    this.opts.onQueued?.(this.clock.now());
    if (this.sourceReady) this.runner.run();
  }

  /**
   * The desired state after the pending changes, and which Services it may change (null: all).
   * Only the Services the change trackers name are rebuilt, as kube-proxy's partial syncs, plus
   * those whose frontends changed owner by it; the first sync, a node change or a sync after a
   * thrown one rebuilds everything. Services whose last build threw are tried again each time.
   */
  private async desiredAfter(changedServices: ReadonlySet<string>): Promise<{ state: DesiredState; changed: ReadonlySet<string> | null; failed: SyncResult['failed'] }> {
    const objects = this.tracker.view();
    const all = this.rebuildAll || this.lastState === null;
    const names = new Set<string>(all ? [...objects.services.keys(), ...this.owners.services(), ...this.entries.keys()] : changedServices);
    for (const name of this.buildFailures.keys()) names.add(name);
    // The families served follow the node's addresses as they are now (--node-ip, or the Node
    // object's addresses from the kube source, which may change): a family it has none of is not.
    const base = this.opts.build ?? DEFAULT_BUILD_OPTIONS;
    const nodeFamilies = servedFamilies(this.node.ips);
    const buildOpts: BuildOptions = { ...base, families: base.families.filter((f) => nodeFamilies.includes(f)) };
    const warn = (message: string): void => this.log.warn(message);
    const failures = new Map<string, string>();
    const admit = (name: string): ServiceObject | null => {
      const svc = objects.services.get(name);
      if (svc === undefined) return null;
      try {
        return admitService(svc, buildOpts, warn, this.unserved);
      } catch (err) {
        failures.set(name, buildFailure(name, err));
        return null;
      }
    };
    const admitted = new Map<string, ServiceObject | null>();
    const rebuild = new Set(names);
    for (const name of names) {
      const a = admit(name);
      admitted.set(name, a);
      for (const other of this.owners.set(name, a)) rebuild.add(other);
      if (this.slice.due()) await this.slice.yield();
    }
    // A full rebuild groups every slice once; a partial one asks the tracker's index.
    const grouped = all ? slicesByService(objects) : null;
    const slicesOf = (name: string): EndpointSliceObject[] => (grouped ? grouped.get(name) ?? [] : this.tracker.slicesOf(name));
    const build = this.opts.buildService ?? buildServiceEntries;
    const before: ServiceEntry[] = [];
    const after: ServiceEntry[] = [];
    for (const name of rebuild) {
      before.push(...(this.entries.get(name) ?? []));
      this.entries.delete(name);
      this.reportConflicts(name);
      const svc = admitted.has(name) ? admitted.get(name) : admit(name);
      if (svc === undefined || svc === null) continue;
      try {
        const built = build(svc, slicesOf(name), this.node, this.owners, warn);
        if (built.length > 0) this.entries.set(name, built);
        after.push(...built);
      } catch (err) {
        failures.set(name, buildFailure(name, err));
      }
      if (this.slice.due()) await this.slice.yield();
    }
    for (const name of rebuild) {
      const line = failures.get(name);
      if (line === undefined) {
        this.buildFailures.delete(name);
        continue;
      }
      if (this.buildFailures.get(name) !== line) this.log.error(line);
      this.buildFailures.set(name, line);
    }
    if (all) this.sorted.reset([...this.entries.values()].flat());
    else this.sorted.replace(before, after);
    const failed = [...this.buildFailures].map(([service, error]) => ({ service, error }));
    return {
      state: { node: { ...this.node, ips: [...this.node.ips] }, services: this.sorted.snapshot(), byService: this.entries },
      changed: all ? null : rebuild,
      failed,
    };
  }

  /** Logs the conflicts of `service` that were not logged before (once per change). */
  private reportConflicts(service: string): void {
    const lines = new Set(this.owners.conflicts(service).map(describeConflict));
    const before = this.reportedConflicts.get(service);
    for (const line of lines) if (!before?.has(line)) this.log.warn(line);
    if (lines.size === 0) this.reportedConflicts.delete(service);
    else this.reportedConflicts.set(service, lines);
  }

  private async syncOnce(): Promise<void> {
    const start = this.clock.now();
    const full = this.needFull || start - this.lastFullAt >= this.opts.syncPeriodMs;
    const changes = this.tracker.take();
    const changeSeenAt = new Map(this.seenAt);
    this.seenAt.clear();
    let state: DesiredState | null = null;
    try {
      this.slice.begin();
      const desired = await this.desiredAfter(changes.affectedServices);
      this.rebuildAll = false;
      state = desired.state;
      // Re-read what is installed only on start and after a failure; a periodic full sync
      // compares everything against what this agent wrote.
      const result = await this.opts.dataplane.sync(state, full, desired.changed, this.needFull);
      this.lastState = state;
      // Entries the dataplane refused (a full map) may fit later: they are retried by a full
      // sync soon, not only on the next change. A Service whose build failed is rebuilt on
      // every sync anyway: no map re-read for it.
      this.needFull = result.failed.length > 0;
      result.failed.push(...desired.failed);
      if (this.needFull) this.runner.retryAfter(Math.min(this.opts.syncPeriodMs, Math.max(this.opts.minSyncPeriodMs, PARTIAL_FAILURE_RETRY_MS)));
      // From its end: counted from its start, a full sync longer than the period (iptables-nft at
      // 1,000 Services on a slow node: 71 s against 30 s) made every later sync a full one.
      if (full) this.lastFullAt = this.clock.now();
      const durationMs = this.clock.now() - start;
      this.log.info(
        { full, services: result.services, backends: result.backends, writes: result.writes, deletes: result.deletes, failed: result.failed.length, durationMs },
        'synced',
      );
      this.opts.onSync?.({ result, full, durationMs, error: null, changeSeenAt, state, frontendConflicts: this.owners.conflictCount });
      this.resolveFirstSync?.();
      this.resolveFirstSync = null;
    } catch (err) {
      // What was taken from the trackers is lost to this sync: the next one rebuilds everything.
      this.needFull = true;
      this.rebuildAll = true;
      // The changes are still unsynced: keep their first-seen times for the retry.
      for (const [s, t] of changeSeenAt) if (!this.seenAt.has(s)) this.seenAt.set(s, t);
      this.opts.onSync?.({ result: null, full, durationMs: this.clock.now() - start, error: err, changeSeenAt, state, frontendConflicts: this.owners.conflictCount });
      throw err;
    }
  }
}
