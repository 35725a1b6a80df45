/*
 * `vipr bench --north-south --quick`: the real two-node labs, agents, rule tools, the C packet
 * generator and BPF_PROG_TEST_RUN, end to end. Checks what the JSON holds (every mode measured or
 * said unavailable, packets delivered to the backends for both kinds of traffic, CPU per packet,
 * how XDP attached, each XDP path timed and gone where its name says), never how fast anything
 * was; that the chart is an SVG; and that its labs are gone afterwards.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VIPR_MAIN, ensureBuilt, forceCleanLab, labLeftovers, uniqueLabName } from '../helpers/lab.js';

const MODES = ['xdp', 'xdp-redirect', 'tc', 'iptables', 'nftables', 'ipvs'];
const LAB_TAGS = ['xdp', 'xdpr', 'tc', 'ipt', 'nft', 'ipvs'];
const PATHS: Record<string, string[]> = {
  not_service: ['pass'],
  nodeport_new_local: ['pass'],
  nodeport_tracked_local: ['pass'],
  nodeport_new_remote: ['tx', 'redirect'],
  nodeport_tracked_remote: ['tx', 'redirect'],
  reply_rev_nat: ['tx', 'redirect'],
  drop_source_range: ['drop'],
};

interface Row {
  mode: string;
  traffic: string;
  sentPps: number;
  deliveredPps: number;
  nodeNsPerPacket: number;
  nodeBusy: number;
  xdp: string;
  rounds: number;
  deliveredPpsByRound: number[];
  nodeNsPerPacketByRound: number[];
}

interface Report {
  env: { kernel: string; cpu: string; command: string; cpuDmaLatency: string; loadAverage: { start: number[]; end: number[] } };
  northSouth: {
    rows: Row[];
    xdpPaths: { overheadNs: number; paths: Array<{ path: string; ns: number; warmRuns: number; harnessNs: number; coldNs: number; singleRunNs: number; verdict: string; runs: number }> } | null;
    unavailable: Array<{ mode: string; reason: string }>;
    xdpOverIptables: Record<string, number>;
    xdpRedirectOverIptables: Record<string, number>;
  };
}

const prefix = uniqueLabName('n');
const labs = LAB_TAGS.map((t) => `${prefix}-ns${t}`);
const out = mkdtempSync(join(tmpdir(), 'vipr-bench-ns-e2e-'));

afterAll(async () => {
  for (const lab of labs) await forceCleanLab(lab);
  rmSync(out, { recursive: true, force: true });
}, 120_000);

describe('vipr bench --north-south --quick', () => {
  let code = -1;
  let stdout = '';
  let stderr = '';
  let report: Report;
  const jsonFile = join(out, 'ns.json');
  const chartFile = join(out, 'ns.svg');

  beforeAll(async () => {
    await ensureBuilt();
    await new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, [VIPR_MAIN, 'bench', '--north-south', '--quick', '--json', jsonFile, '--chart', chartFile, '--lab-prefix', prefix], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
      child.on('error', reject);
      child.on('close', (c) => {
        clearTimeout(timer);
        code = c ?? -1;
        resolve();
      });
    });
    if (code === 0) report = JSON.parse(readFileSync(jsonFile, 'utf8')) as Report;
  }, 180_000);

  test('exits 0 and writes the JSON and the chart', () => {
    expect({ code, stderr: code === 0 ? '' : stderr }).toEqual({ code: 0, stderr: '' });
    expect(report.env.command).toContain('--north-south');
    expect(report.env.cpuDmaLatency).toBe('held at 0');
    expect(readFileSync(chartFile, 'utf8')).toMatch(/^<svg[\s\S]*packets\/s delivered to backends[\s\S]*<\/svg>\s*$/);
  });

  test('every mode is measured for UDP and SYN traffic or said unavailable; IPVS as the kernel allows', () => {
    const measured = new Set(report.northSouth.rows.map((r) => r.mode));
    const unavailable = new Map(report.northSouth.unavailable.map((u) => [u.mode, u.reason]));
    for (const mode of MODES) expect([mode, measured.has(mode) !== unavailable.has(mode)]).toEqual([mode, true]);
    for (const mode of ['xdp', 'xdp-redirect', 'tc', 'iptables', 'nftables']) expect([mode, measured.has(mode)]).toEqual([mode, true]);
    if (!existsSync('/proc/net/ip_vs')) expect(unavailable.get('ipvs')).toBe('kernel without IPVS');
    for (const mode of measured) {
      expect([mode, report.northSouth.rows.filter((r) => r.mode === mode).map((r) => r.traffic).sort()]).toEqual([mode, ['syn', 'udp']]);
    }
  });

  test('packets reach the backends, no more than were sent, with the CPU they cost', () => {
    for (const r of report.northSouth.rows) {
      const what = `${r.mode} ${r.traffic}`;
      expect([what, r.deliveredPps > 0, r.deliveredPps <= r.sentPps * 1.01 + 10]).toEqual([what, true, true]);
      // node1's receive thread ran (schedstat is exact), no longer than the run, and on every
      // delivered packet: a run where the counters or the thread were read wrong fails here.
      expect([what, r.nodeNsPerPacket > 0, r.nodeBusy > 0, r.nodeBusy <= 1.05]).toEqual([what, true, true, true]);
      expect([what, r.rounds, r.deliveredPpsByRound.length, r.nodeNsPerPacketByRound.length]).toEqual([what, 1, 1, 1]);
      // One round: its figure is the median.
      expect([what, r.nodeNsPerPacketByRound[0]]).toEqual([what, r.nodeNsPerPacket]);
    }
    for (const t of ['udp', 'syn']) expect(report.northSouth.xdpOverIptables[t]).toBeGreaterThan(0);
    for (const t of ['udp', 'syn']) expect(report.northSouth.xdpRedirectOverIptables[t]).toBeGreaterThan(0);
  });

  test('says how XDP attached: native for xdp and xdp-redirect (--xdp-mode native on the NIC, whose peer and sinks poll), none elsewhere', () => {
    for (const r of report.northSouth.rows) {
      expect([r.mode, r.xdp]).toEqual([r.mode, r.mode.startsWith('xdp') ? 'native' : 'none']);
    }
    expect(stdout).toMatch(/^ {2}xdp +native +[\d,]+ +[\d,]+/m);
  });

  test('times every XDP path with BPF_PROG_TEST_RUN, each gone where its name says', () => {
    const x = report.northSouth.xdpPaths;
    expect(x).not.toBeNull();
    if (x === null) return;
    expect(x.paths.map((p) => p.path)).toEqual(Object.keys(PATHS));
    expect(x.overheadNs).toBeGreaterThanOrEqual(0);
    for (const p of x.paths) {
      expect([p.path, PATHS[p.path]?.includes(p.verdict)]).toEqual([p.path, true]);
      expect([p.path, p.coldNs > 0, p.singleRunNs >= p.coldNs, p.runs]).toEqual([p.path, true, true, 500]);
      // Warm: the harness and the program, less the harness alone; new flows a flow each run.
      expect([p.path, p.ns > 0, p.harnessNs > 0, p.warmRuns]).toEqual([p.path, true, true, p.path.includes('_new_') ? 125 : 100_000]);
    }
    expect(stdout).toMatch(/^XDP program cost per path, BPF_PROG_TEST_RUN/m);
  });

  test('leaves no lab behind', async () => {
    for (const lab of labs) expect([lab, await labLeftovers(lab)]).toEqual([lab, []]);
  });
});
