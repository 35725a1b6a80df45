/*
 * The clsact fallback (--attach tc, what kernels without TCX links get): vipr's filter sits at a
 * fixed handle and priority, traffic flows through it, it stays when the agent stops, and
 * `vipr cleanup` removes only it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { ensureBuilt, forceCleanLab, labExec, labStatus, labUp, uniqueLabName, VIPR_MAIN } from '../helpers/lab.js';

const name = uniqueLabName('tca');
let agent: ChildProcess;
let log = '';
let pinDir = '';
let netns = '';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  await ensureBuilt();
  await labUp(name, { agent: false, backends: 2 });
  const status = await labStatus(name);
  pinDir = status.pinDir;
  netns = status.hosts.find((h) => h.role === 'node')?.netns as string;
  // Someone else's filter on the same hook (a classic BPF one that matches nothing): vipr must
  // leave it and the clsact qdisc alone.
  await labExec(name, 'node', ['tc', 'qdisc', 'add', 'dev', 'eth0', 'clsact']);
  const other = await labExec(name, 'node', ['tc', 'filter', 'add', 'dev', 'eth0', 'ingress', 'pref', '9', 'bpf', 'bytecode', '1,6 0 0 0,']);
  if (other.code !== 0) throw new Error(`cannot add the other filter: ${other.stderr}`);
  agent = spawn('nsenter', [`--net=/run/netns/${netns}`, process.execPath, VIPR_MAIN, 'run', '--attach', 'tc', '--manifests', status.manifests,
    '--iface', 'eth0', '--iface', 'vbe+', '--pin-dir', pinDir, '--node-name', 'node'], { stdio: ['ignore', 'pipe', 'pipe'] });
  agent.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  agent.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const deadline = Date.now() + 30_000;
  while (!log.includes('"msg":"agent running"')) {
    if (Date.now() > deadline || agent.exitCode !== null) throw new Error(`agent not ready:\n${log}`);
    await sleep(100);
  }
}, 120_000);

afterAll(async () => {
  if (agent?.exitCode === null) agent.kill('SIGTERM');
  await forceCleanLab(name);
}, 60_000);

const filters = async (dir: 'ingress' | 'egress'): Promise<string> => (await labExec(name, 'node', ['tc', 'filter', 'show', 'dev', 'eth0', dir])).stdout;

test('traffic flows through clsact filters; they outlive the agent; cleanup removes only them', async () => {
  expect(await filters('ingress')).toMatch(/pref 1 bpf .*handle 0x7669 vipr_tc_ingress/);
  expect(await filters('egress')).toMatch(/pref 1 bpf .*handle 0x7669 vipr_tc_egress/);
  const curl = async (): Promise<string> => (await labExec(name, 'client', ['curl', '-s', '-m', '2', 'http://10.0.0.213/'])).stdout.trim();
  expect(await curl()).toMatch(/^be[12]$/);

  const exited = new Promise((r) => agent.on('exit', r));
  agent.kill('SIGTERM');
  await exited;
  expect(await curl()).toMatch(/^be[12]$/);

  const res = await labExec(name, 'node', [process.execPath, VIPR_MAIN, 'cleanup', '--pin-dir', pinDir]);
  expect(res.code).toBe(0);
  expect(await filters('ingress')).not.toContain('vipr_tc_ingress');
  expect(await filters('egress')).not.toContain('vipr_tc_egress');
  expect(await filters('ingress')).toMatch(/pref 9 bpf .*bytecode '1,6 0 0 0'/);
  // Without vipr the service address leads nowhere.
  expect(await curl()).toBe('');
}, 60_000);
