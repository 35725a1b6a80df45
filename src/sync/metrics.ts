/*
 * The agent's Prometheus metrics, named after kube-proxy's (pkg/proxy/metrics/metrics.go) with
 * `vipr_` in place of `kubeproxy_` and the same buckets, so existing dashboards and alerts carry
 * over by a prefix change. Metrics kube-proxy has no counterpart for (programmed counts, the
 * datapath's counters) follow the same naming habits.
 *
 * Everything is fed by the agent's sync reports and source events; the datapath counters are read
 * from the pinned stats map when Prometheus scrapes, so nothing polls in the background.
 */
import type { Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SyncReport } from './agent.js';
import { listenOn } from './health.js';
import { componentLogger } from '../log.js';

const log = componentLogger('metrics');

/** prometheus.ExponentialBuckets(start, factor, count). */
function exponentialBuckets(start: number, factor: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start * factor ** i);
}

/** prometheus.LinearBuckets(start, width, count). */
function linearBuckets(start: number, width: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => start + width * i);
}

/** kube-proxy's sync latency buckets: 1 ms doubling up to ~16 s. */
export const SYNC_DURATION_BUCKETS = exponentialBuckets(0.001, 2, 15);

/**
 * kube-proxy's network programming buckets: 0 (component-base's MergeBuckets starts with it),
 * 0.25 s, 0.5 s, every second to 59 s, every 5 s to 115 s, every 30 s to 5 min.
 */
export const NETWORK_PROGRAMMING_BUCKETS = [
  0,
  ...linearBuckets(0.25, 0.25, 2),
  ...linearBuckets(1, 1, 59),
  ...linearBuckets(60, 5, 12),
  ...linearBuckets(120, 30, 7),
];

export type DatapathCounters = Record<string, { packets: number; bytes: number }>;

export interface AgentMetricsOptions {
  /** Read at scrape time (e.g. `() => readCounters(maps)`); absent in modes without BPF stats. */
  datapathCounters?: () => DatapathCounters;
}

/** Does a failed service-port key (`ns/name:port`) belong to the Service `ns/name`? */
function belongsTo(servicePort: string, service: string): boolean {
  return servicePort === service || servicePort.startsWith(`${service}:`);
}

export class AgentMetrics {
  /** A registry of its own: nothing global, several agents (tests) never clash. */
  readonly registry = new Registry();

  private readonly syncDuration: Histogram;
  private readonly syncFullDuration: Histogram;
  private readonly syncPartialDuration: Histogram;
  private readonly networkProgramming: Histogram;
  private readonly lastSync: Gauge;
  private readonly lastQueued: Gauge;
  private readonly servicesProgrammed: Gauge;
  private readonly backendsProgrammed: Gauge;
  private readonly servicesFailed: Gauge;
  private readonly frontendConflicts: Gauge;
  private readonly syncFailures: Counter;
  private readonly informerRestarts: Counter<'resource'>;
  private readonly manifestProblemsGauge: Gauge;

  constructor(opts: AgentMetricsOptions = {}) {
    const registers = [this.registry];
    // The process and Node.js runtime metrics (RSS, V8 heap, event loop lag), as kube-proxy
    // exposes Go's: where the agent's memory goes, read at scrape time.
    collectDefaultMetrics({ register: this.registry });
    this.syncDuration = new Histogram({
      name: 'vipr_sync_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds',
      buckets: SYNC_DURATION_BUCKETS,
      registers,
    });
    this.syncFullDuration = new Histogram({
      name: 'vipr_sync_full_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for full resyncs',
      buckets: SYNC_DURATION_BUCKETS,
      registers,
    });
    this.syncPartialDuration = new Histogram({
      name: 'vipr_sync_partial_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for partial resyncs',
      buckets: SYNC_DURATION_BUCKETS,
      registers,
    });
    this.networkProgramming = new Histogram({
      name: 'vipr_network_programming_duration_seconds',
      help: 'In Cluster Network Programming Latency in seconds: from a Service or EndpointSlice change being seen to its sync',
      buckets: NETWORK_PROGRAMMING_BUCKETS,
      registers,
    });
    this.lastSync = new Gauge({
      name: 'vipr_sync_proxy_rules_last_timestamp_seconds',
      help: 'The last time proxy rules were successfully synced',
      registers,
    });
    this.lastQueued = new Gauge({
      name: 'vipr_sync_proxy_rules_last_queued_timestamp_seconds',
      help: 'The last time a sync of proxy rules was queued',
      registers,
    });
    this.servicesProgrammed = new Gauge({
      name: 'vipr_services_programmed',
      help: 'Service frontends programmed in the dataplane after the last successful sync',
      registers,
    });
    this.backendsProgrammed = new Gauge({
      name: 'vipr_backends_programmed',
      help: 'Backends programmed in the dataplane after the last successful sync',
      registers,
    });
    this.servicesFailed = new Gauge({
      name: 'vipr_services_failed',
      help: 'Services or service ports the last sync could not build or program (e.g. a full map); their names are logged',
      registers,
    });
    this.frontendConflicts = new Gauge({
      name: 'vipr_frontend_conflicts',
      help: 'Frontends a Service claims but another owns (not programmed for it; both names are logged)',
      registers,
    });
    this.syncFailures = new Counter({
      name: 'vipr_sync_failures_total',
      help: 'Syncs that failed as a whole (retried with backoff)',
      registers,
    });
    this.informerRestarts = new Counter({
      name: 'vipr_informer_restarts_total',
      help: 'Kubernetes informers restarted after an error, by resource',
      labelNames: ['resource'] as const,
      registers,
    });
    this.manifestProblemsGauge = new Gauge({
      name: 'vipr_manifest_problems',
      help: 'Manifest files or objects ignored in the last read of the manifest directory',
      registers,
    });

    const read = opts.datapathCounters;
    if (read) {
      // A stats map that cannot be read (e.g. unpinned by `vipr cleanup`) leaves the metrics
      // empty for that scrape rather than failing the whole scrape.
      const readOrNone = (): DatapathCounters => {
        try {
          return read();
        } catch (err) {
          log.warn({ err }, 'cannot read the datapath counters');
          return {};
        }
      };
      new Counter({
        name: 'vipr_datapath_packets_total',
        help: 'Packets seen by the BPF datapath, by counter (events and drop reasons)',
        labelNames: ['counter'] as const,
        registers,
        collect(this: Counter<'counter'>) {
          this.reset();
          for (const [counter, v] of Object.entries(readOrNone())) this.inc({ counter }, v.packets);
        },
      });
      new Counter({
        name: 'vipr_datapath_bytes_total',
        help: 'Bytes seen by the BPF datapath, by counter (events and drop reasons)',
        labelNames: ['counter'] as const,
        registers,
        collect(this: Counter<'counter'>) {
          this.reset();
          for (const [counter, v] of Object.entries(readOrNone())) this.inc({ counter }, v.bytes);
        },
      });
    }
  }

