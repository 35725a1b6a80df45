/*
 * Socket LB end to end in the labs: the agents attach to their node's cgroup (made by `lab up`),
 * and the node's own processes reach every kind of Service, with no packet of theirs DNATed by
 * TC. One-node lab: ClusterIP over TCP and UDP, getpeername, a Service without endpoints, a
 * connected UDP socket moved off a removed backend, agent restarts, --socket-lb=off. Two-node
 * lab: NodePort on 127.0.0.1, on the node's own address and on the other node's, ClusterIP and
 * LoadBalancer IP from node1.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import {
  ensureBuilt, forceCleanLab, labExec, labLeftovers, labStatus, labUp, uniqueLabName, vipr, VIPR_MAIN,
} from '../helpers/lab.js';
import { KeepaliveProbe } from '../helpers/probe.js';
import { agentArgv, loadLabState } from '../../src/lab/lab.js';
import { SOCK_HOOKS, sockLinkPinPath } from '../../src/bpf/socket-lb.js';
import { existsSync } from 'node:fs';

const BACKENDS = ['be1', 'be2', 'be3'];
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type Counters = Record<string, { packets: number }>;

async function counters(pinDir: string): Promise<Counters> {
  const r = await vipr(['stats', '--json', '--pin-dir', pinDir]);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as Counters;
}

const delta = (a: Counters, b: Counters, name: string): number => (b[name]?.packets ?? 0) - (a[name]?.packets ?? 0);

async function nodeScript(lab: string, host: string, script: string, timeoutMs = 30_000): Promise<string> {
  const r = await labExec(lab, host, [process.execPath, '-e', script], { timeoutMs });
  if (r.code !== 0) throw new Error(`script on ${host} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

/** Polls `vipr list -n` until `pred` holds for its output. */
async function waitForListing(pinDir: string, pred: (out: string) => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = (await vipr(['list', '-n', '--pin-dir', pinDir])).stdout;
    if (pred(out)) return;
    if (Date.now() > deadline) throw new Error(`listing never matched:\n${out}`);
    await sleep(100);
  }
}

