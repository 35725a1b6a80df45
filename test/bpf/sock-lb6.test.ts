/*
 * Socket LB for IPv6 through the real programs: connect6, sendmsg6, recvmsg6 and getpeername6
 * attached (pinned links) to a cgroup this test makes, beside the IPv4 hooks, with real clients in
 * that cgroup. Clients and backends live in a network namespace of their own (backends on its
 * loopback), so a connect() the hooks fail to translate finds no route (ENETUNREACH) instead of
 * leaving the machine.
 *
 * IPv4 frontends are programmed by the real reconciler; IPv6 frontends are written into
 * vipr_services6_v1 / vipr_backends6_v1 / vipr_slots_v1 / vipr_node_ips6_v1 here, in the layouts
 * of bpf/include/vipr_types.h, with ids far above what the reconciler allocates.
 *
 * An AF_INET6 socket that names an IPv4 peer as ::ffff:a.b.c.d is an IPv4 flow: it reaches the
 * IPv4 frontend's backends and sees ::ffff:<frontend> as its peer.
 *
 * Needs `make build` (the destroyer runs in the namespace from dist/).
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatapathFixture, NODE_IP, type SvcDef } from './fixture.js';
import { SOCK_HOOKS, SocketLb, cgroup2Mount, sockLinkPinPath } from '../../src/bpf/socket-lb.js';
import { BackendId, IPPROTO_TCP, IPPROTO_UDP, SlotKey, SvcValue } from '../../src/bpf/layouts.js';
import * as libbpf from '../../src/bpf/libbpf.js';
import { parseIpv6 } from '../../src/model/ip.js';
import { runProgram, REPO_ROOT } from '../helpers/lab.js';

const execFileP = promisify(execFile);
const NS = `vipr-sock6test-${process.pid}`;
const PIN_DIR = `/sys/fs/bpf/vipr-test-sock6-${process.pid}`;
const BACKENDS4 = ['10.244.1.11', '10.244.1.12', '10.244.1.13'];
const BACKENDS6 = ['fd00:10:244:1::11', 'fd00:10:244:1::12', 'fd00:10:244:1::13'];
const NODE_IP6 = 'fd00:192:168:60::11';

const WEB4: SvcDef = { name: 'web', vip: '10.0.0.213', port: 80, targetPort: 8080, backends: BACKENDS4, type: 'NodePort', nodePort: 30080 };
const DNS4: SvcDef = { name: 'dns', vip: '10.0.0.53', port: 53, protocol: 'UDP', targetPort: 5353, backends: BACKENDS4 };
const EMPTY4: SvcDef = { name: 'empty', vip: '10.0.0.99', port: 80, targetPort: 8080, backends: [] };
const ALL4 = [WEB4, DNS4, EMPTY4];

/* enum vipr_scope, enum vipr_svc_flags */
const SCOPE_EXTERNAL = 0;
const SVC_F_AFFINITY = 1 << 0;
const SVC_F_EXTERNAL = 1 << 2;
const SVC_F_REJECT = 1 << 4;

interface Frontend6 {
  vip: string; // '::' for a NodePort
  port: number;
  proto: number;
  svcId: number;
  backends: number[]; // backend ids
  flags?: number;
  affinity?: number;
}

