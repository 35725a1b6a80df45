/*
 * Socket LB through the real programs: the cgroup hooks attached (pinned links) to a cgroup this
 * test makes, maps programmed by the real reconciler, and real clients in that cgroup. Clients and
 * backends live in a network namespace of their own (backends on its loopback), so a connect()
 * the hooks fail to translate finds no route (ENETUNREACH) instead of leaving the machine.
 *
 * Needs `make build` (the destroyer runs in the namespace from dist/).
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatapathFixture, NODE_IP, type SvcDef } from './fixture.js';
import { SOCK_HOOKS, SocketLb, cgroup2Mount, sockLinkPinPath, sockObjectPath } from '../../src/bpf/socket-lb.js';
import { SockConfig } from '../../src/bpf/layouts.js';
import { runProgram, REPO_ROOT } from '../helpers/lab.js';

const execFileP = promisify(execFile);
const NS = `vipr-socktest-${process.pid}`;
const BACKENDS = ['10.244.1.11', '10.244.1.12', '10.244.1.13'];
const PIN_DIR = `/sys/fs/bpf/vipr-test-sock-${process.pid}`;

const WEB: SvcDef = { name: 'web', vip: '10.0.0.213', port: 80, targetPort: 8080, backends: BACKENDS, type: 'NodePort', nodePort: 30080 };
const DNS: SvcDef = { name: 'dns', vip: '10.0.0.53', port: 53, protocol: 'UDP', targetPort: 5353, backends: BACKENDS };
const EMPTY: SvcDef = { name: 'empty', vip: '10.0.0.99', port: 80, targetPort: 8080, backends: [] };
const STICKY: SvcDef = { name: 'sticky', vip: '10.0.0.215', port: 80, targetPort: 8080, backends: BACKENDS, affinity: 600 };
const ALL = [WEB, DNS, EMPTY, STICKY];

let fx: DatapathFixture;
let lb: SocketLb;
let cgroup: string;
let servers: ReturnType<typeof spawn> | null = null;

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

/** n TCP connections, one after the other: what each backend answered and what getpeername said. */
const tcpClient = (ip: string, port: number, n: number): string => `
  const net = require('node:net');
  const one = () => new Promise((resolve) => {
    const s = net.connect(${port}, '${ip}');
    let answer = '';
    let peer = null;
    s.on('connect', () => { peer = s.remoteAddress + ':' + s.remotePort; });
    s.on('data', (d) => { answer += d; });
    s.on('end', () => resolve({ answer, peer }));
    s.on('error', (e) => resolve({ error: e.code }));
  });
  (async () => { const out = []; for (let i = 0; i < ${n}; i++) out.push(await one()); console.log(JSON.stringify(out)); })();`;

beforeAll(async () => {
  const mount = cgroup2Mount();
  if (mount === null) throw new Error('no cgroup v2 hierarchy mounted: socket LB needs one');
  await sh('ip', ['netns', 'add', NS]);
  await sh('ip', ['-n', NS, 'link', 'set', 'lo', 'up']);
  for (const ip of [...BACKENDS, NODE_IP]) await sh('ip', ['-n', NS, 'addr', 'add', `${ip}/32`, 'dev', 'lo']);
  // Backends: TCP answers its address and closes; UDP echoes its address. Not in the cgroup.
  servers = spawn('nsenter', [`--net=/run/netns/${NS}`, process.execPath, '-e', `
    const net = require('node:net'); const dgram = require('node:dgram');
    let up = 0; const ready = () => { if (++up === ${BACKENDS.length * 2}) console.log('ready'); };
    for (const ip of ${JSON.stringify(BACKENDS)}) {
      net.createServer((c) => c.end(ip)).listen(8080, ip, ready);
      const u = dgram.createSocket('udp4');
      u.on('message', (m, r) => u.send(ip, r.port, r.address));
      u.bind(5353, ip, ready);
    }`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    servers?.stdout?.on('data', (d: Buffer) => { if (d.toString().includes('ready')) resolve(); });
    servers?.on('exit', (code) => reject(new Error(`backend servers exited (${code})`)));
  });
  fx = new DatapathFixture(PIN_DIR);
  await fx.program(ALL);
  cgroup = join(mount, `vipr-test-sock-${process.pid}`);
  mkdirSync(cgroup);
  lb = SocketLb.load(PIN_DIR, { hostNsOnly: false, nodePortLoopback: true });
  lb.attach(cgroup);
}, 60_000);