  /** Records one sync (successful or not) that ended at `now` (ms since the epoch). */
  observeSync(report: SyncReport, now: number): void {
    const seconds = report.durationMs / 1000;
    // kube-proxy observes the latency of every sync, failed ones included.
    this.syncDuration.observe(seconds);
    (report.full ? this.syncFullDuration : this.syncPartialDuration).observe(seconds);
    if (report.error !== null || report.result === null) {
      this.syncFailures.inc();
      return;
    }
    const result = report.result;
    this.lastSync.set(now / 1000);
    this.servicesProgrammed.set(result.services);
    this.backendsProgrammed.set(result.backends);
    this.servicesFailed.set(result.failed.length);
    this.frontendConflicts.set(report.frontendConflicts);
    if (result.failed.length > 0) {
      log.warn({ services: result.failed.map((f) => f.service) }, `${result.failed.length} service port(s) not programmed`);
    }
    // A Service's change is programmed only if none of its ports failed.
    for (const [service, seenAt] of report.changeSeenAt) {
      if (result.failed.some((f) => belongsTo(f.service, service))) continue;
      this.networkProgramming.observe(Math.max(0, now - seenAt) / 1000);
    }
  }

  /** A sync was requested at `now` (ms since the epoch). */
  queued(now: number): void {
    this.lastQueued.set(now / 1000);
  }

  /** An informer for `resource` (e.g. `services`, `endpointslices`) was restarted after an error. */
  informerRestart(resource: string): void {
    this.informerRestarts.inc({ resource });
  }

  /** Problems found in the last read of the manifest directory. */
  manifestProblems(n: number): void {
    this.manifestProblemsGauge.set(n);
  }

  private conntrackGauges: { entries: Gauge<'map'>; max: Gauge<'map'>; pressure: Gauge<'map'>; deleted: Counter<'map'>; gcSeconds: Gauge } | null = null;

  /**
   * One conntrack GC pass: per map (by pinned name) the entries it left, the map's size, their
   * ratio (pressure), and what it deleted; and how long the pass took.
   */
  conntrackGc(maps: Array<{ map: string; entries: number; maxEntries: number; deleted: number }>, seconds: number): void {
    if (this.conntrackGauges === null) {
      const registers = [this.registry];
      this.conntrackGauges = {
        entries: new Gauge({ name: 'vipr_conntrack_entries', help: 'Entries in each conntrack map after the last GC pass', labelNames: ['map'] as const, registers }),
        max: new Gauge({ name: 'vipr_conntrack_max_entries', help: 'Size (max_entries) of each conntrack map', labelNames: ['map'] as const, registers }),
        pressure: new Gauge({ name: 'vipr_conntrack_pressure', help: 'Entries over max_entries of each conntrack map after the last GC pass (0..1)', labelNames: ['map'] as const, registers }),
        deleted: new Counter({ name: 'vipr_conntrack_gc_deleted_total', help: 'Conntrack entries deleted by GC (expired flows, orphaned replies)', labelNames: ['map'] as const, registers }),
        gcSeconds: new Gauge({ name: 'vipr_conntrack_gc_duration_seconds', help: 'Duration of the last conntrack GC pass (in the kernel, off the event loop)', registers }),
      };
    }
    const g = this.conntrackGauges;
    for (const m of maps) {
      g.entries.set({ map: m.map }, m.entries);
      g.max.set({ map: m.map }, m.maxEntries);
      g.pressure.set({ map: m.map }, m.maxEntries > 0 ? m.entries / m.maxEntries : 0);
      g.deleted.inc({ map: m.map }, m.deleted);
    }
    g.gcSeconds.set(seconds);
  }

  /** The Prometheus text exposition of every metric. */
  scrape(): Promise<string> {
    return this.registry.metrics();
  }
}

/** Serves /metrics on `bindAddress` (kube-proxy's --metrics-bind-address, default 127.0.0.1:10249). */
export function startMetricsServer(bindAddress: string, metrics: AgentMetrics): Promise<Server> {
  return listenOn('--metrics-bind-address', bindAddress, (req, res) => {
    const path = new URL(req.url ?? '/', 'http://metrics').pathname;
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('404 page not found\n');
      return;
    }
    metrics.registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'Content-Type': metrics.registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        log.error({ err }, 'collecting metrics failed');
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end('collecting metrics failed\n');
      },
    );
  });
}
