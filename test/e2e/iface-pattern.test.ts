/*
 * `--iface veth+`: a DaemonSet cannot name pod interfaces ahead of time. The agent attaches to
 * every matching interface at start and to each new one as it appears, and forgets the ones that
 * go away.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ensureBuilt, forceCleanLab, labExec, labStatus, labUp, uniqueLabName, VIPR_MAIN } from '../helpers/lab.js';

const name = uniqueLabName('ifp');
let agent: ChildProcess;
let log = '';
let pinDir = '';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${log}`);
    await sleep(50);
  }
}

const links = (): string[] => (existsSync(join(pinDir, 'links')) ? readdirSync(join(pinDir, 'links')).sort() : []);

beforeAll(async () => {
  await ensureBuilt();
  await labUp(name, { agent: false, backends: 2 });
  const status = await labStatus(name);
  pinDir = status.pinDir;
  const netns = status.hosts.find((h) => h.role === 'node')?.netns as string;
  agent = spawn('nsenter', [`--net=/run/netns/${netns}`, process.execPath, VIPR_MAIN, 'run', '--manifests', status.manifests,
    '--iface', 'eth0', '--iface', 'vbe+', '--pin-dir', pinDir, '--node-name', 'node'], { stdio: ['ignore', 'pipe', 'pipe'] });
  agent.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  agent.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  await until('the agent', () => log.includes('"msg":"agent running"'), 30_000);
}, 120_000);

afterAll(async () => {
  agent?.kill('SIGTERM');
  await forceCleanLab(name);
}, 60_000);

test('matching interfaces are attached at start, new ones when they appear, gone ones forgotten', async () => {
  expect(links()).toEqual(['tcx_eth0_egress', 'tcx_eth0_ingress', 'tcx_vbe1_egress', 'tcx_vbe1_ingress', 'tcx_vbe2_egress', 'tcx_vbe2_ingress']);
  expect((await labExec(name, 'client', ['curl', '-s', '-m', '2', 'http://10.0.0.213/'])).stdout).toMatch(/^be[12]$/m);

  expect((await labExec(name, 'node', ['ip', 'link', 'add', 'vbe9', 'type', 'veth', 'peer', 'name', 'other9'])).code).toBe(0);
  await until('vbe9 attached', () => links().includes('tcx_vbe9_ingress') && links().includes('tcx_vbe9_egress'));
  expect(links()).not.toContain('tcx_other9_ingress');

  expect((await labExec(name, 'node', ['ip', 'link', 'del', 'vbe9'])).code).toBe(0);
  await until('vbe9 forgotten', () => !links().some((l) => l.includes('vbe9')));
  expect((await labExec(name, 'client', ['curl', '-s', '-m', '2', 'http://10.0.0.213/'])).stdout).toMatch(/^be[12]$/m);
});