/* Ids far above what the reconciler allocates for the few IPv4 frontends. */
const TCP_BACKEND_IDS = [60_001, 60_002, 60_003];
const UDP_BACKEND_IDS = [60_011, 60_012, 60_013];
const BACKEND6: Record<number, { addr: string; port: number; proto: number }> = {};
BACKENDS6.forEach((addr, i) => {
  BACKEND6[TCP_BACKEND_IDS[i] as number] = { addr, port: 8080, proto: IPPROTO_TCP };
  BACKEND6[UDP_BACKEND_IDS[i] as number] = { addr, port: 5353, proto: IPPROTO_UDP };
});
const WEB6: Frontend6 = { vip: 'fd00:10:96::213', port: 80, proto: IPPROTO_TCP, svcId: 200_001, backends: TCP_BACKEND_IDS };
const NODEPORT6: Frontend6 = { vip: '::', port: 30080, proto: IPPROTO_TCP, svcId: 200_002, backends: TCP_BACKEND_IDS, flags: SVC_F_EXTERNAL };
const DNS6: Frontend6 = { vip: 'fd00:10:96::53', port: 53, proto: IPPROTO_UDP, svcId: 200_003, backends: UDP_BACKEND_IDS };
const EMPTY6: Frontend6 = { vip: 'fd00:10:96::99', port: 80, proto: IPPROTO_TCP, svcId: 200_004, backends: [], flags: SVC_F_REJECT };
const STICKY6: Frontend6 = { vip: 'fd00:10:96::215', port: 80, proto: IPPROTO_TCP, svcId: 200_005, backends: TCP_BACKEND_IDS, flags: SVC_F_AFFINITY, affinity: 600 };
const ALL6 = [WEB6, NODEPORT6, DNS6, EMPTY6, STICKY6];

let fx: DatapathFixture;
let lb: SocketLb;
let cgroup: string;
let servers: ReturnType<typeof spawn> | null = null;

function withPinnedMap<T>(name: string, fn: (fd: number) => T): T {
  const fd = libbpf.objGet(join(PIN_DIR, name));
  try {
    return fn(fd);
  } finally {
    libbpf.closeFd(fd);
  }
}

/** struct vipr_svc6_key */
function svc6Key(f: Frontend6): Buffer {
  const key = Buffer.alloc(20);
  parseIpv6(f.vip).copy(key, 0);
  key.writeUInt16BE(f.port, 16);
  key[18] = f.proto;
  key[19] = SCOPE_EXTERNAL;
  return key;
}

/** struct vipr_backend6 */
function backend6(id: number): Buffer {
  const b = BACKEND6[id];
  if (b === undefined) throw new Error(`no IPv6 backend ${id}`);
  const value = Buffer.alloc(20);
  parseIpv6(b.addr).copy(value, 0);
  value.writeUInt16BE(b.port, 16);
  value[18] = b.proto;
  return value;
}

/** Writes the IPv6 frontends as the reconciler orders it: backends, then slots, then the service. */
function programIpv6(frontends: Frontend6[], backendIds: number[] = Object.keys(BACKEND6).map(Number)): void {
  withPinnedMap('vipr_backends6_v1', (fd) => {
    for (const id of backendIds) libbpf.mapUpdate(fd, BackendId.encode({ id }), backend6(id), 0, 'vipr_backends6_v1');
  });
  withPinnedMap('vipr_slots_v1', (fd) => {
    for (const f of frontends) {
      f.backends.forEach((id, slot) => libbpf.mapUpdate(fd, SlotKey.encode({ svc_id: f.svcId, slot }), BackendId.encode({ id }), 0, 'vipr_slots_v1'));
    }
  });
  withPinnedMap('vipr_services6_v1', (fd) => {
    for (const f of frontends) {
      const value = SvcValue.encode({ svc_id: f.svcId, backend_count: f.backends.length, flags: f.flags ?? 0, affinity_timeout: f.affinity ?? 0, scheduler: 0 });
      libbpf.mapUpdate(fd, svc6Key(f), value, 0, 'vipr_services6_v1');
    }
  });
  withPinnedMap('vipr_node_ips6_v1', (fd) => libbpf.mapUpdate(fd, parseIpv6(NODE_IP6), Buffer.alloc(4), 0, 'vipr_node_ips6_v1'));
}

