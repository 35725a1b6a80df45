/*
 * ICMPv6 end to end in the one-node dual-stack lab with a vipr agent (TC on every node link): the
 * client's own kernel has the last word on every message the datapath makes or rewrites.
 *  - REJECT: connecting to an IPv6 Service without endpoints fails at once with ECONNREFUSED (TCP
 *    and UDP): the client's stack took the ICMPv6 port unreachable, checksum and all.
 *  - Path MTU discovery through a Service: with a 1280-byte link between the node and the only
 *    backend, the node's Packet Too Big about the client's (DNATed) segments reaches the client
 *    quoting what the client sent, so its TCP finds the socket and lowers the path MTU to the
 *    Service address; an untranslated quote would be dropped as matching no socket.
 * `vipr lab exec` runs commands in the lab's cgroup, where the socket hooks would answer the client
 * before any packet leaves; the client here runs from the test's own cgroup in the client's network
 * namespace (nsenter), so its packets go through TC, and the test checks the TC counters moved.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { defaultPinDirOf, ensureBuilt, forceCleanLab, labExec, labUp, runProgram, uniqueLabName, vipr, type CliResult } from '../helpers/lab.js';

const name = uniqueLabName('icmp6');
const dir = mkdtempSync(join(tmpdir(), 'vipr-icmp6-'));
const EMPTY = 'fd00:10:96::83';
const EMPTY_UDP = 'fd00:10:96::86';
const NARROW = 'fd00:10:96::87';
const BE1 = 'fd00:10:244::11'; // be1 of the one-node lab

function svc6(n: string, clusterIP: string, endpoints: string[], port: number, protocol: 'TCP' | 'UDP'): string {
  const docs = [
    {
      apiVersion: 'v1', kind: 'Service', metadata: { name: n, namespace: 'default' },
      spec: { type: 'ClusterIP', clusterIP, clusterIPs: [clusterIP], ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack', ports: [{ name: 'p', protocol, port, targetPort: port }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
      metadata: { name: `${n}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': n } },
      addressType: 'IPv6', ports: [{ name: 'p', protocol, port }],
      endpoints: endpoints.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'node' })),
    },
  ];
  return docs.map((d) => stringify(d)).join('---\n');
}

/** Runs a command in the client's network namespace, outside the lab's cgroup. */
function inClient(cmd: string[], timeoutMs = 20_000): Promise<CliResult> {
  return runProgram('nsenter', [`--net=/run/netns/${name}-client`, ...cmd], { timeoutMs });
}

/** Runs a node script in the client's namespace (outside the lab's cgroup); its output, trimmed. */
async function clientScript(script: string, timeoutMs = 20_000): Promise<string> {
  const res = await inClient([process.execPath, '-e', script], timeoutMs);
  if (res.code !== 0) throw new Error(`client script exited ${res.code}: ${res.stderr.trim()}`);
  return res.stdout.trim();
}

/** The agent's counters (vipr stats --json): packets per counter name. */
async function datapathCounters(): Promise<Record<string, number>> {
  const res = await vipr(['stats', '--json', '--pin-dir', defaultPinDirOf(name)]);
  const parsed = JSON.parse(res.stdout) as Record<string, { packets: number }>;
  return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, v.packets]));
}

/** The client's ICMPv6 counters (/proc/net/snmp6 of its namespace). */
async function icmp6Counters(): Promise<Record<string, number>> {
  const text = (await inClient(['cat', '/proc/net/snmp6'])).stdout;
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^(Icmp6\w+)\s+(\d+)$/gm)) out[m[1] as string] = Number(m[2]);
  return out;
}

beforeAll(async () => {
  await ensureBuilt();
  writeFileSync(join(dir, 'empty.yaml'), svc6('empty6', EMPTY, [], 80, 'TCP'));
  writeFileSync(join(dir, 'empty-udp.yaml'), svc6('empty6-udp', EMPTY_UDP, [], 53, 'UDP'));
  writeFileSync(join(dir, 'narrow.yaml'), svc6('narrow6', NARROW, [BE1], 80, 'TCP'));
  await labUp(name, { agent: true, manifests: dir });
}, 240_000);

