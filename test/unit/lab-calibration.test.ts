/*
 * The VM lab's calibration (src/lab/calibration.ts): each mode's p50 ratio to `direct` in the VM
 * beside the same ratio on this machine, the largest difference, and IPVS's ratio with that
 * difference as its error bar.
 */
import { calibrate, formatCalibration, rangeOf, roundRatios } from '../../src/lab/calibration.js';
import type { BenchReport, BenchResult } from '../../src/lab/vm.js';
import { summarize, type Sample } from '../../src/bench/results.js';

type Row = Pick<BenchResult, 'mode' | 'services' | 'metric' | 'p50'> & Partial<BenchResult>;

function report(rows: Row[]): BenchReport {
  return {
    env: {},
    results: rows.map((r) => ({
      placement: r.mode === 'direct' ? 'none' : 'last',
      p99: r.p50 * 2,
      rate: 1e6 / r.p50,
      unit: 'us',
      ...r,
    })),
  };
}

// The VM: direct 100 µs crr; bpf 110 (×1.10), iptables 130 (×1.30), ipvs 125 (×1.25), three rounds each.
const VM = report([
  { mode: 'direct', services: 1, metric: 'crr', p50: 100, p50ByRound: [100, 100, 104] },
  { mode: 'bpf', services: 1, metric: 'crr', p50: 110, p50ByRound: [110, 108, 114.4] },
  { mode: 'iptables', services: 1, metric: 'crr', p50: 130, p50ByRound: [130, 131, 130] },
  { mode: 'ipvs', services: 1, metric: 'crr', p50: 125, p50ByRound: [125, 120, 130] },
  // An IPv6 row and a row placed in the middle are not the IPv4 Service placed last.
  { mode: 'bpf', services: 1, metric: 'crr', p50: 999, family: 'IPv6' },
  { mode: 'bpf', services: 1, metric: 'crr', p50: 999, placement: 'middle' },
  // A control-plane figure is no traffic ratio.
  { mode: 'bpf', services: 1, metric: 'sync_all', p50: 5, placement: 'none', unit: 'ms' },
  // At 1,000 Services the host has no run: IPVS is still reported.
  { mode: 'direct', services: 1000, metric: 'crr', p50: 200 },
  { mode: 'ipvs', services: 1000, metric: 'crr', p50: 300 },
]);

// This machine: direct 50 µs; bpf 60 (×1.20), iptables 61 (×1.22), no IPVS; nftables only here.
const HOST = report([
  { mode: 'direct', services: 1, metric: 'crr', p50: 50, p50ByRound: [50, 40] },
  { mode: 'bpf', services: 1, metric: 'crr', p50: 60, p50ByRound: [60, 56] },
  { mode: 'iptables', services: 1, metric: 'crr', p50: 61 },
  { mode: 'nftables', services: 1, metric: 'crr', p50: 55 },
]);

