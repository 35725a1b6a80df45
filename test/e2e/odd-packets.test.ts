/*
 * Packets of service flows that are not plain segments, end to end in a one-node lab with the real
 * agent: fragmented datagrams, ICMP errors that path MTU discovery depends on (both directions),
 * and packets whose headers are outside the skb's linear data.
 *
 * The lab's client sits in the node's cgroup, where socket LB would translate its connections
 * before TC ever sees a service address; the clients here are started by this test through
 * `nsenter --net=` and so stay in the test's own cgroup, as a machine outside the node would: TC
 * does all the work, as the counters checked below show.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import {
  REPO_ROOT, ensureBuilt, forceCleanLab, labStatus, labUp, runProgram, uniqueLabName, vipr, type CliResult, type LabStatusJson,
} from '../helpers/lab.js';

const name = uniqueLabName('odd');
/** A namespace of this test's own: a client one router (the lab's client) behind the node. */
const farNetns = `vipr-far-${process.pid}`;
const BIG_UDP = { vip: '10.0.0.60', port: 7000 };
const BIG_HTTP = { vip: '10.0.0.61', port: 80, targetPort: 8081 };
const BE1_IP = '10.244.0.11';
const BIG_BODY = 200_000;
const UPLOAD = 300_000;

let status: LabStatusJson;
let pinDir = '';
let server: ChildProcess | null = null;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function netnsOf(host: string): string {
  const h = status.hosts.find((x) => x.name === host);
  if (!h) throw new Error(`no host ${host} in lab ${name}`);
  return h.netns;
}

/** Runs a tool to completion; its stdin is closed from the start, so it cannot meet a broken pipe. */
function run(file: string, args: string[], timeoutMs = 60_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') {
        reject(err);
        return;
      }
      resolve({ code: typeof err?.code === 'number' ? err.code : 0, stdout, stderr });
    });
  });
}

/** Runs argv in a network namespace from this process (so outside the lab's cgroups). */
function inNetns(netns: string, argv: string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  const args = [`--net=/run/netns/${netns}`, ...argv];
  return opts.input === undefined ? run('nsenter', args, opts.timeoutMs) : runProgram('nsenter', args, opts);
}

async function mustRunHere(argv: string[]): Promise<void> {
  const r = await run(argv[0] as string, argv.slice(1));
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
}

async function mustRun(netns: string, argv: string[]): Promise<string> {
  const r = await inNetns(netns, argv);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} in ${netns}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

type Counters = Record<string, { packets: number }>;

async function counters(): Promise<Counters> {
  const r = await vipr(['stats', '--json', '--pin-dir', pinDir]);
  if (r.code !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout) as Counters;
}

const delta = (a: Counters, b: Counters, counter: string): number => (b[counter]?.packets ?? 0) - (a[counter]?.packets ?? 0);

/** be1's servers for this test: UDP echo of the whole datagram, HTTP with a big body and an upload sink. */
const SERVER = `
  const http = require('node:http');
  const dgram = require('node:dgram');
  const body = Buffer.alloc(${BIG_BODY}, 'x');
  let up = 2;
  const ready = () => { if (--up === 0) process.stdout.write('ready\\n'); };
  http.createServer((req, res) => {
    if (req.method === 'POST') {
      let n = 0;
      req.on('data', (d) => { n += d.length; });
      req.on('end', () => res.end(String(n)));
      return;
    }
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  }).listen(${BIG_HTTP.targetPort}, '0.0.0.0', ready);
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => udp.send(m, r.port, r.address));
  udp.bind(${BIG_UDP.port}, '0.0.0.0', ready);`;

