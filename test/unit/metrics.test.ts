/*
 * The agent's metrics as Prometheus scrapes them: values after sync reports, kube-proxy's
 * buckets, datapath counters read at scrape time, and the /metrics server over real HTTP.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AgentMetrics, startMetricsServer, type DatapathCounters } from '../../src/sync/metrics.js';
import type { SyncReport } from '../../src/sync/agent.js';
import type { SyncResult } from '../../src/model/dataplane.js';
import { ConfigError } from '../../src/errors.js';

const NOW = Date.UTC(2024, 4, 1, 12, 0, 0);

/** One sample's value from the text exposition; `series` is the name with its labels as printed. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    if (line.slice(0, at) === series) return Number(line.slice(at + 1));
  }
  return undefined;
}

/** The `le` bounds of a histogram, in order. */
function bucketBounds(text: string, name: string): string[] {
  return [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\}`, 'gm'))].map((m) => m[1]!);
}

function result(over: Partial<SyncResult> = {}): SyncResult {
  return { services: 3, backends: 5, writes: 7, deletes: 0, failed: [], changed: [], ...over };
}

function report(over: Partial<SyncReport> = {}): SyncReport {
  return { result: result(), full: false, durationMs: 12, error: null, changeSeenAt: new Map(), state: null, frontendConflicts: 0, ...over };
}

describe('AgentMetrics', () => {
  test('a successful sync sets the sync, programming and programmed-state metrics', async () => {
    const m = new AgentMetrics();
    m.queued(NOW - 2_000);
    m.observeSync(report({
      result: result({ failed: [{ service: 'default/c:http', error: 'map full' }] }),
      changeSeenAt: new Map([['default/a', NOW - 1_500], ['default/b', NOW - 100], ['default/c', NOW - 300]]),
    }), NOW);
    const text = await m.scrape();

    expect(sample(text, 'vipr_sync_proxy_rules_duration_seconds_count')).toBe(1);
    expect(sample(text, 'vipr_sync_proxy_rules_duration_seconds_sum')).toBeCloseTo(0.012);
    expect(sample(text, 'vipr_sync_proxy_rules_duration_seconds_bucket{le="0.008"}')).toBe(0);
    expect(sample(text, 'vipr_sync_proxy_rules_duration_seconds_bucket{le="0.016"}')).toBe(1);
    expect(sample(text, 'vipr_sync_partial_proxy_rules_duration_seconds_count')).toBe(1);
    expect(sample(text, 'vipr_sync_full_proxy_rules_duration_seconds_count')).toBe(0);

    // default/c had a port that failed: its change is not programmed, so not observed.
    expect(sample(text, 'vipr_network_programming_duration_seconds_count')).toBe(2);
    expect(sample(text, 'vipr_network_programming_duration_seconds_sum')).toBeCloseTo(1.6);
    expect(sample(text, 'vipr_network_programming_duration_seconds_bucket{le="0.25"}')).toBe(1);
    expect(sample(text, 'vipr_network_programming_duration_seconds_bucket{le="1"}')).toBe(1);
    expect(sample(text, 'vipr_network_programming_duration_seconds_bucket{le="2"}')).toBe(2);

    expect(sample(text, 'vipr_sync_proxy_rules_last_timestamp_seconds')).toBe(NOW / 1000);
    expect(sample(text, 'vipr_sync_proxy_rules_last_queued_timestamp_seconds')).toBe((NOW - 2_000) / 1000);
    expect(sample(text, 'vipr_services_programmed')).toBe(3);
    expect(sample(text, 'vipr_backends_programmed')).toBe(5);
    expect(sample(text, 'vipr_services_failed')).toBe(1);
    expect(sample(text, 'vipr_sync_failures_total')).toBe(0);
  });

  test('a failed sync counts a failure and its duration, and leaves the last success alone', async () => {
    const m = new AgentMetrics();
    m.observeSync(report({ full: true, durationMs: 3 }), NOW);
    m.observeSync(report({ result: null, error: new Error('boom'), full: true, durationMs: 40, changeSeenAt: new Map([['default/a', NOW]]) }), NOW + 5_000);
    const text = await m.scrape();
    expect(sample(text, 'vipr_sync_failures_total')).toBe(1);
    expect(sample(text, 'vipr_sync_proxy_rules_duration_seconds_count')).toBe(2);
    expect(sample(text, 'vipr_sync_full_proxy_rules_duration_seconds_count')).toBe(2);
    expect(sample(text, 'vipr_sync_proxy_rules_last_timestamp_seconds')).toBe(NOW / 1000);
    expect(sample(text, 'vipr_network_programming_duration_seconds_count')).toBe(0);
    expect(sample(text, 'vipr_services_programmed')).toBe(3);
  });

  test('informer restarts by resource and manifest problems', async () => {
    const m = new AgentMetrics();
    m.informerRestart('services');
    m.informerRestart('services');
    m.informerRestart('endpointslices');
    m.manifestProblems(4);
    const text = await m.scrape();
    expect(sample(text, 'vipr_informer_restarts_total{resource="services"}')).toBe(2);
    expect(sample(text, 'vipr_informer_restarts_total{resource="endpointslices"}')).toBe(1);
    expect(sample(text, 'vipr_manifest_problems')).toBe(4);
    m.manifestProblems(0);
    expect(sample(await m.scrape(), 'vipr_manifest_problems')).toBe(0);
  });

  test('histograms use kube-proxy\'s buckets', async () => {
    const text = await new AgentMetrics().scrape();
    expect(bucketBounds(text, 'vipr_sync_proxy_rules_duration_seconds')).toEqual([
      '0.001', '0.002', '0.004', '0.008', '0.016', '0.032', '0.064', '0.128', '0.256', '0.512',
      '1.024', '2.048', '4.096', '8.192', '16.384', '+Inf',
    ]);
    const np = bucketBounds(text, 'vipr_network_programming_duration_seconds');
    expect(np.slice(0, 5)).toEqual(['0', '0.25', '0.5', '1', '2']);
    expect(np).toContain('59');
    expect(np).toContain('115');
    expect(np.slice(-3)).toEqual(['270', '300', '+Inf']);
    expect(np).toHaveLength(1 + 2 + 59 + 12 + 7 + 1);
  });

  test('datapath counters are read when scraped, not before', async () => {
    let reads = 0;
    let counters: DatapathCounters = { dnat: { packets: 10, bytes: 1500 }, drop_no_backend: { packets: 2, bytes: 120 } };
    const m = new AgentMetrics({
      datapathCounters: () => {
        reads++;
        return counters;
      },
    });
    expect(reads).toBe(0);
    let text = await m.scrape();
    expect(reads).toBeGreaterThan(0);
    expect(sample(text, 'vipr_datapath_packets_total{counter="dnat"}')).toBe(10);
    expect(sample(text, 'vipr_datapath_bytes_total{counter="dnat"}')).toBe(1500);
    expect(sample(text, 'vipr_datapath_packets_total{counter="drop_no_backend"}')).toBe(2);
    expect(text).toMatch(/^# TYPE vipr_datapath_packets_total counter$/m);

    counters = { dnat: { packets: 25, bytes: 3000 }, drop_no_backend: { packets: 2, bytes: 120 } };
    text = await m.scrape();
    expect(sample(text, 'vipr_datapath_packets_total{counter="dnat"}')).toBe(25);
    expect(sample(text, 'vipr_datapath_bytes_total{counter="dnat"}')).toBe(3000);
  });

  test('unreadable datapath counters leave those metrics empty, the scrape still works', async () => {
    const m = new AgentMetrics({
      datapathCounters: () => {
        throw new Error('map gone');
      },
    });
    m.manifestProblems(1);
    const text = await m.scrape();
    expect(sample(text, 'vipr_manifest_problems')).toBe(1);
    expect(text).not.toMatch(/^vipr_datapath_packets_total\{/m);
  });

  test('without a counters callback there are no datapath metrics', async () => {
    expect(await new AgentMetrics().scrape()).not.toContain('vipr_datapath_');
  });
});

describe('startMetricsServer', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  });

  test('serves /metrics in the Prometheus text format', async () => {
    const m = new AgentMetrics();
    m.observeSync(report(), NOW);
    const server = await startMetricsServer('127.0.0.1:0', m);
    servers.push(server);
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    const res = await fetch(`${base}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(sample(text, 'vipr_services_programmed')).toBe(3);
    expect(text).toMatch(/^# TYPE vipr_sync_proxy_rules_duration_seconds histogram$/m);

    expect((await fetch(`${base}/`)).status).toBe(404);
  });

  test('an address in use is a ConfigError naming the flag', async () => {
    const first = await startMetricsServer('127.0.0.1:0', new AgentMetrics());
    servers.push(first);
    const port = (first.address() as AddressInfo).port;
    const err = await startMetricsServer(`127.0.0.1:${port}`, new AgentMetrics()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(`--metrics-bind-address 127.0.0.1:${port}: address in use`);
  });

  test('a malformed address is a ConfigError before anything listens', async () => {
    await expect(startMetricsServer('localhost', new AgentMetrics())).rejects.toThrow(ConfigError);
  });
});