afterAll(async () => {
  lb?.close();
  fx?.close(); // unpins the links too: the programs detach
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
}, 30_000);

describe('connect()', () => {
  test('a ClusterIP reaches every backend; getpeername() says the Service address', async () => {
    const before = fx.counter('sock_xlate');
    const out = await client<Array<{ answer: string; peer: string }>>(tcpClient('10.0.0.213', 80, 60));
    expect(new Set(out.map((o) => o.answer))).toEqual(new Set(BACKENDS));
    for (const o of out) expect(o.peer).toBe('10.0.0.213:80');
    expect(fx.counter('sock_xlate') - before).toBe(60);
    expect(fx.counter('sock_rev_nat')).toBeGreaterThanOrEqual(60);
  });

  test('a NodePort on 127.0.0.1 and on the node address reaches a backend', async () => {
    for (const ip of ['127.0.0.1', NODE_IP]) {
      const out = await client<Array<{ answer: string; peer: string }>>(tcpClient(ip, 30080, 3));
      for (const o of out) {
        expect(BACKENDS).toContain(o.answer);
        expect(o.peer).toBe(`${ip}:30080`);
      }
    }
  });

  test('a Service without endpoints refuses at once (ECONNREFUSED), counted', async () => {
    const before = fx.counter('sock_reject');
    const out = await client<{ error: string; ms: number }>(`
      const t = Date.now();
      require('node:net').connect(80, '10.0.0.99').on('error', (e) => console.log(JSON.stringify({ error: e.code, ms: Date.now() - t })));`);
    expect(out.error).toBe('ECONNREFUSED');
    expect(out.ms).toBeLessThan(200);
    expect(fx.counter('sock_reject') - before).toBe(1);
  });

  test('an address that is no frontend is left alone (no route in the namespace)', async () => {
    const out = await client<Array<{ error?: string }>>(tcpClient('10.0.0.98', 80, 1));
    expect(out[0]?.error).toBe('ENETUNREACH');
  });

  test('sessionAffinity ClientIP: every connection of the namespace goes to one backend', async () => {
    const out = await client<Array<{ answer: string }>>(tcpClient('10.0.0.215', 80, 20));
    expect(new Set(out.map((o) => o.answer)).size).toBe(1);
    expect(fx.dp.maps.sockAffinity.entries().length).toBe(1);
  });
});