/** Removes one IPv6 backend of a frontend as the reconciler would: slots, then the count, then the backend. */
function removeIpv6Backend(frontend: Frontend6, id: number): void {
  const rest = frontend.backends.filter((b) => b !== id);
  withPinnedMap('vipr_slots_v1', (fd) => {
    rest.forEach((b, slot) => libbpf.mapUpdate(fd, SlotKey.encode({ svc_id: frontend.svcId, slot }), BackendId.encode({ id: b }), 0, 'vipr_slots_v1'));
  });
  withPinnedMap('vipr_services6_v1', (fd) => {
    const value = SvcValue.encode({ svc_id: frontend.svcId, backend_count: rest.length, flags: frontend.flags ?? 0, affinity_timeout: frontend.affinity ?? 0, scheduler: 0 });
    libbpf.mapUpdate(fd, svc6Key(frontend), value, 0, 'vipr_services6_v1');
  });
  withPinnedMap('vipr_slots_v1', (fd) => libbpf.mapDelete(fd, SlotKey.encode({ svc_id: frontend.svcId, slot: rest.length }), 'vipr_slots_v1'));
  withPinnedMap('vipr_backends6_v1', (fd) => libbpf.mapDelete(fd, BackendId.encode({ id }), 'vipr_backends6_v1'));
}

/** Both families, as a sync leaves them (the reconciler's sync may sweep what it did not write). */
async function programAll(defs4: SvcDef[] = ALL4, frontends6: Frontend6[] = ALL6): Promise<void> {
  await fx.program(defs4);
  programIpv6(frontends6);
}

const sh = async (cmd: string, args: string[]): Promise<void> => {
  await execFileP(cmd, args);
};

