/*
 * stdout carries a command's result and nothing else: every `--json` listing stays valid JSON
 * when the input makes vipr log warnings (a scheduler annotation with a newline in it, an invalid
 * Service from the API server), and the agent writes its logs to stderr. Also: the agent creates
 * its pin dir owned by root with mode 0700, and `--kubeconfig` reaches a plain http:// API
 * server (no insecure-skip-tls-verify), as kubectl does.
 *
 * The agent runs in a network namespace of its own (attached to that namespace's lo); the CLI
 * reads its pinned maps from here. Everything is removed afterwards.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer } from '../../src/lab/fake-apiserver/server.js';
import { rawEndpointSlice, rawNode, rawService } from '../fake-apiserver/fixtures.js';
import { ensureBuilt, runProgram, vipr, VIPR_MAIN, type CliResult } from '../helpers/lab.js';

const work = mkdtempSync(join(tmpdir(), 'vipr-stdout-'));
const manifests = join(work, 'manifests');
const netns = `vipr-out-${process.pid}`;
const pinDir = `/sys/fs/bpf/vipr-test-out-${process.pid}`;
const api = new FakeApiServer();
let agent: ChildProcess | null = null;
let agentOut = '';
let agentErr = '';

// A scheduler annotation with a newline: the model warns about it and programs the default.
const MANIFEST = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  annotations:
    vipr.io/scheduler: "fastest\\nand more"
spec:
  type: ClusterIP
  clusterIP: 10.0.0.80
  ports: [{protocol: TCP, port: 80, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abcde
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 80}]
endpoints:
  - addresses: ["10.244.0.11"]
    conditions: {ready: true, serving: true, terminating: false}
    nodeName: node
`;

function plainHttpKubeconfig(server: string): string {
  return `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "${server}"}}]
users: [{name: u, user: {}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`;
}

/** stdout parses as JSON; returns it. */
function json(res: CliResult, what: string): unknown {
  expect({ what, code: res.code, stderr: res.code === 0 ? '' : res.stderr }).toEqual({ what, code: 0, stderr: '' });
  try {
    return JSON.parse(res.stdout) as unknown;
  } catch (err) {
    throw new Error(`${what}: stdout is not JSON (${(err as Error).message}):\n${res.stdout}`);
  }
}

beforeAll(async () => {
  await ensureBuilt();
  rmSync(manifests, { recursive: true, force: true });
  await runProgram('mkdir', ['-p', manifests]);
  writeFileSync(join(manifests, 'web.yaml'), MANIFEST);
  for (const args of [['netns', 'add', netns], ['-n', netns, 'link', 'set', 'lo', 'up']]) {
    const res = await runProgram('ip', args);
    if (res.code !== 0) throw new Error(`ip ${args.join(' ')}: ${res.stderr}`);
  }
  await api.start();
}, 180_000);

afterAll(async () => {
  if (agent && agent.exitCode === null) {
    const exited = new Promise((resolve) => agent?.once('exit', resolve));
    agent.kill('SIGTERM');
    await exited;
  }
  await runProgram('nsenter', [`--net=/run/netns/${netns}`, process.execPath, VIPR_MAIN, 'cleanup', '--pin-dir', pinDir]);
  await runProgram('ip', ['netns', 'del', netns]);
  rmSync(pinDir, { recursive: true, force: true });
  await api.stop();
  rmSync(work, { recursive: true, force: true });
}, 60_000);

test('the agent logs to stderr only, and creates its pin dir owned by root with mode 0700', async () => {
  const args = [
    `--net=/run/netns/${netns}`, process.execPath, VIPR_MAIN, 'run', '--manifests', manifests, '--iface', 'lo', '--pin-dir', pinDir,
    '--node-name', 'node', '--metrics-bind-address', '127.0.0.1:0', '--healthz-bind-address', '127.0.0.1:0',
  ];
  const p = spawn('nsenter', args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, VIPR_LOG_LEVEL: 'info' } });
  agent = p;
  p.stdout?.on('data', (d: Buffer) => (agentOut += d.toString()));
  p.stderr?.on('data', (d: Buffer) => (agentErr += d.toString()));
  const deadline = Date.now() + 30_000;
  while (!agentErr.includes('"msg":"agent running"')) {
    if (p.exitCode !== null) throw new Error(`agent exited ${p.exitCode}:\n${agentOut}${agentErr}`);
    if (Date.now() > deadline) throw new Error(`agent not running after 30 s:\n${agentOut}${agentErr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  expect(agentErr).toContain('vipr.io/scheduler');
  expect(agentOut).toBe('');
  const st = statSync(pinDir);
  expect({ uid: st.uid, mode: (st.mode & 0o7777).toString(8) }).toEqual({ uid: 0, mode: '700' });
}, 60_000);

test.each([
  ['list', ['list', '--json', '--pin-dir', pinDir]],
  ['list -n', ['list', '-n', '--json', '--pin-dir', pinDir]],
  ['maps', ['maps', '--json', '--pin-dir', pinDir]],
  ['stats', ['stats', '--json', '--pin-dir', pinDir]],
  ['conntrack', ['conntrack', '--json', '--pin-dir', pinDir]],
])('vipr %s --json reading the pinned maps (debug logging on): valid JSON', async (what, args) => {
  json(await vipr(args, { env: { ...process.env, VIPR_LOG_LEVEL: 'trace' } }), what);
});

test('vipr list --json --manifests with an annotation that draws a warning: valid JSON, the warning on stderr', async () => {
  const res = await vipr(['list', '--json', '--manifests', manifests, '--node-name', 'node']);
  const listing = json(res, 'list --manifests') as { services: Array<{ address: string; scheduler: string }> };
  expect(listing.services.map((s) => [s.address, s.scheduler])).toEqual([['10.0.0.80', 'random']]);
  expect(res.stderr).toContain('vipr.io/scheduler');
});

test('vipr list --json --kubeconfig: a plain http:// API server works, an invalid Service draws a warning on stderr only', async () => {
  api.createOrUpdate(rawService('web', { clusterIP: '10.96.0.10' }));
  api.createOrUpdate(rawEndpointSlice('web-1', 'web', ['10.244.0.21']));
  api.createOrUpdate(rawNode('node-a', { internalIPs: ['192.168.1.10'] }));
  const broken = rawService('broken', { clusterIP: '10.96.0.11' });
  (broken.spec as { ports: Array<{ port: number }> }).ports[0]!.port = 70000;
  api.createOrUpdate(broken);
  const kubeconfig = join(work, 'kubeconfig');
  writeFileSync(kubeconfig, plainHttpKubeconfig(api.url));
  const res = await vipr(['list', '--json', '--kubeconfig', kubeconfig, '--node-name', 'node-a'], { timeoutMs: 15_000 });
  const listing = json(res, 'list --kubeconfig') as { services: Array<{ address: string; backends: Array<{ address: string }> }> };
  expect(listing.services.map((s) => [s.address, s.backends.map((b) => b.address)])).toEqual([['10.96.0.10', ['10.244.0.21']]]);
  expect(res.stderr).toContain('default/broken');
}, 30_000);
