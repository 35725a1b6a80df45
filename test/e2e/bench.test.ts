/*
 * `vipr bench --quick` as a smoke test: the real labs, agents, rule tools and C load generator,
 * end to end. Checks the shape of what it reports (every metric for every available mode, at
 * every service count and placement), never how fast anything was; that the churn metric timed
 * every change it made through a fake API server into each dataplane (at 100 Services, none at
 * 1); that the measured service really sits last in iptables' KUBE-SERVICES; that the chart is
 * an SVG; that IPv6 traffic is measured beside IPv4 (rows labelled by family); and that its labs
 * are gone afterwards, also when it is interrupted with SIGINT.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VIPR_MAIN, ensureBuilt, forceCleanLab, labLeftovers, uniqueLabName } from '../helpers/lab.js';

const LAB_TAGS = ['direct', 'bpf', 'bpftc', 'ipt', 'iptnft', 'nft', 'ipvs'];
const DATAPLANES = ['bpf', 'bpf-tc', 'iptables', 'iptables-nft', 'nftables', 'ipvs'];
const TRAFFIC = ['rr', 'crr', 'udp'];
const CONTROL = ['sync_all', 'sync_one', 'rss', 'heap'];

interface Result {
  mode: string;
  services: number;
  placement: string;
  metric: string;
  /** Traffic rows: IPv4 or IPv6. */
  family?: string;
  p50: number;
  p99: number | null;
  rate: number | null;
  unit: string;
  resolutionMs?: number;
  /** How many rounds the median is over. */
  rounds: number;
}

