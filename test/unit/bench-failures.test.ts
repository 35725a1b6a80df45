/*
 * What the bench keeps when a cell fails, without root: a whole-cell failure drops every figure of
 * that mode at that count; a churn failure (its own agent, its own window) drops only the churn,
 * in every round, and the report says which metric failed.
 */
import { formatReport } from '../../src/bench/report.js';
import { keptSamples, summarize, type BenchReport, type CellFailure, type Sample } from '../../src/bench/results.js';

const sample = (mode: Sample['mode'], metric: Sample['metric'], round: number, p50: number): Sample => ({
  mode, services: 1000, placement: mode === 'direct' || metric !== 'crr' ? 'none' : 'last', metric, family: 'IPv4', round, p50,
  p99: metric === 'crr' || metric === 'churn' ? p50 * 2 : null, rate: metric === 'crr' ? 1e6 / p50 : metric === 'churn' ? 20 : null, errors: 0,
});

const SAMPLES: Sample[] = [
  sample('direct', 'crr', 1, 50), sample('direct', 'crr', 2, 52),
  sample('iptables-nft', 'sync_all', 1, 71_000), sample('iptables-nft', 'churn', 1, 900), sample('iptables-nft', 'crr', 1, 80),
  sample('iptables-nft', 'sync_all', 2, 72_000), sample('iptables-nft', 'crr', 2, 82),
  sample('nftables', 'sync_all', 1, 900), sample('nftables', 'churn', 1, 400), sample('nftables', 'crr', 1, 70),
];

describe('bench failures', () => {
  it('a churn failure drops that mode\'s churn of every round and keeps its other figures', () => {
    const failures: CellFailure[] = [{ mode: 'iptables-nft', services: 1000, round: 2, reason: 'changes landed after the window', metric: 'churn' }];
    const kept = keptSamples(SAMPLES, failures).map((s) => `${s.mode} ${s.metric} ${s.round}`);
    expect(kept).toContain('iptables-nft crr 2');
    expect(kept).toContain('iptables-nft sync_all 1');
    expect(kept.filter((k) => k.includes('churn'))).toEqual(['nftables churn 1']);
  });

  it('a whole-cell failure drops every figure of that mode at that count, and only those', () => {
    const failures: CellFailure[] = [{ mode: 'nftables', services: 1000, round: 1, reason: 'agent not ready' }];
    const kept = keptSamples(SAMPLES, failures);
    expect(kept.filter((s) => s.mode === 'nftables')).toEqual([]);
    expect(kept).toHaveLength(SAMPLES.length - 3);
  });

  it('the report shows the kept figures, "failed" only where the failed metric would be, and names it', () => {
    const failures: CellFailure[] = [{ mode: 'iptables-nft', services: 1000, round: 1, reason: 'changes landed after the window', metric: 'churn' }];
    const report: BenchReport = {
      env: {
        kernel: '6.1', cpu: 'test', cpus: 1, tools: {}, date: '2026-11-30T00:00:00.000Z', command: 'vipr bench', cpuDmaLatency: 'held at 0',
        pinnedCpu: 0, families: ['IPv4'], backends: 3, rounds: 2, wallSeconds: 1, loadAverage: { start: [0], end: [0] },
      },
      results: summarize(keptSamples(SAMPLES, failures)), unavailable: [], failures, placements: [],
    };
    const text = formatReport(report);
    expect(text).toMatch(/^ {2}iptables-nft +8\d\.\d\/16\d\.\d µs ×1\.\d\d/m);
    const churn = text.slice(text.indexOf('churn'));
    expect(churn).toMatch(/^ {2}iptables-nft +failed \(see below\)$/m);
    expect(churn).toMatch(/^ {2}nftables +400/m);
    expect(text).toMatch(/^ {2}iptables-nft churn with 1,000 services \(round 1\): changes landed after the window$/m);
  });
});