describe('UDP', () => {
  test('sendto() a Service: the answer comes from the Service address', async () => {
    const out = await client<Array<{ from: string; answer: string }>>(`
      const s = require('node:dgram').createSocket('udp4');
      const out = [];
      s.on('message', (m, r) => { out.push({ from: r.address + ':' + r.port, answer: String(m) }); if (out.length === 20) { console.log(JSON.stringify(out)); process.exit(0); } });
      for (let i = 0; i < 20; i++) s.send('q', 53, '10.0.0.53');
      setTimeout(() => { console.log(JSON.stringify(out)); process.exit(0); }, 3000);`);
    expect(out).toHaveLength(20);
    for (const o of out) {
      expect(o.from).toBe('10.0.0.53:53');
      expect(BACKENDS).toContain(o.answer);
    }
  });

  test('a connected socket sees the Service as its peer', async () => {
    const out = await client<{ peer: string; answer: string }>(`
      const s = require('node:dgram').createSocket('udp4');
      s.connect(53, '10.0.0.53', () => {
        const a = s.remoteAddress();
        s.on('message', (m) => { console.log(JSON.stringify({ peer: a.address + ':' + a.port, answer: String(m) })); process.exit(0); });
        s.send('q');
      });`);
    expect(out.peer).toBe('10.0.0.53:53');
    expect(BACKENDS).toContain(out.answer);
  });

  test('a connected socket whose backend is removed is destroyed; a new one reaches a live backend', async () => {
    const [file, args] = inCgroupArgv(`
      const dgram = require('node:dgram');
      const s = dgram.createSocket('udp4');
      let error = null;
      s.on('error', (e) => { error = e.code; });
      s.connect(53, '10.0.0.53', () => s.send('q'));
      s.once('message', (m) => {
        console.log('first ' + m);
        process.stdin.once('data', () => {
          // A destroyed socket fails its pending receive at once; a live one would answer.
          if (error === null) { s.on('message', (m2) => { console.log('still ' + m2); process.exit(0); }); s.send('q'); return; }
          const n = dgram.createSocket('udp4');
          n.connect(53, '10.0.0.53', () => n.send('q'));
          n.on('message', (m2) => { console.log('error ' + error + ' next ' + m2); process.exit(0); });
        });
      });`);
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 100 && !out.includes('first '); i++) await new Promise((r) => setTimeout(r, 50));
    const first = /first (\S+)/.exec(out)?.[1] as string;
    expect(BACKENDS).toContain(first);
    const destroyedBefore = fx.counter('sock_destroyed');
    await fx.program([WEB, { ...DNS, backends: BACKENDS.filter((b) => b !== first) }, EMPTY, STICKY]);
    // The destroyer walks the sockets of the namespace it runs in: run it in the clients' one.
    const run = await runProgram('nsenter', [`--net=/run/netns/${NS}`, process.execPath, '--input-type=module', '-e', `
      import { UdpSocketDestroyer } from '${join(REPO_ROOT, 'dist/src/bpf/socket-lb.js')}';
      const d = UdpSocketDestroyer.load('${PIN_DIR}'); d.run(); d.close();`]);
    expect(run.stderr.replace(/^\{.*\}$/gm, '').trim()).toBe('');
    child.stdin.write('go\n');
    await exited;
    const m = /error (\S+) next (\S+)/.exec(out);
    expect(m?.[1]).toBe('ECONNABORTED');
    expect(BACKENDS.filter((b) => b !== first)).toContain(m?.[2]);
    expect(fx.counter('sock_destroyed') - destroyedBefore).toBe(1);
    await fx.program(ALL);
  }, 30_000);
});

describe('links', () => {
  test('host namespace only: sockets of other namespaces are left to TC; a new program is swapped into the pinned links', async () => {
    const hostOnly = SocketLb.load(PIN_DIR, { hostNsOnly: true, nodePortLoopback: true });
    try {
      hostOnly.attach(cgroup);
      const out = await client<Array<{ error?: string }>>(tcpClient('10.0.0.213', 80, 1));
      expect(out[0]?.error).toBe('ENETUNREACH');
    } finally {
      lb.attach(cgroup);
      hostOnly.close();
    }
    for (const h of SOCK_HOOKS) expect(existsSync(sockLinkPinPath(PIN_DIR, h.hook))).toBe(true);
    const out = await client<Array<{ answer: string }>>(tcpClient('10.0.0.213', 80, 1));
    expect(BACKENDS).toContain(out[0]?.answer);
  });
});

describe('the socket-LB object\'s settings', () => {
  test('SockConfig matches struct vipr_sock_config, the whole .rodata of bpf/sock_lb.bpf.o', () => {
    const types = (JSON.parse(execFileSync('bpftool', ['btf', 'dump', 'file', sockObjectPath(), 'format', 'raw', '-j'], { encoding: 'utf8' })) as {
      types: Array<{ kind: string; name: string; size?: number; vars?: Array<{ offset: number; size: number }>; members?: Array<{ name: string; bits_offset: number }> }>;
    }).types;
    const struct = types.find((t) => t.kind === 'STRUCT' && t.name === 'vipr_sock_config');
    expect(struct?.size).toBe(SockConfig.size);
    expect(struct?.members?.map((m) => [m.name, m.bits_offset / 8])).toEqual(SockConfig.fields.map((f) => [f.name, f.offset]));
    const rodata = types.find((t) => t.kind === 'DATASEC' && t.name === '.rodata');
    expect(rodata?.vars).toEqual([{ type_id: expect.any(Number), offset: 0, size: SockConfig.size }]);
  });
});