interface Report {
  env: { kernel: string; cpu: string; tools: Record<string, string>; date: string; cpuDmaLatency: string; families?: string[] };
  results: Result[];
  unavailable: Array<{ mode: string; reason: string }>;
  failures: Array<{ mode: string; services: number; reason: string }>;
  placements: Array<{ mode: string; services: number; placement: string; position: number; of: number }>;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function runBench(args: string[], opts: { interruptWhen?: RegExp } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [VIPR_MAIN, 'bench', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let interrupted = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (opts.interruptWhen && !interrupted && opts.interruptWhen.test(stderr)) {
        interrupted = true;
        child.kill('SIGINT');
      }
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

const prefix = uniqueLabName('b');
const labs = LAB_TAGS.map((t) => `${prefix}-${t}`);
const out = mkdtempSync(join(tmpdir(), 'vipr-bench-e2e-'));

afterAll(async () => {
  for (const lab of labs) await forceCleanLab(lab);
  rmSync(out, { recursive: true, force: true });
}, 120_000);

describe('vipr bench --quick', () => {
  let run: Run;
  let report: Report;
  const jsonFile = join(out, 'bench.json');
  const chartFile = join(out, 'bench.svg');

  beforeAll(async () => {
    await ensureBuilt();
    run = await runBench(['--quick', '--json', jsonFile, '--chart', chartFile, '--lab-prefix', prefix]);
    if (run.code === 0) report = JSON.parse(readFileSync(jsonFile, 'utf8')) as Report;
  }, 300_000);

  test('exits 0 and writes the JSON and the chart', () => {
    expect({ code: run.code, stderr: run.code === 0 ? '' : run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(existsSync(jsonFile)).toBe(true);
    expect(existsSync(chartFile)).toBe(true);
  });

  test('env names the kernel, CPU, tools and date, and the latency hold', () => {
    expect(report.env.kernel).toMatch(/^\d+\.\d+/);
    expect(report.env.cpu.length).toBeGreaterThan(0);
    expect(Object.keys(report.env.tools)).toEqual(expect.arrayContaining(['node', 'iptables-legacy', 'iptables-nft', 'nft', 'ipvsadm']));
    expect(Number.isNaN(Date.parse(report.env.date))).toBe(false);
    expect(report.env.cpuDmaLatency).toBe('held at 0');
  });

  test('every dataplane is either measured or reported unavailable; IPVS as the kernel allows', () => {
    const measured = new Set(report.results.map((r) => r.mode));
    const unavailable = new Map(report.unavailable.map((u) => [u.mode, u.reason]));
    for (const mode of DATAPLANES) expect([mode, measured.has(mode) !== unavailable.has(mode)]).toEqual([mode, true]);
    expect(measured.has('direct')).toBe(true);
    expect(measured.has('bpf')).toBe(true);
    if (!existsSync('/proc/net/ip_vs')) {
      expect(unavailable.get('ipvs')).toBe('kernel without IPVS');
      expect(run.stdout).toMatch(/^ {2}ipvs +unavailable: kernel without IPVS$/m);
    }
  });

  test('holds every metric for every available mode, service count and placement', () => {
    const missing: string[] = [];
    const bad: string[] = [];
    const has = (mode: string, services: number, placement: string, metric: string, family?: string): void => {
      const r = report.results.find(
        (x) => x.mode === mode && x.services === services && x.placement === placement && x.metric === metric && x.family === family,
      );
      const what = `${mode} ${services} ${placement} ${metric}${family === undefined ? '' : ` ${family}`}`;
      if (!r) {
        missing.push(what);
        return;
      }
      const traffic = TRAFFIC.includes(metric);
      const ok =
        Number.isFinite(r.p50) && r.p50 > 0 &&
        r.unit === (traffic ? 'us' : metric === 'rss' || metric === 'heap' ? 'MiB' : 'ms') &&
        (!traffic || (r.p99 !== null && r.p99 >= r.p50 && r.rate !== null && r.rate > 0));
      if (!ok) bad.push(`${what}: ${JSON.stringify(r)}`);
    };
    const modes = [...new Set(report.results.map((r) => r.mode))].filter((m) => m !== 'direct');
    expect(report.failures).toEqual([]);
    expect(report.env.families).toEqual(['IPv4', 'IPv6']);
    for (const services of [1, 100]) {
      for (const family of ['IPv4', 'IPv6']) {
        for (const metric of TRAFFIC) has('direct', services, 'none', metric, family);
        for (const mode of modes) {
          for (const metric of TRAFFIC) has(mode, services, 'last', metric, family);
          if (services === 100) for (const metric of TRAFFIC) has(mode, services, 'middle', metric, family);
        }
      }
      for (const mode of modes) for (const metric of CONTROL) has(mode, services, 'none', metric);
    }
    expect({ missing, bad }).toEqual({ missing: [], bad: [] });
  });

  test('churn: every dataplane timed the changes streamed at 100 services (p50 <= p99, at about the asked rate), none at 1', () => {
    const modes = [...new Set(report.results.map((r) => r.mode))].filter((m) => m !== 'direct');
    const churn = report.results.filter((r) => r.metric === 'churn');
    expect(churn.map((r) => `${r.mode} ${r.services}`).sort()).toEqual(modes.map((m) => `${m} 100`).sort());
    const bad = churn.filter(
      (r) =>
        !(r.unit === 'ms' && r.placement === 'none' && r.p50 > 0 && r.p99 !== null && r.p99 >= r.p50 &&
          // --quick streams 20 changes a second for 1 s; timers on a busy machine may lag.
          r.rate !== null && r.rate > 5 && r.rate <= 21 &&
          r.resolutionMs !== undefined && r.resolutionMs >= 0 && r.resolutionMs < 5000),
    );
    expect(bad).toEqual([]);
    expect(run.stdout).toMatch(/^endpoint change to dataplane under a stream of changes \(churn\), p50\/p99 ms$/m);
    // The 1-service column has no churn ("-"); the 100-service one has p50/p99, rate and look time.
    expect(run.stdout).toMatch(/^ {2}bpf +- +[\d.,]+\/[\d.,]+ at \d+\/s \(looks [\d.,]+\)/m);
  });

  test("the agent's heap is reported beside its RSS and is smaller", () => {
    for (const heap of report.results.filter((r) => r.metric === 'heap')) {
      const rss = report.results.find((r) => r.metric === 'rss' && r.mode === heap.mode && r.services === heap.services);
      expect([heap.mode, heap.services, rss !== undefined && heap.p50 < rss.p50]).toEqual([heap.mode, heap.services, true]);
    }
  });

  test("the measured service's rule is the last service rule of KUBE-SERVICES, the middle one in the middle", () => {
    const ipt = report.placements.filter((p) => p.mode === 'iptables' || p.mode === 'iptables-nft');
    expect(ipt.length).toBeGreaterThan(0);
    for (const p of ipt) {
      if (p.placement === 'last') expect(p.position).toBe(p.of);
      else expect(Math.abs(p.position - p.of / 2)).toBeLessThanOrEqual(2);
    }
  });

  test('prints the comparison table with ratios', () => {
    expect(run.stdout).toMatch(/^TCP new connection: connect, request\/response, close \(crr\), service placed last, IPv4$/m);
    expect(run.stdout).toMatch(/^TCP new connection: connect, request\/response, close \(crr\), service placed last, IPv6$/m);
    expect(run.stdout).toMatch(/^ {2}bpf +[\d.,]+\/[\d.,]+ µs ×\d+\.\d\d +[\d,]+\/s/m);
    expect(run.stdout).toMatch(/^ {2}iptables +[\d.,]+\/[\d.,]+ µs ×\d+\.\d\d +[\d,]+\/s \(bpf ×\d+\.\d\d\)/m);
    expect(run.stdout).toMatch(/^programming all N services from nothing \(sync_all\), ms$/m);
  });

  test('the chart is an SVG with a line per mode', () => {
    const svg = readFileSync(chartFile, 'utf8');
    expect(svg.startsWith('<svg')).toBe(true);
    for (const mode of new Set(report.results.map((r) => r.mode))) {
      expect(svg).toContain(`>${mode}<`);
      expect(svg).toContain(`>${mode} IPv6<`);
    }
  });

  test('leaves no lab behind', async () => {
    for (const lab of labs) expect([lab, await labLeftovers(lab)]).toEqual([lab, []]);
  });
});

describe('vipr bench interrupted', () => {
  test('SIGINT stops it, exits 130 and removes its labs', async () => {
    await ensureBuilt();
    const res = await runBench(['--quick', '--modes', 'bpf', '--services', '1', '--lab-prefix', prefix], {
      interruptWhen: /1 services, bpf: sync_all/,
    });
    expect({ code: res.code, last: res.stderr.trim().split('\n').pop() }).toEqual({
      code: 130,
      last: 'vipr bench: benchmark interrupted; its labs were removed',
    });
    for (const lab of labs) expect([lab, await labLeftovers(lab)]).toEqual([lab, []]);
  }, 120_000);
});

describe('vipr bench --traffic-only', () => {
  test('measures rr, crr and udp in every round on nodes their agents programmed once per count, counts one after the other, no control plane', async () => {
    await ensureBuilt();
    const jsonFile = join(out, 'traffic-only.json');
    const res = await runBench(['--quick', '--traffic-only', '--modes', 'bpf', '--services', '1,3', '--rounds', '2', '--families', 'ipv4', '--backends', '1', '--json', jsonFile, '--lab-prefix', prefix]);
    expect({ code: res.code, stderr: res.code === 0 ? '' : res.stderr }).toEqual({ code: 0, stderr: '' });
    const report = JSON.parse(readFileSync(jsonFile, 'utf8')) as Report & { env: { trafficOnly?: boolean } };
    expect(report.env.trafficOnly).toBe(true);
    const rows = report.results.map((r) => `${r.mode} ${r.services} ${r.placement} ${r.metric} ${r.rounds}`).sort();
    expect(rows).toEqual(
      [
        ...[1, 3].flatMap((n) => ['crr', 'rr', 'udp'].map((m) => `direct ${n} none ${m} 2`)),
        ...['crr', 'rr', 'udp'].flatMap((m) => [`bpf 1 last ${m} 2`, `bpf 3 last ${m} 2`, `bpf 3 middle ${m} 2`]),
        // The agent that programmed the node ran once per count: its memory is one round's.
        'bpf 1 none heap 1', 'bpf 1 none rss 1', 'bpf 3 none heap 1', 'bpf 3 none rss 1',
      ].sort(),
    );
    // Both rounds at 1 Service, then both at 3: the node is programmed once per count.
    const cells = res.stderr.split('\n').filter((l) => /^- \[round \d\/2\] \d services, bpf: /.test(l)).map((l) => l.replace(/^- \[round (\d)\/2\] (\d) services, bpf: (agent|traffic only|rr).*$/, '$2:$1:$3'));
    expect(cells).toEqual(['1:1:agent', '1:1:rr', '1:2:traffic only', '1:2:rr', '3:1:agent', '3:1:rr', '3:2:traffic only', '3:2:rr']);
    expect(res.stdout).toMatch(/^ {2}traffic only: each node programmed once per service count by its agent; no sync_all, sync_one or churn$/m);
    for (const lab of labs) expect([lab, await labLeftovers(lab)]).toEqual([lab, []]);
  }, 240_000);
});