describe('calibration math', () => {
  it('gets every round\'s p50 from the bench, in round order, beside the median', () => {
    const sample = (round: number, p50: number): Sample => ({ mode: 'bpf', services: 1, placement: 'last', metric: 'crr', round, p50, p99: p50, rate: 1 });
    const [r] = summarize([sample(2, 120.0004), sample(1, 100), sample(3, 110)]);
    expect(r?.p50).toBe(110);
    expect(r?.p50ByRound).toEqual([100, 120, 110]);
  });

  it('divides each round by the same round of the floor, only when both have every round', () => {
    const r = (p50ByRound?: number[]): BenchResult => ({ mode: 'x', services: 1, placement: 'last', metric: 'crr', p50: 1, p99: null, rate: null, unit: 'us', ...(p50ByRound ? { p50ByRound } : {}) });
    expect(roundRatios(r([110, 120]), r([100, 100]))).toEqual([1.1, 1.2]);
    expect(roundRatios(r([110, 120]), r([100]))).toBeNull();
    expect(roundRatios(r(), r([100]))).toBeNull();
    expect(roundRatios(r([1]), r([0]))).toBeNull();
    expect(rangeOf([1.2, 0.9, 1.1])).toEqual({ min: 0.9, max: 1.2 });
    expect(() => rangeOf([])).toThrow(RangeError);
  });

  it('puts the VM ratio beside the host ratio for modes measured in both, at shared Service counts', () => {
    const cal = calibrate(VM, HOST);
    expect(cal.rows.map((r) => [r.metric, r.services, r.mode])).toEqual([
      ['crr', 1, 'bpf'],
      ['crr', 1, 'iptables'],
    ]);
    const [bpf, ipt] = cal.rows;
    expect(bpf?.vmRatio).toBeCloseTo(1.1);
    expect(bpf?.hostRatio).toBeCloseTo(1.2);
    expect(bpf?.disagreement).toBeCloseTo(-0.1);
    expect(bpf?.vmRounds?.map((v) => Number(v.toFixed(2)))).toEqual([1.1, 1.08, 1.1]);
    expect(ipt?.disagreement).toBeCloseTo(0.08);
  });

  it('takes the largest disagreement by magnitude, whichever its sign', () => {
    const host = report([
      { mode: 'direct', services: 1, metric: 'crr', p50: 50 },
      { mode: 'bpf', services: 1, metric: 'crr', p50: 75 }, // ×1.50 against the VM's ×1.10: -0.40
      { mode: 'iptables', services: 1, metric: 'crr', p50: 60 }, // ×1.20 against ×1.30: +0.10
    ]);
    const cal = calibrate(VM, host);
    expect(cal.largest?.mode).toBe('bpf');
    expect(cal.largest?.disagreement).toBeCloseTo(-0.4);
  });

  it('names the largest among the hash-lookup modes beside it, when a rule walk disagrees most', () => {
    const host = report([
      { mode: 'direct', services: 1, metric: 'crr', p50: 100 },
      { mode: 'bpf', services: 1, metric: 'crr', p50: 105 }, // ×1.05 against the VM's ×1.10: +0.05
      { mode: 'iptables', services: 1, metric: 'crr', p50: 100 }, // ×1.00 against ×1.30: +0.30
    ]);
    const cal = calibrate(VM, host);
    expect([cal.largest?.mode, cal.largestHash?.mode]).toEqual(['iptables', 'bpf']);
    const text = formatCalibration(cal, 'host.json');
    expect(text).toMatch(/^largest disagreement: 0\.30 \(iptables crr at 1 service: VM ×1\.30, host ×1\.00\)$/m);
    expect(text).toMatch(
      /^largest among the modes that look a Service up by hash, as IPVS does \(bpf, nftables\): 0\.05 \(bpf crr at 1 service: VM ×1\.10, host ×1\.05\)$/m,
    );
    expect(text).toMatch(/^ {2}ipvs crr \(new connection\), 1 service: ×1\.25 ± 0\.30 \(± 0\.05 as a hash lookup\) \(rounds ×1\.20–×1\.25\); bpf ×1\.10$/m);
  });

  it('reports IPVS at every VM Service count, with bpf beside it where measured', () => {
    const cal = calibrate(VM, HOST);
    expect(cal.ipvs.map((r) => [r.services, Number(r.ratio.toFixed(2)), r.bpfRatio === null ? null : Number(r.bpfRatio.toFixed(2))])).toEqual([
      [1, 1.25, 1.1],
      [1000, 1.5, null],
    ]);
    expect(cal.ipvs[0]?.vmRounds?.map((v) => Number(v.toFixed(3)))).toEqual([1.25, 1.2, 1.25]);
    expect(cal.ipvs[1]?.vmRounds).toBeNull();
  });

  it('has no rows and no error bar when the reports share no Service count', () => {
    const cal = calibrate(VM, report([{ mode: 'direct', services: 7, metric: 'crr', p50: 1 }, { mode: 'bpf', services: 7, metric: 'crr', p50: 1 }]));
    expect(cal.rows).toEqual([]);
    expect(cal.largest).toBeNull();
    const text = formatCalibration(cal, 'host.json');
    expect(text).toContain('largest disagreement: none');
    expect(text).toContain('IPVS error bar: unknown');
    expect(text).toMatch(/^ {2}ipvs crr \(new connection\), 1 service: ×1\.25 \(rounds ×1\.20–×1\.25\); bpf ×1\.10$/m);
  });

  it('prints the table, the largest disagreement and IPVS ± it', () => {
    const text = formatCalibration(calibrate(VM, HOST), 'vipr bench on this machine, /r/host-bench.json');
    const lines = text.split('\n');
    expect(lines[0]).toBe('calibration: p50 ×direct in the VM beside this machine (vipr bench on this machine, /r/host-bench.json); IPv4, Service placed last');
    expect(lines[1]?.trim().split(/\s+/)).toEqual(['metric', 'services', 'mode', 'VM', 'VM', 'rounds', 'host', 'host', 'rounds', 'VM-host']);
    expect(lines[2]?.trim().split(/\s+/)).toEqual(['crr', '1', 'bpf', '×1.10', '×1.08–×1.10', '×1.20', '×1.20–×1.40', '-0.10']);
    // No rounds on one side: '-'.
    expect(lines[3]?.trim().split(/\s+/)).toEqual(['crr', '1', 'iptables', '×1.30', '×1.25–×1.31', '×1.22', '-', '+0.08']);
    expect(text).toMatch(/^largest disagreement: 0\.10 \(bpf crr at 1 service: VM ×1\.10, host ×1\.20\)$/m);
    // bpf, a hash lookup, disagrees most: no second bar.
    expect(text).not.toContain('look a Service up by hash');
    expect(text).toMatch(/^IPVS in the VM, p50 ×direct ± 0\.10 \(the largest disagreement above\):$/m);
    expect(text).toMatch(/^ {2}ipvs crr \(new connection\), 1,000 services: ×1\.50 ± 0\.10 \(rounds -\)$/m);
  });
});