afterAll(async () => {
  await forceCleanLab(name);
  rmSync(dir, { recursive: true, force: true });
}, 60_000);

test('an IPv6 Service without endpoints refuses at once: TCP and UDP get ECONNREFUSED from ICMPv6 port unreachable', async () => {
  const before = await icmp6Counters();
  const dpBefore = await datapathCounters();
  const start = Date.now();
  expect(await clientScript(`
    const s = require('node:net').connect(80, '${EMPTY}');
    s.on('connect', () => { console.log('connected'); process.exit(0); });
    s.on('error', (e) => { console.log(e.code); process.exit(0); });
    setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000);`)).toBe('ECONNREFUSED');
  expect(Date.now() - start).toBeLessThan(2000);
  expect(await clientScript(`
    const s = require('node:dgram').createSocket('udp6');
    s.connect(53, '${EMPTY_UDP}', (err) => err ? console.log('connect', err.code) : s.send('x'));
    s.on('error', (e) => { console.log(e.code); process.exit(0); });
    setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000);`)).toBe('ECONNREFUSED');
  const dpAfter = await datapathCounters();
  // TC made the errors; the socket hooks never saw these sockets.
  expect((dpAfter.reject ?? 0) - (dpBefore.reject ?? 0)).toBeGreaterThanOrEqual(2);
  expect(dpAfter.sock_reject).toBe(dpBefore.sock_reject);
  const after = await icmp6Counters();
  expect((after.Icmp6InDestUnreachs ?? 0) - (before.Icmp6InDestUnreachs ?? 0)).toBeGreaterThanOrEqual(2);
  expect(after.Icmp6InCsumErrors).toBe(before.Icmp6InCsumErrors);
  expect(after.Icmp6InErrors).toBe(before.Icmp6InErrors);
}, 30_000);

test('Packet Too Big from the node about the client\'s segments lowers the client\'s path MTU to the Service address', async () => {
  // The node's side of be1's link only: be1 still advertises an MSS for 1500 bytes.
  const mtu = await labExec(name, 'node', ['ip', 'link', 'set', 'dev', 'vbe1', 'mtu', '1280']);
  expect(mtu.code).toBe(0);
  const before = await icmp6Counters();
  const rewritten = (await datapathCounters()).icmp_error_nat ?? 0;
  // A request with 64 KiB of body through the Service: full-size segments the node cannot forward.
  // (be1 answers on the headers alone, so the answer is no proof; the client's path MTU is.)
  expect(await clientScript(`
    const s = require('node:net').connect(80, '${NARROW}', () => {
      const body = Buffer.alloc(64 * 1024, 120);
      s.write('POST / HTTP/1.1\\r\\nHost: narrow\\r\\nContent-Length: ' + body.length + '\\r\\nConnection: close\\r\\n\\r\\n');
      s.write(body);
    });
    let answer = '';
    s.on('data', (d) => { answer += d; });
    s.on('end', () => { console.log(answer.split('\\r\\n')[0]); process.exit(0); });
    s.on('error', (e) => { console.log(e.code); process.exit(0); });
    setTimeout(() => { console.log('timeout'); process.exit(0); }, 10000);`)).toBe('HTTP/1.1 200 OK');
  const route = await inClient(['ip', '-6', 'route', 'get', NARROW]);
  expect(route.stdout).toMatch(/\bmtu 1280\b/);
  const after = await icmp6Counters();
  expect((after.Icmp6InPktTooBigs ?? 0) - (before.Icmp6InPktTooBigs ?? 0)).toBeGreaterThanOrEqual(1);
  expect(after.Icmp6InCsumErrors).toBe(before.Icmp6InCsumErrors);
  expect(after.Icmp6InErrors).toBe(before.Icmp6InErrors);
  expect((await datapathCounters()).icmp_error_nat ?? 0).toBeGreaterThan(rewritten);
}, 40_000);