function startServer(): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=/run/netns/${netnsOf('be1')}`, process.execPath, '-e', SERVER], { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => reject(new Error('be1 test server did not start')), 10_000);
    child.stdout?.on('data', (d: Buffer) => {
      if (d.toString().includes('ready')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code) => reject(new Error(`be1 test server exited ${code}`)));
  });
}

function manifests(): string {
  const svc = (svcName: string, vip: string, protocol: string, port: number, targetPort: number): unknown[] => [
    {
      apiVersion: 'v1', kind: 'Service', metadata: { namespace: 'default', name: svcName },
      spec: { type: 'ClusterIP', clusterIP: vip, clusterIPs: [vip], ports: [{ protocol, port, targetPort }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
      metadata: { namespace: 'default', name: `${svcName}-1`, labels: { 'kubernetes.io/service-name': svcName } },
      addressType: 'IPv4',
      ports: [{ name: '', protocol, port: targetPort }],
      endpoints: [{ addresses: [BE1_IP], conditions: { ready: true }, nodeName: 'node' }],
    },
  ];
  return [...svc('big-udp', BIG_UDP.vip, 'UDP', BIG_UDP.port, BIG_UDP.port), ...svc('big-http', BIG_HTTP.vip, 'TCP', BIG_HTTP.port, BIG_HTTP.targetPort)]
    .map((o) => stringify(o)).join('---\n');
}

async function waitForServices(vips: string[], timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await vipr(['list', '--json', '--pin-dir', pinDir]);
    const listing = JSON.parse(res.stdout) as { services: Array<{ address: string; backends: unknown[] }> };
    if (vips.every((v) => listing.services.some((s) => s.address === v && s.backends.length === 1))) return;
    if (Date.now() > deadline) throw new Error(`services ${vips.join(', ')} not programmed`);
    await sleep(200);
  }
}

async function setMtu(host: string, ifname: string, mtu: number): Promise<void> {
  await mustRun(netnsOf(host), ['ip', 'link', 'set', 'dev', ifname, 'mtu', String(mtu)]);
}

beforeAll(async () => {
  await ensureBuilt();
  await labUp(name, { agent: true });
  status = await labStatus(name);
  pinDir = status.pinDir;
  writeFileSync(join(status.manifests, 'odd-packets.yaml'), manifests());
  await waitForServices([BIG_UDP.vip, BIG_HTTP.vip]);
  server = await startServer();
}, 180_000);

afterAll(async () => {
  if (server?.pid !== undefined && server.exitCode === null) server.kill('SIGKILL');
  await run('ip', ['netns', 'del', farNetns]).catch(() => undefined);
  await forceCleanLab(name);
}, 60_000);

test('a 3,000-byte UDP request over the 1500-byte path reaches the backend through the service, and its 3,000-byte answer returns', async () => {
  const before = await counters();
  const script = `
    const s = require('node:dgram').createSocket('udp4');
    const payload = Buffer.alloc(3000).map((_, i) => (i * 7 + 3) & 0xff);
    const t = setTimeout(() => { process.stderr.write('no answer\\n'); process.exit(3); }, 5000);
    s.on('message', (m, r) => { process.stdout.write(JSON.stringify({ from: r.address, port: r.port, len: m.length, same: m.equals(payload) })); clearTimeout(t); s.close(); });
    s.send(payload, ${BIG_UDP.port}, '${BIG_UDP.vip}');`;
  const answer = JSON.parse(await mustRun(netnsOf('client'), [process.execPath, '-e', script])) as Record<string, unknown>;
  expect(answer).toEqual({ from: BIG_UDP.vip, port: BIG_UDP.port, len: 3000, same: true });
  const after = await counters();
  // Request and answer, 3 fragments each, on their way in and out of the node.
  expect(delta(before, after, 'fragment')).toBeGreaterThanOrEqual(6);
  expect(delta(before, after, 'drop_frag_not_found')).toBe(0);
}, 30_000);

test('an upload through the service over a smaller MTU towards the backend completes: the node\'s "fragmentation needed" reaches the client about the service', async () => {
  // The node's side of be1's link only: the backend still announces MSS 1460, so the client must
  // learn the path MTU from the node's ICMP error, which quotes the segment sent to be1.
  await setMtu('node', 'vbe1', 1280);
  try {
    const before = await counters();
    const r = await inNetns(netnsOf('client'), ['curl', '-s', '-m', '20', '--data-binary', '@-', `http://${BIG_HTTP.vip}/upload`], {
      input: 'u'.repeat(UPLOAD), timeoutMs: 30_000,
    });
    expect(r.stdout).toBe(String(UPLOAD));
    expect(delta(before, await counters(), 'icmp_error_nat')).toBeGreaterThanOrEqual(1);
  } finally {
    await setMtu('node', 'vbe1', 1500);
  }
}, 60_000);

