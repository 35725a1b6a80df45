/*
 * `vipr run --kubeconfig` against the fake API server (real wire protocol, real client library)
 * with the real BPF dataplane in the lab: traffic follows endpoint changes, terminating endpoints
 * drain, an API outage leaves the dataplane alone, a 410 relist writes nothing, and a SIGKILLed
 * agent comes back without losing a connection.
 *
 * The agent runs in the lab node's network namespace; the fake API server runs in this process.
 * A Unix socket bridges the two (socat in the node namespace listens on 127.0.0.1:6443 and
 * forwards to the socket; this process forwards the socket to the fake server), so the server's
 * own down/up and dropped connections reach the agent as they would over a network.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer } from '../../src/lab/fake-apiserver/server.js';
import { kubeconfigFor } from '../../src/lab/fake-apiserver/kubeconfig.js';
import { ensureBuilt, forceCleanLab, labExec, labLeftovers, labStatus, labUp, uniqueLabName, vipr, VIPR_MAIN } from '../helpers/lab.js';
import { KeepaliveProbe } from '../helpers/probe.js';

const VIP = '10.0.0.213';
const POD = (i: number): string => `10.244.0.${10 + i}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const name = uniqueLabName('kube');
const work = mkdtempSync(join(tmpdir(), 'vipr-kube-'));
const sockPath = join(work, 'api.sock');
const api = new FakeApiServer();
let bridge: Server;
const bridged = new Set<Socket>();
let socat: ChildProcess;
let agent: ChildProcess | null = null;
let agentLog = '';
let pinDir = '';
let nodeNetns = '';
let clientNetns = '';

function service(): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'default' },
    spec: { type: 'ClusterIP', clusterIP: VIP, clusterIPs: [VIP], ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 80 }] },
  };
}

type EpState = 'ready' | 'terminating';
function slice(eps: Array<[number, EpState]>): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-abcde', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: 80 }],
    endpoints: eps.map(([i, st]) => ({
      addresses: [POD(i)],
      conditions: st === 'ready' ? { ready: true, serving: true, terminating: false } : { ready: false, serving: true, terminating: true },
      nodeName: 'node',
    })),
  };
}

async function startAgent(): Promise<void> {
  const kubeconfig = join(work, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigFor('http://127.0.0.1:6443'));
  const args = [
    `--net=/run/netns/${nodeNetns}`, process.execPath, VIPR_MAIN, 'run', '--kubeconfig', kubeconfig,
    '--iface', 'eth0', '--iface', 'vbe1', '--iface', 'vbe2', '--iface', 'vbe3',
    '--pin-dir', pinDir, '--node-name', 'node', '--min-sync-period', '200ms', '--sync-period', '30s',
  ];
  agentLog = '';
  const p = spawn('nsenter', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout?.on('data', (d: Buffer) => (agentLog += d.toString()));
  p.stderr?.on('data', (d: Buffer) => (agentLog += d.toString()));
  agent = p;
  const deadline = Date.now() + 30_000;
  while (!agentLog.includes('"msg":"agent running"')) {
    if (p.exitCode !== null) throw new Error(`agent exited ${p.exitCode}:\n${agentLog}`);
    if (Date.now() > deadline) throw new Error(`agent not ready:\n${agentLog}`);
    await sleep(100);
  }
}

async function stopAgent(signal: NodeJS.Signals): Promise<void> {
  const p = agent;
  if (!p || p.exitCode !== null) return;
  const exited = new Promise((r) => p.on('exit', r));
  p.kill(signal);
  await exited;
  agent = null;
}

beforeAll(async () => {
  await ensureBuilt();
  await api.start();
  bridge = createServer((s) => {
    const up = connect(new URL(api.url).port as unknown as number, '127.0.0.1');
    bridged.add(s);
    s.on('close', () => bridged.delete(s));
    s.pipe(up).pipe(s);
    up.on('error', () => s.destroy());
    s.on('error', () => up.destroy());
    up.on('close', () => s.destroy());
  });
  await new Promise<void>((r) => bridge.listen(sockPath, r));
  await labUp(name, { agent: false });
  const status = await labStatus(name);
  pinDir = status.pinDir;
  nodeNetns = status.hosts.find((h) => h.role === 'node')?.netns as string;
  clientNetns = status.hosts.find((h) => h.role === 'client')?.netns as string;
  socat = spawn('nsenter', [`--net=/run/netns/${nodeNetns}`, 'socat', 'TCP-LISTEN:6443,bind=127.0.0.1,fork,reuseaddr', `UNIX-CONNECT:${sockPath}`], { stdio: 'ignore' });
  api.createOrUpdate({
    apiVersion: 'v1', kind: 'Node', metadata: { name: 'node', labels: {} },
    status: { addresses: [{ type: 'InternalIP', address: '172.30.0.1' }] },
  } as never);
  api.createOrUpdate(service() as never);
  api.createOrUpdate(slice([[1, 'ready'], [2, 'ready'], [3, 'ready']]) as never);
  await startAgent();
}, 120_000);

afterAll(async () => {
  await stopAgent('SIGTERM');
  socat?.kill('SIGTERM');
  await forceCleanLab(name);
  await new Promise<void>((r) => bridge?.close(() => r()));
  await api.stop();
  rmSync(work, { recursive: true, force: true });
}, 60_000);

async function curlMany(count: number): Promise<string[]> {
  const res = await labExec(name, 'client', ['sh', '-c', `for i in $(seq ${count}); do curl -s -m 2 http://${VIP}/ || echo FAILED; done`], { timeoutMs: 120_000 });
  return res.stdout.trim().split('\n');
}

/** Waits until new connections land exactly on `want` (names like be1). */
async function waitForSpread(want: string[], timeoutMs = 5000): Promise<number> {
  const start = Date.now();
  for (;;) {
    const got = new Set(await curlMany(want.length * 12));
    if ([...got].sort().join() === [...want].sort().join()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`traffic reaches ${[...got].join(',')}, want ${want.join(',')}`);
    await sleep(100);
  }
}