describe('one-node lab: the node reaches its Services', () => {
  const lab = uniqueLabName('sock');
  let pinDir = '';
  let cgroup = '';
  let nodeNetns = '';
  let manifests = '';

  beforeAll(async () => {
    await ensureBuilt();
    await labUp(lab, { agent: true });
    const status = await labStatus(lab);
    const node = status.nodes[0] as (typeof status.nodes)[number] & { cgroup?: string };
    pinDir = node.pinDir;
    cgroup = node.cgroup ?? '';
    nodeNetns = node.netns;
    manifests = status.manifests;
  }, 120_000);

  afterAll(() => forceCleanLab(lab), 60_000);

  test('the agent attached socket LB to the node\'s cgroup; vipr list says so', async () => {
    expect(cgroup).toBe(`${cgroup.split('/vipr-lab-')[0]}/vipr-lab-${lab}/node`);
    for (const h of SOCK_HOOKS) expect(existsSync(sockLinkPinPath(pinDir, h.hook))).toBe(true);
    const list = (await vipr(['list', '-n', '--pin-dir', pinDir])).stdout;
    expect(list.split('\n')[0]).toContain(`socket LB on (cgroup ${cgroup}, every namespace)`);
  });

  test('100 curls from the node to 10.0.0.213 reach all three backends; TC DNATs none of them', async () => {
    const before = await counters(pinDir);
    const r = await labExec(lab, 'node', ['sh', '-c', 'for i in $(seq 100); do curl -s -m 2 http://10.0.0.213/; done'], { timeoutMs: 60_000 });
    const answers = r.stdout.split('\n').filter((l) => l.length > 0);
    expect(answers).toHaveLength(100);
    expect(new Set(answers)).toEqual(new Set(BACKENDS));
    const after = await counters(pinDir);
    expect(delta(before, after, 'sock_xlate')).toBe(100);
    // Socket-translated flows are plain traffic to TC: no frontend matched, nothing rewritten.
    expect(delta(before, after, 'service_hit')).toBe(0);
    expect(delta(before, after, 'dnat')).toBe(0);
    expect(delta(before, after, 'rev_nat')).toBe(0);
  }, 60_000);

  test('UDP from the node to 10.0.0.53 is answered from 10.0.0.53', async () => {
    const out = JSON.parse(await nodeScript(lab, 'node', `
      const s = require('node:dgram').createSocket('udp4');
      s.on('message', (m, r) => { console.log(JSON.stringify({ from: r.address + ':' + r.port, answer: String(m) })); process.exit(0); });
      s.send('x', 53, '10.0.0.53');`)) as { from: string; answer: string };
    expect(out.from).toBe('10.0.0.53:53');
    expect(BACKENDS).toContain(out.answer);
  });

  test('getpeername() of a connection to a Service is the Service address', async () => {
    const out = await nodeScript(lab, 'node', `
      const s = require('node:net').connect(80, '10.0.0.213', () => { console.log(s.remoteAddress + ':' + s.remotePort); s.destroy(); });`);
    expect(out).toBe('10.0.0.213:80');
  });

  test('a Service without endpoints refuses connect() at once', async () => {
    writeFileSync(join(manifests, 'empty.yaml'), stringify({
      apiVersion: 'v1', kind: 'Service', metadata: { name: 'empty', namespace: 'default' },
      spec: { clusterIP: '10.0.0.99', ports: [{ protocol: 'TCP', port: 80, targetPort: 80 }] },
    }));
    await waitForListing(pinDir, (out) => /^TCP  10\.0\.0\.99:80 /m.test(out));
    const out = JSON.parse(await nodeScript(lab, 'node', `
      const t = Date.now();
      require('node:net').connect(80, '10.0.0.99').on('error', (e) => console.log(JSON.stringify({ code: e.code, ms: Date.now() - t })));`)) as { code: string; ms: number };
    expect(out.code).toBe('ECONNREFUSED');
    expect(out.ms).toBeLessThan(200);
  }, 30_000);

  test('a connected UDP socket is moved off a removed backend within 1 s', async () => {
    // The application: one connected socket asking every 50 ms; when the kernel aborts it, a new one.
    const child = spawn(process.execPath, [VIPR_MAIN, 'lab', 'exec', '--name', lab, 'node', '--', process.execPath, '-e', `
      const dgram = require('node:dgram');
      let s;
      const open = () => {
        s = dgram.createSocket('udp4');
        s.on('error', (e) => { console.log(Date.now() + ' error ' + e.code); s.close(); open(); });
        s.on('message', (m) => console.log(Date.now() + ' answer ' + m));
        s.connect(53, '10.0.0.53');
      };
      open();
      setInterval(() => { try { s.send('x'); } catch {} }, 50);
      setTimeout(() => process.exit(0), 15000);`]);
    const lines: string[] = [];
    child.stdout.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter((l) => l.length > 0)));
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    try {
      const deadline = Date.now() + 5000;
      while (!lines.some((l) => l.includes(' answer ')) && Date.now() < deadline) await sleep(50);
      const first = lines.find((l) => l.includes(' answer '))?.split(' ')[2] as string;
      expect(BACKENDS).toContain(first);
      // Remove that backend from echo-udp's EndpointSlice.
      const file = join(manifests, 'echo-udp.yaml');
      const docs = parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJS() as Record<string, unknown>);
      const podIp = (await labStatus(lab)).hosts.find((h) => h.name === first)?.addresses[0]?.split('/')[0] as string;
      for (const d of docs) {
        if (d.kind === 'EndpointSlice') d.endpoints = (d.endpoints as Array<{ addresses: string[] }>).filter((e) => !e.addresses.includes(podIp));
      }
      writeFileSync(file, docs.map((d) => stringify(d)).join('---\n'));
      await waitForListing(pinDir, (out) => {
        const udp = out.split(/\n(?=\S)/).find((b) => b.startsWith('UDP  10.0.0.53:53')) ?? '';
        return udp.length > 0 && !udp.includes(`${podIp}:5353`);
      });
      const removedAt = Date.now();
      while (Date.now() < removedAt + 1500) await sleep(50);
      const moved = lines.find((l) => l.includes(' answer ') && Number(l.split(' ')[0]) >= removedAt && l.split(' ')[2] !== first);
      expect(moved).toBeDefined();
      expect(Number(moved?.split(' ')[0]) - removedAt).toBeLessThan(1000);
      expect(lines.some((l) => l.includes('error ECONNABORTED'))).toBe(true);
      expect((await counters(pinDir)).sock_destroyed?.packets).toBeGreaterThanOrEqual(1);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  }, 60_000);

  test('agent restarts (SIGTERM, then SIGKILL) keep every connection, and no connect() goes untranslated', async () => {
    const probe = new KeepaliveProbe(nodeNetns, '10.0.0.213', 80, 100, cgroup);
    try {
      await probe.waitFor(3);
      // New connections all through both restarts: none may miss socket LB (it would find no route).
      const loop = labExec(lab, 'node', [process.execPath, '-e', `
        const net = require('node:net');
        const out = { ok: 0, failed: [] };
        const one = () => new Promise((resolve) => {
          const s = net.connect(80, '10.0.0.213');
          s.on('data', () => { out.ok++; s.destroy(); resolve(); });
          s.on('error', (e) => { out.failed.push(e.code); resolve(); });
          s.write('GET / HTTP/1.0\\r\\n\\r\\n');
        });
        (async () => { const end = Date.now() + 12000; while (Date.now() < end) await one(); console.log(JSON.stringify(out)); })();`], { timeoutMs: 60_000 });
      for (const kill of [false, true]) {
        const r = await vipr(['lab', 'restart-agent', '--name', lab, ...(kill ? ['--kill'] : [])], { timeoutMs: 60_000 });
        expect(r.code).toBe(0);
      }
      const result = JSON.parse((await loop).stdout) as { ok: number; failed: string[] };
      expect(result.failed).toEqual([]);
      expect(result.ok).toBeGreaterThan(50);
      const n = probe.answers().length;
      await probe.waitFor(n + 3);
      expect(probe.errors()).toEqual([]);
      expect(new Set(probe.backends()).size).toBe(1);
    } finally {
      await probe.stop();
    }
  }, 120_000);

  test('--socket-lb=off detaches it; the client still reaches Services through TC', async () => {
    const state = await loadLabState(lab);
    const node = state.nodes[0];
    if (!node) throw new Error('no node');
    const agentPid = (await labStatus(lab)).nodes[0]?.agentPid as number;
    process.kill(agentPid, 'SIGTERM');
    while (existsSync(`/proc/${agentPid}`)) await sleep(50);
    const argv = agentArgv(state, VIPR_MAIN, node);
    const i = argv.indexOf('--cgroup-root');
    argv.splice(i, 2, '--socket-lb', 'off', '--metrics-bind-address', '127.0.0.1:0', '--healthz-bind-address', '127.0.0.1:0');
    const agent = spawn('nsenter', [`--net=/run/netns/${nodeNetns}`, ...argv]);
    let log = '';
    agent.stdout.on('data', (d: Buffer) => (log += d.toString()));
    agent.stderr.on('data', (d: Buffer) => (log += d.toString()));
    try {
      const deadline = Date.now() + 30_000;
      while (!log.includes('"agent running"') && Date.now() < deadline) await sleep(100);
      expect(log).toContain('"socket LB off"');
      for (const h of SOCK_HOOKS) expect(existsSync(sockLinkPinPath(pinDir, h.hook))).toBe(false);
      expect((await vipr(['list', '-n', '--pin-dir', pinDir])).stdout.split('\n')[0]).toContain('socket LB off');
      // The negative control, and the bug socket LB fixes: the node itself has no Services now.
      const fromNode = await labExec(lab, 'node', ['curl', '-s', '-m', '2', 'http://10.0.0.213/']);
      expect(fromNode.code).not.toBe(0);
      const before = await counters(pinDir);
      const r = await labExec(lab, 'client', ['sh', '-c', 'for i in 1 2 3 4 5 6; do curl -s -m 2 http://10.0.0.213/; done']);
      expect(r.stdout.split('\n').filter((l) => l.length > 0).every((a) => BACKENDS.includes(a))).toBe(true);
      const after = await counters(pinDir);
      expect(delta(before, after, 'sock_xlate')).toBe(0);
      expect(delta(before, after, 'ct_new')).toBe(6);
    } finally {
      agent.kill('SIGTERM');
      await new Promise((r) => agent.on('exit', r));
    }
  }, 90_000);

  test('lab down removes the node cgroup with everything else', async () => {
    await forceCleanLab(lab);
    expect(await labLeftovers(lab)).toEqual([]);
  }, 60_000);
});

