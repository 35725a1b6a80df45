/*
 * The bench at scale, without root: 100,000 Services are accepted and written as manifest files
 * the manifest source can read (each under its 64 MiB bound, every object once, in order); the
 * churn metric changes only unmeasured Services and none above 10,000; and its readers of a
 * dataplane find a Service's endpoints where vipr's own renderers put them (the iptables reader
 * against the real renderer's output, at a size where kube-proxy drops the per-endpoint comments).
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CHURN_MAX_SERVICES, MAX_SERVICES, benchEndpointSlice, benchManifestFiles, benchObjects, churnPool, placementIndex, serviceName,
} from '../../src/bench/plan.js';
import { iptablesEndpointCounts, ipvsEndpointCounts, nftMonitorDispatch } from '../../src/bench/churn.js';
import { metricValue } from '../../src/bench/runner.js';
import { parseServiceCounts } from '../../src/cli/bench.js';
import { loadManifestDir, MAX_FILE_BYTES } from '../../src/sources/manifest.js';
import { buildDesiredState } from '../../src/model/build.js';
import { renderIptables } from '../../src/render/iptables.js';
import { renderOptionsFromCli } from '../../src/modes/cli.js';

const IPS = ['10.244.0.11', '10.244.0.12', '10.244.0.13'];

describe('bench service counts', () => {
  test('--services accepts 100,000 and refuses more', () => {
    expect(MAX_SERVICES).toBe(100_000);
    expect(parseServiceCounts('1,10000,100000', false)).toEqual([1, 10_000, 100_000]);
    expect(() => parseServiceCounts('100001', false)).toThrow('--services 100001: expected whole numbers from 1 to 100000, comma-separated');
  });

  test('100,000 Services are written as files of 10,000, each readable by the manifest source, every object once in order', () => {
    const files = benchManifestFiles(100_000, IPS, 'node');
    expect([...files.keys()]).toEqual(Array.from({ length: 10 }, (_, i) => `services-${String(i).padStart(2, '0')}.json`));
    const names: string[] = [];
    for (const list of files.values()) {
      const items = list.items as Array<{ kind: string; metadata: { name: string } }>;
      expect(items.length).toBe(20_000);
      expect(JSON.stringify(list).length).toBeLessThan(MAX_FILE_BYTES);
      for (const o of items) if (o.kind === 'Service') names.push(o.metadata.name);
    }
    expect(names.length).toBe(100_000);
    expect(names[0]).toBe(serviceName(0));
    expect(names[99_999]).toBe(serviceName(99_999));
    expect(new Set(names).size).toBe(100_000);
  });

  test('the manifest source reads the split files as the same objects as one list', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vipr-bench-scale-'));
    try {
      for (const [name, list] of benchManifestFiles(25_001, IPS, 'node')) writeFileSync(join(dir, name), JSON.stringify(list));
      expect(statSync(join(dir, 'services-02.json')).size).toBeGreaterThan(0);
      const load = await loadManifestDir(dir);
      expect(load.problems.map(String)).toEqual([]);
      expect([load.objects.services.size, load.objects.endpointSlices.size]).toEqual([25_001, 25_001]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('churn', () => {
  test('changes every Service but the measured ones, and none above 10,000 or among 1', () => {
    const pool = churnPool(100);
    expect(pool.length).toBe(98);
    expect(pool).not.toContain(placementIndex(100, 'last'));
    expect(pool).not.toContain(placementIndex(100, 'middle'));
    expect(churnPool(CHURN_MAX_SERVICES).length).toBe(CHURN_MAX_SERVICES - 2);
    expect(churnPool(CHURN_MAX_SERVICES + 1)).toEqual([]);
    expect(churnPool(1)).toEqual([]);
  });

  test("the iptables reader counts each Service's endpoints in what the renderer writes, comments dropped at 1,500 Services", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vipr-bench-churn-'));
    try {
      const objects = benchObjects(1500, IPS, 'node');
      // Service 7 down to one endpoint, 8 to none: what the stream's changes look like.
      const one = objects.findIndex((o) => (o.metadata as { name: string }).name === `${serviceName(7)}-bench`);
      objects[one] = benchEndpointSlice(7, 1500, IPS.slice(0, 1), 'node');
      const none = objects.findIndex((o) => (o.metadata as { name: string }).name === `${serviceName(8)}-bench`);
      objects[none] = benchEndpointSlice(8, 1500, [], 'node');
      writeFileSync(join(dir, 'services.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }));
      const load = await loadManifestDir(dir);
      const state = buildDesiredState(load.objects, { name: 'node', zone: null, ips: [] });
      const save = renderIptables(state, renderOptionsFromCli({}));
      // 4,500 endpoints: kube-proxy's large-cluster mode leaves the service -> endpoint rules uncommented.
      expect(save).not.toMatch(/--comment "default\/svc-000006 -> /);
      expect([...iptablesEndpointCounts(save, [6, 7, 8, 1200])]).toEqual([[6, 3], [7, 1], [8, 0], [1200, 3]]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the nftables reader takes a service chain's endpoints from the rule nft monitor prints as it commits", () => {
    // Lines as `nft monitor rules` (nftables 1.0.6) printed them while vipr's nftables mode dropped an endpoint.
    const added = 'add rule ip kube-proxy service-7XTNV6ID-default/svc-000001/tcp/ numgen random mod 2 vmap { 0 : goto endpoint-UNDQSIWG-default/svc-000001/tcp/__10.244.0.11/9000, 1 : goto endpoint-ITIDD4G4-default/svc-000001/tcp/__10.244.0.12/9000 }';
    expect(nftMonitorDispatch(added)).toEqual({ chain: 'service-7XTNV6ID-default/svc-000001/tcp/', endpoints: 2 });
    expect(nftMonitorDispatch('delete rule ip kube-proxy service-7XTNV6ID-default/svc-000001/tcp/ handle 438')).toBeNull();
    expect(nftMonitorDispatch('add rule ip kube-proxy endpoint-UNDQSIWG-default/svc-000001/tcp/__10.244.0.11/9000 meta l4proto tcp dnat to 10.244.0.11:9000')).toBeNull();
  });

  test('the IPVS reader counts the real servers of each TCP virtual server', () => {
    const listing = [
      'IP Virtual Server version 1.2.1 (size=4096)',
      'Prot LocalAddress:Port Scheduler Flags',
      '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn',
      'TCP  10.100.0.1:80 rr',
      '  -> 10.244.0.11:9000             Masq    1      0          0',
      '  -> 10.244.0.12:9000             Masq    1      0          0',
      'UDP  10.100.0.2:80 rr',
      '  -> 10.244.0.11:9000             Masq    1      0          0',
      'TCP  10.100.0.2:80 rr',
    ].join('\n');
    expect([...ipvsEndpointCounts(listing, [0, 1, 2])]).toEqual([[0, 2], [1, 0], [2, 0]]);
  });

  test("the agent's heap is read from its exposition, not from a labelled or prefixed neighbour", () => {
    const text = [
      '# TYPE nodejs_heap_size_used_bytes gauge',
      'nodejs_heap_size_used_bytes_total{kind="x"} 1',
      'nodejs_heap_size_used_bytes 45678592',
    ].join('\n');
    expect(metricValue(text, 'nodejs_heap_size_used_bytes')).toBe(45678592);
    expect(metricValue(text, 'nodejs_heap_size_total_bytes')).toBeNull();
  });
});