test('a large HTTP response through the service crosses a router with a smaller MTU: its "fragmentation needed", sent to the service address, reaches the backend', async () => {
  // far (1500) ── [client, forwarding; its link to far 1280] ── node ── be1. far announces MSS
  // 1460, so be1 sends 1500-byte segments that the client cannot forward to far; its ICMP error
  // quotes the segment as the node rewrote it (from the service address) and goes there.
  const client = netnsOf('client');
  await mustRunHere(['ip', 'netns', 'add', farNetns]);
  await mustRun(client, ['ip', 'link', 'add', 'far0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', farNetns]);
  await mustRun(client, ['ip', 'addr', 'add', '172.31.0.1/24', 'dev', 'far0']);
  await mustRun(client, ['ip', 'link', 'set', 'far0', 'mtu', '1280', 'up']);
  await mustRun(client, ['ethtool', '-K', 'far0', 'tx', 'off']);
  await mustRun(client, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  await mustRun(farNetns, ['ip', 'addr', 'add', '172.31.0.2/24', 'dev', 'eth0']);
  await mustRun(farNetns, ['ip', 'link', 'set', 'eth0', 'up']);
  await mustRun(farNetns, ['ip', 'link', 'set', 'lo', 'up']);
  await mustRun(farNetns, ['ethtool', '-K', 'eth0', 'tx', 'off']);
  await mustRun(farNetns, ['ip', 'route', 'add', 'default', 'via', '172.31.0.1']);
  await mustRun(netnsOf('node'), ['ip', 'route', 'add', '172.31.0.0/24', 'via', '172.30.0.2']);

  const before = await counters();
  const r = await inNetns(farNetns, ['sh', '-c', `curl -s -m 20 http://${BIG_HTTP.vip}/big | wc -c`], { timeoutMs: 30_000 });
  expect(r.stdout.trim()).toBe(String(BIG_BODY));
  expect(delta(before, await counters(), 'icmp_error_nat')).toBeGreaterThanOrEqual(1);
}, 60_000);

test('a datagram whose headers are outside the skb\'s linear data is translated: the headers are pulled in', async () => {
  // The frame is bigger than a page, so the sender's skb holds only its Ethernet header linearly
  // (see the tool); the link must carry it whole.
  const client = netnsOf('client');
  const macOf = async (netns: string, ifname: string): Promise<string> =>
    (JSON.parse(await mustRun(netns, ['ip', '-j', 'link', 'show', 'dev', ifname])) as Array<{ address: string }>)[0]?.address ?? '';
  await setMtu('node', 'eth0', 9000);
  await setMtu('client', 'eth0', 9000);
  try {
    const before = await counters();
    const tool = join(REPO_ROOT, 'test', 'e2e', 'tools', 'packet-socket-udp.py');
    const out = await mustRun(client, [
      '/usr/bin/python3', tool, 'eth0', await macOf(client, 'eth0'), await macOf(netnsOf('node'), 'eth0'), '172.30.0.2', '10.0.0.53', '53', '6000',
    ]);
    const answer = JSON.parse(out) as { from: string; port: number; answer: string };
    expect(answer).toMatchObject({ from: '10.0.0.53', port: 53 });
    expect(answer.answer).toMatch(/^be\d$/);
    const after = await counters();
    // The node's ingress found the IPv4 header beyond the linear data and pulled it in.
    expect(delta(before, after, 'pulled')).toBeGreaterThanOrEqual(1);
    expect(delta(before, after, 'malformed')).toBe(0);
  } finally {
    await setMtu('client', 'eth0', 1500);
    await setMtu('node', 'eth0', 1500);
  }
}, 60_000);