/** Runs a node script as a process of the test cgroup, inside the test namespace. */
function inCgroupArgv(script: string): [string, string[]] {
  return ['sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, 'nsenter', `--net=/run/netns/${NS}`, process.execPath, '-e', script]];
}

async function client<T>(script: string): Promise<T> {
  const [file, args] = inCgroupArgv(script);
  const r = await runProgram(file, args, { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`client failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

interface TcpResult {
  answer?: string;
  peer?: string;
  family?: string;
  error?: string;
}

/** n TCP connections, one after the other: what each backend answered and what getpeername said. */
const tcpClient = (ip: string, port: number, n: number): string => `
  const net = require('node:net');
  const one = () => new Promise((resolve) => {
    const s = net.connect(${port}, '${ip}');
    let answer = '';
    let peer = null;
    let family = null;
    s.on('connect', () => { peer = s.remoteAddress + ' ' + s.remotePort; family = s.remoteFamily; });
    s.on('data', (d) => { answer += d; });
    s.on('end', () => resolve({ answer, peer, family }));
    s.on('error', (e) => resolve({ error: e.code }));
  });
  (async () => { const out = []; for (let i = 0; i < ${n}; i++) out.push(await one()); console.log(JSON.stringify(out)); })();`;

/** n datagrams from one unconnected udp6 socket: who each answer came from, and what it said. */
const udpClient = (ip: string, port: number, n: number): string => `
  const s = require('node:dgram').createSocket('udp6');
  const out = [];
  s.on('message', (m, r) => { out.push({ from: r.address + ' ' + r.port, answer: String(m) }); if (out.length === ${n}) { console.log(JSON.stringify(out)); process.exit(0); } });
  for (let i = 0; i < ${n}; i++) s.send('q', ${port}, '${ip}');
  setTimeout(() => { console.log(JSON.stringify(out)); process.exit(0); }, 3000);`;

beforeAll(async () => {
  const mount = cgroup2Mount();
  if (mount === null) throw new Error('no cgroup v2 hierarchy mounted: socket LB needs one');
  await sh('ip', ['netns', 'add', NS]);
  await sh('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  for (const ip of [...BACKENDS4, NODE_IP]) await sh('ip', ['-n', NS, 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
  for (const ip of [...BACKENDS6, NODE_IP6]) await sh('ip', ['-n', NS, 'addr', 'add', `${ip}/128`, 'dev', 'lo']);
  // Backends: TCP answers its address and closes; UDP echoes its address. Not in the cgroup.
  const all = [...BACKENDS4, ...BACKENDS6];
  servers = spawn('nsenter', [`--net=/run/netns/${NS}`, process.execPath, '-e', `
    const net = require('node:net'); const dgram = require('node:dgram');
    let up = 0; const ready = () => { if (++up === ${all.length * 2}) console.log('ready'); };
    for (const ip of ${JSON.stringify(all)}) {
      net.createServer((c) => c.end(ip)).listen(8080, ip, ready);
      const u = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4');
      u.on('message', (m, r) => u.send(ip, r.port, r.address));
      u.bind(5353, ip, ready);
    }`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    servers?.stdout?.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve(); });
    servers?.on('exit', (code) => reject(new Error(`backend servers exited (${code})`)));
  });
  fx = new DatapathFixture(PIN_DIR);
  await programAll();
  cgroup = join(mount, `vipr-test-sock6-${process.pid}`);
  mkdirSync(cgroup);
  lb = SocketLb.load(PIN_DIR, { hostNsOnly: false, nodePortLoopback: true });
  lb.attach(cgroup);
}, 60_000);

afterAll(async () => {
  lb?.close();
  fx?.close(); // unpins the links too (cleanup knows the IPv6 hooks' pins): the programs detach
  const left = existsSync(PIN_DIR) ? readdirSync(PIN_DIR, { recursive: true }) : [];
  servers?.kill('SIGKILL');
  await execFileP('ip', ['netns', 'del', NS]).catch(() => undefined);
  // The namespace's processes are gone once the namespace is (clients exited, servers killed).
  for (let i = 0; i < 50 && cgroup && existsSync(cgroup); i++) {
    try {
      rmdirSync(cgroup);
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  if (left.length > 0) throw new Error(`cleanup left pins in ${PIN_DIR}: ${left.join(', ')}`);
}, 30_000);

describe('IPv6 links', () => {
  test('connect6, sendmsg6, recvmsg6 and getpeername6 are attached beside the IPv4 hooks, each through a pinned link', () => {
    expect(SOCK_HOOKS.map((h) => h.hook)).toEqual(['connect4', 'sendmsg4', 'recvmsg4', 'getpeername4', 'connect6', 'sendmsg6', 'recvmsg6', 'getpeername6']);
    for (const h of SOCK_HOOKS) expect(existsSync(sockLinkPinPath(PIN_DIR, h.hook))).toBe(true);
  });
});

describe('IPv6 scope', () => {
  test('host namespace only: IPv6 and IPv4-mapped sockets of other namespaces are left to TC', async () => {
    const hostOnly = SocketLb.load(PIN_DIR, { hostNsOnly: true, nodePortLoopback: true });
    try {
      hostOnly.attach(cgroup);
      for (const ip of ['fd00:10:96::213', '::ffff:10.0.0.213']) {
        const out = await client<TcpResult[]>(tcpClient(ip, 80, 1));
        expect(out[0]?.error).toBe('ENETUNREACH');
      }
    } finally {
      lb.attach(cgroup);
      hostOnly.close();
    }
    const out = await client<TcpResult[]>(tcpClient('fd00:10:96::213', 80, 1));
    expect(BACKENDS6).toContain(out[0]?.answer);
  });
});

describe('IPv6 connect()', () => {
  test('a ClusterIP reaches every backend; getpeername() says the Service address', async () => {
    const before = fx.counter('sock_xlate');
    const out = await client<TcpResult[]>(tcpClient('fd00:10:96::213', 80, 60));
    expect(new Set(out.map((o) => o.answer))).toEqual(new Set(BACKENDS6));
    for (const o of out) expect(o.peer).toBe('fd00:10:96::213 80');
    expect(fx.counter('sock_xlate') - before).toBe(60);
  });

  test('a NodePort on the node\'s IPv6 address reaches a backend; ::1 is no NodePort address (as kube-proxy)', async () => {
    const out = await client<TcpResult[]>(tcpClient(NODE_IP6, 30080, 3));
    for (const o of out) {
      expect(BACKENDS6).toContain(o.answer);
      expect(o.peer).toBe(`${NODE_IP6} 30080`);
    }
    const loopback = await client<TcpResult[]>(tcpClient('::1', 30080, 1));
    expect(loopback[0]?.error).toBe('ECONNREFUSED');
  });

  test('a Service without endpoints refuses at once (ECONNREFUSED), counted', async () => {
    const before = fx.counter('sock_reject');
    const out = await client<TcpResult[]>(tcpClient('fd00:10:96::99', 80, 1));
    expect(out[0]?.error).toBe('ECONNREFUSED');
    expect(fx.counter('sock_reject') - before).toBe(1);
  });

  test('an address that is no frontend is left alone (no route in the namespace)', async () => {
    const out = await client<TcpResult[]>(tcpClient('fd00:10:96::98', 80, 1));
    expect(out[0]?.error).toBe('ENETUNREACH');
  });

  test('sessionAffinity ClientIP: every connection of the namespace goes to one backend', async () => {
    const out = await client<TcpResult[]>(tcpClient('fd00:10:96::215', 80, 20));
    expect(out.every((o) => o.answer !== undefined && BACKENDS6.includes(o.answer))).toBe(true);
    expect(new Set(out.map((o) => o.answer)).size).toBe(1);
  });
});

describe('IPv6 UDP', () => {
  test('sendto() a Service: the answer comes from the Service address', async () => {
    const out = await client<Array<{ from: string; answer: string }>>(udpClient('fd00:10:96::53', 53, 20));
    expect(out).toHaveLength(20);
    for (const o of out) {
      expect(o.from).toBe('fd00:10:96::53 53');
      expect(BACKENDS6).toContain(o.answer);
    }
  });

  test('a connected socket sees the Service as its peer; when its backend is removed it is destroyed and a new one reaches a live backend', async () => {
    const [file, args] = inCgroupArgv(`
      const dgram = require('node:dgram');
      const s = dgram.createSocket('udp6');
      let error = null;
      s.on('error', (e) => { error = e.code; });
      s.connect(53, 'fd00:10:96::53', () => s.send('q'));
      s.once('message', (m) => {
        const a = s.remoteAddress();
        console.log('first ' + m + ' peer ' + a.address + ' ' + a.port);
        process.stdin.once('data', () => {
          // A destroyed socket fails its pending receive at once; a live one would answer.
          if (error === null) { s.on('message', (m2) => { console.log('still ' + m2); process.exit(0); }); s.send('q'); return; }
          const n = dgram.createSocket('udp6');
          n.connect(53, 'fd00:10:96::53', () => n.send('q'));
          n.on('message', (m2) => { console.log('error ' + error + ' next ' + m2); process.exit(0); });
        });
      });`);
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 100 && !out.includes('first '); i++) await new Promise((r) => setTimeout(r, 50));
    const first = /first (\S+) peer (.+)/.exec(out);
    expect(first?.[2]).toBe('fd00:10:96::53 53');
    const firstBackend = first?.[1] as string;
    expect(BACKENDS6).toContain(firstBackend);
    const destroyedBefore = fx.counter('sock_destroyed');
    const gone = UDP_BACKEND_IDS[BACKENDS6.indexOf(firstBackend)] as number;
    removeIpv6Backend(DNS6, gone);
    // The destroyer walks the sockets of the namespace it runs in: run it in the clients' one.
    const run = await runProgram('nsenter', [`--net=/run/netns/${NS}`, process.execPath, '--input-type=module', '-e', `
      import { UdpSocketDestroyer } from '${join(REPO_ROOT, 'dist/src/bpf/socket-lb.js')}';
      const d = UdpSocketDestroyer.load('${PIN_DIR}'); d.run(); d.close();`]);
    expect(run.stderr.replace(/^\{.*\}$/gm, '').trim()).toBe('');
    child.stdin.write('go\n');
    await exited;
    const m = /error (\S+) next (\S+)/.exec(out);
    expect(m?.[1]).toBe('ECONNABORTED');
    expect(BACKENDS6.filter((b) => b !== firstBackend)).toContain(m?.[2]);
    expect(fx.counter('sock_destroyed') - destroyedBefore).toBe(1);
    programIpv6(ALL6);
  }, 30_000);
});

describe('IPv4-mapped addresses from AF_INET6 sockets are IPv4 flows', () => {
  test('connect() to ::ffff:<ClusterIP> reaches the IPv4 backends; getpeername() says ::ffff:<ClusterIP>', async () => {
    const out = await client<TcpResult[]>(tcpClient('::ffff:10.0.0.213', 80, 30));
    expect(new Set(out.map((o) => o.answer))).toEqual(new Set(BACKENDS4));
    for (const o of out) {
      expect(o.peer).toBe('::ffff:10.0.0.213 80');
      expect(o.family).toBe('IPv6');
    }
  });

  test('a NodePort on ::ffff:127.0.0.1 and ::ffff:<node address> reaches an IPv4 backend', async () => {
    for (const ip of ['127.0.0.1', NODE_IP]) {
      const out = await client<TcpResult[]>(tcpClient(`::ffff:${ip}`, 30080, 2));
      for (const o of out) {
        expect(BACKENDS4).toContain(o.answer);
        expect(o.peer).toBe(`::ffff:${ip} 30080`);
      }
    }
  });

  test('::ffff:<Service without endpoints> refuses with ECONNREFUSED', async () => {
    const out = await client<TcpResult[]>(tcpClient('::ffff:10.0.0.99', 80, 1));
    expect(out[0]?.error).toBe('ECONNREFUSED');
  });

  test('sendto() ::ffff:<UDP ClusterIP> from a udp6 socket: the answers come from ::ffff:<ClusterIP>', async () => {
    const out = await client<Array<{ from: string; answer: string }>>(udpClient('::ffff:10.0.0.53', 53, 10));
    expect(out).toHaveLength(10);
    for (const o of out) {
      expect(o.from).toBe('::ffff:10.0.0.53 53');
      expect(BACKENDS4).toContain(o.answer);
    }
  });

  test('a connected udp6 socket to ::ffff:<ClusterIP> whose IPv4 backend is removed is destroyed', async () => {
    const [file, args] = inCgroupArgv(`
      const s = require('node:dgram').createSocket('udp6');
      let error = null;
      s.on('error', (e) => { error = e.code; });
      s.connect(53, '::ffff:10.0.0.53', () => s.send('q'));
      s.once('message', (m) => {
        const a = s.remoteAddress();
        console.log('first ' + m + ' peer ' + a.address + ' ' + a.port);
        process.stdin.once('data', () => { console.log('error ' + error); process.exit(0); });
      });`);
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 100 && !out.includes('first '); i++) await new Promise((r) => setTimeout(r, 50));
    const first = /first (\S+) peer (.+)/.exec(out);
    expect(first?.[2]).toBe('::ffff:10.0.0.53 53');
    const firstBackend = first?.[1] as string;
    expect(BACKENDS4).toContain(firstBackend);
    await programAll([WEB4, { ...DNS4, backends: BACKENDS4.filter((b) => b !== firstBackend) }, EMPTY4]);
    const run = await runProgram('nsenter', [`--net=/run/netns/${NS}`, process.execPath, '--input-type=module', '-e', `
      import { UdpSocketDestroyer } from '${join(REPO_ROOT, 'dist/src/bpf/socket-lb.js')}';
      const d = UdpSocketDestroyer.load('${PIN_DIR}'); d.run(); d.close();`]);
    expect(run.stderr.replace(/^\{.*\}$/gm, '').trim()).toBe('');
    // Let the destroyed socket's error reach the script before it reports.
    await new Promise((r) => setTimeout(r, 200));
    child.stdin.write('go\n');
    await exited;
    expect(/error (\S+)/.exec(out)?.[1]).toBe('ECONNABORTED');
    await programAll();
  }, 30_000);
});