function syncedLines(): Array<{ writes: number; deletes: number; full: boolean }> {
  return agentLog
    .split('\n')
    .filter((l) => l.includes('"msg":"synced"'))
    .map((l) => JSON.parse(l) as { writes: number; deletes: number; full: boolean });
}

const newProbe = (): KeepaliveProbe => new KeepaliveProbe(clientNetns, VIP, 80, 100);

describe('vipr run --kubeconfig, BPF dataplane, fake API server', () => {
  test('metrics and healthz answer on localhost like kube-proxy\'s', async () => {
    const metrics = await labExec(name, 'node', ['curl', '-s', 'http://127.0.0.1:10249/metrics']);
    expect(metrics.stdout).toMatch(/^vipr_sync_proxy_rules_duration_seconds_count \d+/m);
    expect(metrics.stdout).toMatch(/^vipr_services_programmed 1$/m);
    expect(metrics.stdout).toMatch(/^vipr_backends_programmed 3$/m);
    expect(metrics.stdout).toMatch(/^vipr_datapath_packets_total\{counter="packets"\} \d+/m);
    const health = await labExec(name, 'node', ['curl', '-s', '-w', '\\n%{http_code}', 'http://127.0.0.1:10256/healthz']);
    const [body, code] = health.stdout.trim().split('\n');
    expect(code).toBe('200');
    expect(JSON.parse(body as string)).toEqual(expect.objectContaining({ lastUpdated: expect.any(String), currentTime: expect.any(String) }));
  });

  test('scaling endpoints down and up: traffic follows within the runner interval', async () => {
    await waitForSpread(['be1', 'be2', 'be3']);
    api.createOrUpdate(slice([[2, 'ready']]) as never);
    expect(await waitForSpread(['be2'])).toBeLessThan(3000);
    api.createOrUpdate(slice([[1, 'ready'], [2, 'ready'], [3, 'ready']]) as never);
    expect(await waitForSpread(['be1', 'be2', 'be3'])).toBeLessThan(3000);
  }, 60_000);

  test('a terminating endpoint gets no new connections and keeps its established one', async () => {
    const probe = newProbe();
    try {
      await probe.waitFor(3);
      const pinned = probe.backends()[0] as string;
      const idx = Number(pinned.slice(2));
      api.createOrUpdate(slice([1, 2, 3].map((i) => [i, i === idx ? 'terminating' : 'ready'] as [number, EpState])) as never);
      const others = ['be1', 'be2', 'be3'].filter((b) => b !== pinned);
      await waitForSpread(others);
      const n = probe.backends().length;
      await probe.waitFor(n + 10);
      expect(new Set(probe.backends())).toEqual(new Set([pinned]));
      expect(probe.errors()).toEqual([]);
    } finally {
      await probe.stop();
      api.createOrUpdate(slice([[1, 'ready'], [2, 'ready'], [3, 'ready']]) as never);
      await waitForSpread(['be1', 'be2', 'be3']);
    }
  }, 60_000);

  test('the API server down for 10 s leaves traffic untouched; the agent then catches up', async () => {
    await api.down();
    const probe = newProbe();
    try {
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline) {
        const answers = await curlMany(6);
        expect(answers.every((a) => /^be[123]$/.test(a))).toBe(true);
        await sleep(2000);
      }
      // A change made while the agent could not see it.
      api.createOrUpdate(slice([[3, 'ready']]) as never);
      await api.up();
      // The informers retry with backoff (0.5 s, doubling, capped at 30 s): after 10 s down the
      // next try is about 6 s after the server returns; a later failure may wait one capped interval.
      expect(await waitForSpread(['be3'], 45_000)).toBeLessThan(45_000);
      expect(probe.errors()).toEqual([]);
      expect(new Set(probe.backends()).size).toBe(1);
    } finally {
      await probe.stop();
      if (!(await isUp())) await api.up();
      api.createOrUpdate(slice([[1, 'ready'], [2, 'ready'], [3, 'ready']]) as never);
      await waitForSpread(['be1', 'be2', 'be3'], 20_000);
    }
    expect(agentLog).toMatch(/restart/i);
  }, 150_000);

  test('a 410 relist writes nothing to the maps for unchanged services', async () => {
    await sleep(1000);
    const before = syncedLines().length;
    const lists = (): number =>
      api.listRequests('/apis/discovery.k8s.io/v1/endpointslices').length + api.listRequests('/api/v1/services').length;
    const listsBefore = lists();
    // Move the resourceVersion past what every informer has seen (an unrelated write), then
    // compact history: each informer's next watch gets 410 Expired and must relist.
    api.createOrUpdate({
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'other', namespace: 'kube-system', labels: { 'service.kubernetes.io/headless': '' } },
      spec: { type: 'ClusterIP', clusterIP: 'None', ports: [{ name: 'x', protocol: 'TCP', port: 1 }] },
    } as never);
    api.compact();
    api.dropConnections();
    const deadline = Date.now() + 15_000;
    while (lists() < listsBefore + 2 && Date.now() < deadline) await sleep(100);
    expect(lists()).toBeGreaterThanOrEqual(listsBefore + 2);
    await sleep(1500);
    const after = syncedLines().slice(before);
    expect(after.filter((s) => s.writes > 0 || s.deletes > 0)).toEqual([]);
    expect(await curlMany(6)).toEqual(expect.arrayContaining([expect.stringMatching(/^be\d$/)]));
  }, 60_000);

  test('SIGKILL mid-churn, restart: no established connection lost, maps converge to the API', async () => {
    const probe = newProbe();
    try {
      await probe.waitFor(3);
      // Churn a second service while the agent dies.
      const churn = (i: number): void => {
        api.createOrUpdate({
          apiVersion: 'v1', kind: 'Service', metadata: { name: 'churn', namespace: 'default' },
          spec: { type: 'ClusterIP', clusterIP: '10.0.0.50', clusterIPs: ['10.0.0.50'], ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 80 }] },
        } as never);
        api.createOrUpdate({
          ...slice([[1 + (i % 3), 'ready'], [1 + ((i + 1) % 3), 'ready']]),
          metadata: { name: 'churn-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'churn' } },
        } as never);
      };
      for (let i = 0; i < 10; i++) {
        churn(i);
        await sleep(60);
      }
      await stopAgent('SIGKILL');
      for (let i = 10; i < 15; i++) churn(i);
      await startAgent();
      const n = probe.backends().length;
      await probe.waitFor(n + 10);
      expect(probe.errors()).toEqual([]);
      expect(new Set(probe.backends()).size).toBe(1);
      // churn(14): pods 1+(14%3)=3 and 1+(15%3)=1
      const deadline = Date.now() + 10_000;
      let churnBackends: string[] = [];
      while (Date.now() < deadline) {
        const listing = JSON.parse((await vipr(['list', '--json', '--pin-dir', pinDir])).stdout) as { services: Array<{ address: string; backends: Array<{ address: string }> }> };
        churnBackends = (listing.services.find((s) => s.address === '10.0.0.50')?.backends ?? []).map((b) => b.address).sort();
        if (churnBackends.join() === [POD(1), POD(3)].join()) break;
        await sleep(200);
      }
      expect(churnBackends).toEqual([POD(1), POD(3)]);
    } finally {
      await probe.stop();
    }
  }, 90_000);

  test('teardown leaves nothing behind', async () => {
    await stopAgent('SIGTERM');
    socat.kill('SIGTERM');
    await forceCleanLab(name);
    expect(await labLeftovers(name)).toEqual([]);
  }, 60_000);
});

async function isUp(): Promise<boolean> {
  try {
    await fetch(`${api.url}/api/v1/nodes`);
    return true;
  } catch {
    return false;
  }
}