describe('two-node lab: NodePort, ClusterIP and LoadBalancer IP from node1', () => {
  const lab = uniqueLabName('sock2');

  beforeAll(async () => {
    await ensureBuilt();
    await labUp(lab, { nodes: 2, backends: 1, agent: true });
  }, 180_000);

  afterAll(() => forceCleanLab(lab), 60_000);

  test.each([
    ['NodePort on 127.0.0.1', 'http://127.0.0.1:30080/'],
    ['NodePort on its own address', 'http://192.168.60.11:30080/'],
    ['NodePort on node2\'s address', 'http://192.168.60.12:30080/'],
    ['ClusterIP', 'http://10.0.0.80/'],
    ['LoadBalancer IP', 'http://10.250.0.10/'],
  ])('%s answers', async (_what, url) => {
    const r = await labExec(lab, 'node1', ['sh', '-c', `for i in 1 2 3 4 5 6; do curl -s -m 2 ${url}; done`]);
    const answers = r.stdout.split('\n').filter((l) => l.length > 0);
    expect(answers).toHaveLength(6);
    for (const a of answers) expect(['be1', 'be2']).toContain(a);
  }, 30_000);

  test('teardown leaves nothing behind', async () => {
    await forceCleanLab(lab);
    expect(await labLeftovers(lab)).toEqual([]);
  }, 60_000);
});
