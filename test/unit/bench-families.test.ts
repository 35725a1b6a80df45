/*
 * The bench's IPv6 rows, without root: the dual-stack Services it measures (an IPv6 cluster IP
 * and slice per Service, the IPv4 objects as before), where IPv6 traffic goes, results kept apart
 * by family, the report's IPv6 tables, the chart's IPv6 lines and --families.
 */
import { chartPoints } from '../../src/bench/chart.js';
import { parseFamilies } from '../../src/cli/bench.js';
import { benchManifestFiles, benchObjects, serviceVip, serviceVip6, targetFor } from '../../src/bench/plan.js';
import { formatReport } from '../../src/bench/report.js';
import { findResult, summarize, type BenchReport, type Sample } from '../../src/bench/results.js';
import { ConfigError } from '../../src/errors.js';

const IPS = ['10.244.0.11', '10.244.0.12'];
const IPS6 = ['fd00:10:244::11', 'fd00:10:244::12'];

describe('bench Services in both families', () => {
  it('gives Service i the IPv6 cluster IP fd00:10:100::<i+1>, canonical, up to 100,000', () => {
    expect([serviceVip6(0), serviceVip6(65534), serviceVip6(65535), serviceVip6(99_999)]).toEqual([
      'fd00:10:100::1', 'fd00:10:100::ffff', 'fd00:10:100::1:0', 'fd00:10:100::1:86a0',
    ]);
  });

  it('makes every Service dual-stack with a slice per family, and leaves the IPv4-only objects as they were', () => {
    const dual = benchObjects(3, IPS, 'node', IPS6);
    expect(dual.map((o) => `${o.kind as string}:${(o.metadata as { name: string }).name}:${(o as { addressType?: string }).addressType ?? ''}`)).toEqual([
      'Service:svc-000000:', 'EndpointSlice:svc-000000-bench:IPv4', 'EndpointSlice:svc-000000-bench-ipv6:IPv6',
      'Service:svc-000001:', 'EndpointSlice:svc-000001-bench:IPv4', 'EndpointSlice:svc-000001-bench-ipv6:IPv6',
      'Service:svc-000002:', 'EndpointSlice:svc-000002-bench:IPv4', 'EndpointSlice:svc-000002-bench-ipv6:IPv6',
    ]);
    expect(dual[6]?.spec).toMatchObject({
      clusterIP: serviceVip(2), clusterIPs: [serviceVip(2), 'fd00:10:100::3'], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'RequireDualStack',
    });
    expect((dual[8] as { endpoints: { addresses: string[] }[] }).endpoints.map((e) => e.addresses[0])).toEqual(IPS6);
    const v4 = benchObjects(3, IPS, 'node');
    expect(v4).toHaveLength(6);
    expect(Object.keys(v4[0]?.spec as object)).toEqual(['type', 'clusterIP', 'clusterIPs', 'ports']);
    // Files still hold 10,000 Services each, slices and all.
    expect([...benchManifestFiles(20_001, IPS, 'node', IPS6).values()].map((f) => (f.items as unknown[]).length)).toEqual([30_000, 30_000, 3]);
  });

  it('sends IPv6 traffic to [vip]:port, and direct to the first IPv6 backend', () => {
    expect(targetFor('bpf', 100, 'last', IPS6[0] as string, 'IPv6')).toEqual({ tcp: '[fd00:10:100::64]:80', udp: '[fd00:10:100::64]:53' });
    expect(targetFor('direct', 100, 'last', IPS6[0] as string, 'IPv6')).toEqual({ tcp: '[fd00:10:244::11]:9000', udp: '[fd00:10:244::11]:9053' });
    expect(targetFor('bpf', 100, 'last', IPS[0] as string)).toEqual({ tcp: '10.100.0.100:80', udp: '10.100.0.100:53' });
  });
});

describe('bench results by family', () => {
  const sample = (mode: Sample['mode'], family: 'IPv4' | 'IPv6', p50: number): Sample => ({
    mode, services: 1, placement: mode === 'direct' ? 'none' : 'last', metric: 'crr', family, round: 1, p50, p99: p50 * 2, rate: 1e6 / p50, errors: 0,
  });
  const results = summarize([sample('direct', 'IPv4', 50), sample('bpf', 'IPv4', 60), sample('direct', 'IPv6', 55), sample('bpf', 'IPv6', 70)]);
  const report: BenchReport = {
    env: {
      kernel: '6.18', cpu: 'test', cpus: 2, tools: {}, date: '2026-11-30T00:00:00.000Z', command: 'vipr bench', cpuDmaLatency: 'held at 0',
      pinnedCpu: 1, families: ['IPv4', 'IPv6'], backends: 3, rounds: 1, wallSeconds: 1, loadAverage: { start: [0], end: [0] },
    },
    results, unavailable: [], failures: [], placements: [],
  };

  it('keeps the families apart, each row labelled; a row without a family is IPv4', () => {
    expect(results.map((r) => `${r.mode} ${r.family} ${r.p50}`)).toEqual(['direct IPv4 50', 'bpf IPv4 60', 'direct IPv6 55', 'bpf IPv6 70']);
    expect(findResult(results, { mode: 'bpf', services: 1, placement: 'last', metric: 'crr' })?.p50).toBe(60);
    expect(findResult(results, { mode: 'bpf', services: 1, placement: 'last', metric: 'crr', family: 'IPv6' })?.p50).toBe(70);
    const { family: _family, ...old } = results[1] as (typeof results)[number];
    expect(findResult([old], { mode: 'bpf', services: 1, placement: 'last', metric: 'crr' })?.p50).toBe(60);
  });

  it('prints an IPv6 table beside the IPv4 one, each against its own family\'s direct floor', () => {
    const text = formatReport(report);
    expect(text).toMatch(/^TCP new connection: connect, request\/response, close \(crr\), service placed last, IPv4$/m);
    expect(text).toMatch(/^TCP new connection: connect, request\/response, close \(crr\), service placed last, IPv6$/m);
    const six = text.slice(text.indexOf('service placed last, IPv6'));
    expect(six).toMatch(/^ {2}bpf +70\.0\/140\.0 µs ×1\.27 /m);
  });

  it('draws IPv6 lines as "<mode> IPv6"', () => {
    expect(chartPoints(report).map((p) => p.mode)).toEqual(['direct', 'bpf', 'direct IPv6', 'bpf IPv6']);
  });

  it('--families takes ipv4,ipv6 (the default) or ipv4, nothing else', () => {
    expect(parseFamilies(undefined)).toEqual(['IPv4', 'IPv6']);
    expect(parseFamilies('ipv6,ipv4')).toEqual(['IPv4', 'IPv6']);
    expect(parseFamilies('ipv4')).toEqual(['IPv4']);
    expect(() => parseFamilies('ipv6')).toThrow(ConfigError);
    expect(() => parseFamilies('ipv4,ipx')).toThrow(/^--families ipv4,ipx: expected ipv4,ipv6 or ipv4/);
  });
});
