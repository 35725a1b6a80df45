/*
 * `vipr bench --disruption --quick`: the soak's short form, for real (labs, agents following the
 * fake API server, iptables-restore, the BPF datapath, SIGKILLs, dropped watches): BPF and
 * iptables under the same churn, each with traffic that really flowed, and BPF with zero failed
 * requests, zero resets and zero requests that reached an endpoint after the sync that removed it.
 * The labs are gone afterwards.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VIPR_MAIN, ensureBuilt, forceCleanLab, labLeftovers, uniqueLabName } from '../helpers/lab.js';
import type { DisruptionResult, DisruptionSummary } from '../../src/bench/disruption-report.js';

interface Report {
  env: { kernel: string; command: string };
  results: unknown[];
  unavailable: Array<{ mode: string; reason: string }>;
  disruption: DisruptionSummary;
}

const prefix = uniqueLabName('d');
const labs = [`${prefix}-bpf`, `${prefix}-ipt`];
const out = mkdtempSync(join(tmpdir(), 'vipr-soak-e2e-'));
const jsonFile = join(out, 'soak.json');
let run: { code: number; stdout: string; stderr: string };
let report: Report;

beforeAll(async () => {
  await ensureBuilt();
  run = await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [VIPR_MAIN, 'bench', '--disruption', '--quick', '--json', jsonFile, '--lab-prefix', prefix], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGINT'), 150_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
  if (run.code === 0) report = JSON.parse(readFileSync(jsonFile, 'utf8')) as Report;
}, 180_000);

afterAll(async () => {
  for (const lab of labs) await forceCleanLab(lab);
  rmSync(out, { recursive: true, force: true });
}, 120_000);

describe('vipr bench --disruption --quick', () => {
  test('exits 0 and writes the JSON', () => {
    expect({ code: run.code, stderr: run.code === 0 ? '' : run.stderr }).toEqual({ code: 0, stderr: '' });
  });

  test('made the churns, restarts and watch drops it says', () => {
    expect(report.disruption).toEqual(expect.objectContaining({ churns: 30, agentRestarts: 2, watchDrops: 3 }));
    expect(report.results).toEqual([]);
  });

  test('BPF and iptables were both measured, with traffic of both kinds through the whole soak', () => {
    expect(report.unavailable).toEqual([]);
    expect(report.disruption.results.map((r) => r.mode)).toEqual(['bpf', 'iptables']);
    for (const r of report.disruption.results) {
      // 100 new connections/s and 8 × 10 keep-alive requests/s for the soak's length, at least half of it.
      const expected = report.disruption.seconds * 180;
      expect([r.mode, r.requests >= expected / 2, r.newConnections > 0, r.longLivedRequests > 0]).toEqual([r.mode, true, true, true]);
      expect(r.requests).toBe(r.newConnections + r.longLivedRequests);
      // Every churn was synced, restarts included.
      expect(r.syncLatencyMs.max).toBeGreaterThan(0);
    }
  });

  test('BPF: zero failed requests, zero resets, zero requests to an endpoint after the sync that removed it', () => {
    const bpf = report.disruption.results.find((r) => r.mode === 'bpf') as DisruptionResult;
    expect({ failed: bpf.failed, resets: bpf.resets, notReadyHits: bpf.notReadyHits, errors: bpf.errors, examples: bpf.notReadyExamples })
      .toEqual({ failed: 0, resets: 0, notReadyHits: 0, errors: {}, examples: [] });
  });

  test('prints the table', () => {
    expect(run.stdout).toMatch(/^ {2}mode +requests +failed +resets +not-ready hits +sync p50\/p99 ms$/m);
    expect(run.stdout).toMatch(/^ {2}bpf +[\d,]+ +0 +0 +0 +[\d.]+\/[\d.]+$/m);
    expect(run.stdout).toMatch(/^ {2}iptables +[\d,]+ +[\d,]+ +[\d,]+ +[\d,]+ +[\d.]+\/[\d.]+$/m);
  });

  test('leaves no lab behind', async () => {
    for (const lab of labs) expect([lab, await labLeftovers(lab)]).toEqual([lab, []]);
  });
});
