/*
 * Upgrades that lose no connection, end to end. A lab's agent runs the previous map layout (the
 * test build dist/bpf-test/tc_lb_previous.bpf.o: one conntrack LRU, vipr_conntrack_v1, chosen
 * with the hidden VIPR_TC_OBJECT), carrying long-lived TCP connections through a random-scheduled
 * Service and a ClientIP-affinity Service, and a UDP flow. The agent of the current build takes
 * over (`vipr lab restart-agent`): every connection still answers from the same backend, the UDP
 * flow loses no datagram and keeps its backend, a new connection keeps its affinity backend, and
 * the old pin is gone. Then the same for a grown conntrack map: an agent started with a larger
 * --ct-max-tcp. Without the migration, the new agent starts on empty conntrack maps: the next
 * packet of each connection is balanced afresh (most land on another backend, which resets them)
 * and the old pin stays; a changed size is only logged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import {
  REPO_ROOT, VIPR_MAIN, ensureBuilt, forceCleanLab, labStatus, labUp, uniqueLabName, vipr, type LabStatusJson,
} from '../helpers/lab.js';
import { KeepaliveProbe } from '../helpers/probe.js';
import { inCgroupArgv } from '../../src/lab/cgroups.js';
import * as libbpf from '../../src/bpf/libbpf.js';
import { BpfMap } from '../../src/bpf/map.js';
import { CT_FORWARD, CtKey, CtValue, MAPS } from '../../src/bpf/layouts.js';

const PREVIOUS_OBJECT = join(REPO_ROOT, 'dist', 'bpf-test', 'tc_lb_previous.bpf.o');
const NGINX_VIP = '10.0.0.213';
const STICKY_VIP = '10.0.0.82';
const UDP_VIP = '10.0.0.53';

const name = uniqueLabName('upg');
let status: LabStatusJson;
let pinDir = '';
let clientNetns = '';
let ownAgent: ChildProcess | null = null;
const probes: KeepaliveProbe[] = [];
let udp: UdpFlow | null = null;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** The agents log at info: the test reads what the migration says it did. */
const AGENT_ENV = { ...process.env, VIPR_LOG_LEVEL: 'info' };

/**
 * One UDP socket from the client (not in the node's cgroup, so TC translates it, not socket LB)
 * asking `whoami` every 100 ms from the same source port; prints `sent N` and each answer.
 */
class UdpFlow {
  readonly lines: string[] = [];
  private readonly proc: ChildProcess;
  private readonly exited: Promise<void>;

  constructor(netns: string, ip: string, port: number) {
    const script = `
      const s = require('node:dgram').createSocket('udp4');
      let sent = 0;
      s.on('message', (m) => process.stdout.write('answer ' + m.toString() + '\\n'));
      s.connect(${port}, ${JSON.stringify(ip)}, () => {
        setInterval(() => { s.send('whoami'); process.stdout.write('sent ' + (++sent) + '\\n'); }, 100);
      });
      process.on('SIGTERM', () => process.exit(0));`;
    this.proc = spawn('nsenter', [`--net=/run/netns/${netns}`, process.execPath, '-e', script]);
    let buf = '';
    this.proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      this.lines.push(...parts);
    });
    this.exited = new Promise((r) => this.proc.on('exit', () => r()));
  }

  answers(): Array<{ backend: string; client: string }> {
    return this.lines.filter((l) => l.startsWith('answer ')).map((l) => {
      const [, backend, client] = l.split(' ');
      return { backend: backend as string, client: client as string };
    });
  }

  sent(): number {
    return this.lines.filter((l) => l.startsWith('sent ')).length;
  }

  async waitFor(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.answers().length < n) {
      if (Date.now() > deadline) throw new Error(`UDP flow got ${this.answers().length} of ${n} answers`);
      await sleep(50);
    }
  }

  /** Stops sending, then waits for the answers in flight. */
  async stop(): Promise<void> {
    this.proc.kill('SIGSTOP');
    await sleep(500);
    this.proc.kill('SIGKILL');
    await this.exited;
  }
}

function svcYaml(svcName: string, vip: string, endpoints: string[]): string {
  const docs = [
    {
      apiVersion: 'v1', kind: 'Service', metadata: { name: svcName, namespace: 'default' },
      spec: {
        type: 'ClusterIP', clusterIP: vip, ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 80 }],
        sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 3600 } },
      },
    },
    {
      apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
      metadata: { name: `${svcName}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': svcName } },
      addressType: 'IPv4', ports: [{ name: 'http', protocol: 'TCP', port: 80 }],
      endpoints: endpoints.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
    },
  ];
  return docs.map((d) => stringify(d)).join('---\n');
}

/** The agent log's records (pino JSON lines). */
function agentRecords(): Array<{ msg: string; [field: string]: unknown }> {
  return readFileSync(status.nodes[0]?.agentLog as string, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string });
}

function agentMessages(): string[] {
  return agentRecords().map((r) => r.msg);
}

function pins(): string[] {
  return readdirSync(pinDir).filter((f) => f.startsWith('vipr_'));
}

/** The forward conntrack entries of connections to `vip`:80 in a pinned conntrack map. */
function forwardFlowsTo(mapName: string, vip: string): number {
  const map = new BpfMap({ name: mapName, key: CtKey, value: CtValue, perCpu: false }, libbpf.objGet(join(pinDir, mapName)));
  try {
    return map.keys().filter((k) => k.dir === CT_FORWARD && k.daddr === vip && k.dport === 80).length;
  } finally {
    map.close();
  }
}

/** Each connection answered only by the backend it started with, and nothing failed. */
function expectEveryConnectionKept(since: number[]): void {
  probes.forEach((p, i) => {
    expect(p.errors()).toEqual([]);
    expect(p.answers().length).toBeGreaterThan((since[i] as number) + 5);
    expect(new Set(p.backends()).size).toBe(1);
    expect(new Set(p.answers().map((a) => a.client)).size).toBe(1);
  });
}

async function waitForAnswers(more: number): Promise<void> {
  const counts = probes.map((p) => p.answers().length);
  await Promise.all(probes.map((p, i) => p.waitFor((counts[i] as number) + more, 15_000)));
  await udp?.waitFor((udp?.answers().length ?? 0) + more, 15_000);
}

beforeAll(async () => {
  await ensureBuilt();
  if (!existsSync(PREVIOUS_OBJECT)) throw new Error(`${PREVIOUS_OBJECT} is missing: run 'make build'`);
  await labUp(name, { agent: true, env: { ...AGENT_ENV, VIPR_TC_OBJECT: PREVIOUS_OBJECT } });
  status = await labStatus(name);
  pinDir = status.pinDir;
  clientNetns = status.hosts.find((h) => h.name === 'client')?.netns as string;
  const nginx = status.services.find((s) => s.name === 'nginx-service')?.ports[0]?.endpoints ?? [];
  writeFileSync(join(status.manifests, 'sticky.yaml'), svcYaml('sticky', STICKY_VIP, nginx.map((e) => e.split(':')[0] as string)));
}, 240_000);

afterAll(async () => {
  for (const p of probes) await p.stop().catch(() => undefined);
  await udp?.stop().catch(() => undefined);
  if (ownAgent !== null && ownAgent.exitCode === null) {
    ownAgent.kill('SIGTERM');
    await new Promise((r) => ownAgent?.once('exit', r));
  }
  await forceCleanLab(name);
}, 60_000);

describe('upgrades lose no connection', () => {
  test('the agent of the previous layout carries the connections', async () => {
    expect(agentMessages()).toContain('the TC object has the previous map layout (a test build): conntrack GC off');
    expect(pins()).toContain('vipr_conntrack_v1');
    // Four connections through the random scheduler, two through ClientIP affinity.
    const deadline = Date.now() + 15_000;
    for (;;) {
      const probe = new KeepaliveProbe(clientNetns, STICKY_VIP, 80, 100);
      try {
        await probe.waitFor(1, 3000);
        await probe.stop();
        break;
      } catch (err) {
        await probe.stop();
        if (Date.now() > deadline) throw err;
        await sleep(300);
      }
    }
    for (const vip of [NGINX_VIP, NGINX_VIP, NGINX_VIP, NGINX_VIP, STICKY_VIP, STICKY_VIP]) probes.push(new KeepaliveProbe(clientNetns, vip, 80, 100));
    udp = new UdpFlow(clientNetns, UDP_VIP, 53);
    await waitForAnswers(5);
    const sticky = probes.slice(4).map((p) => p.backends()[0]);
    expect(new Set(sticky).size).toBe(1);
    expect(forwardFlowsTo('vipr_conntrack_v1', NGINX_VIP)).toBeGreaterThanOrEqual(4);
    // The socket-LB object (current build, sharing bpf/lib/maps.h) pins the current conntrack
    // maps too; the previous layout's programs never write them.
    if (pins().includes(MAPS.ctTcp.name)) expect(forwardFlowsTo(MAPS.ctTcp.name, NGINX_VIP)).toBe(0);
  }, 60_000);

  test('the agent of the current build takes over: every connection and the UDP flow keep their backend, affinity holds, the old pin is gone', async () => {
    expect(probes).toHaveLength(6);
    const since = probes.map((p) => p.answers().length);
    const stickyBackend = probes[4]?.backends()[0];
    const res = await vipr(['lab', 'restart-agent', '--name', name], { env: AGENT_ENV, timeoutMs: 60_000 });
    expect(res.code).toBe(0);
    await waitForAnswers(10);
    expectEveryConnectionKept(since);
    expect(new Set(udp?.answers().map((a) => a.backend)).size).toBe(1);
    expect(new Set(udp?.answers().map((a) => a.client)).size).toBe(1);

    // The flows live in the established map now, and the previous layout's pin is gone.
    expect(pins()).not.toContain('vipr_conntrack_v1');
    expect(pins()).toEqual(expect.arrayContaining([MAPS.ctTcp.name, MAPS.ctTcpSyn.name, MAPS.ctUdp.name]));
    expect(forwardFlowsTo(MAPS.ctTcp.name, NGINX_VIP)).toBeGreaterThanOrEqual(4);
    const migrated = agentRecords().filter((r) => r.msg === 'migrated; old pin removed').map((r) => r.migration);
    expect(migrated).toContain('vipr_conntrack_v1 → vipr_ct_tcp_v1, vipr_ct_tcp_syn_v1, vipr_ct_udp_v1');

    // A new connection from the same client still goes to its affinity backend.
    const fresh = new KeepaliveProbe(clientNetns, STICKY_VIP, 80, 100);
    try {
      await fresh.waitFor(1);
      expect(fresh.backends()[0]).toBe(stickyBackend);
    } finally {
      await fresh.stop();
    }
  }, 90_000);

  test('an agent asking for a larger conntrack map migrates into it: every connection kept', async () => {
    const tcpMap = MAPS.ctTcp.name;
    const before = libbpf.pinnedMaxEntries(join(pinDir, tcpMap)) as number;
    const grown = Math.min(before * 2, 1 << 24);
    expect(grown).toBeGreaterThan(before);
    const since = probes.map((p) => p.answers().length);
    const stickyBackend = probes[4]?.backends()[0];

    // The lab's agent, stopped, and the same command line again with --ct-max-tcp.
    const node = status.nodes[0];
    if (!node) throw new Error('the lab has no node');
    const labAgent = (await labStatus(name)).nodes[0]?.agentPid as number;
    const argv = readFileSync(`/proc/${labAgent}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
    process.kill(labAgent, 'SIGTERM');
    for (let i = 0; i < 100 && existsSync(`/proc/${labAgent}`); i++) await sleep(50);
    const [file, args] = inCgroupArgv(node.cgroup as string, 'nsenter', [`--net=/run/netns/${node.netns}`, ...argv, '--ct-max-tcp', String(grown)]);
    ownAgent = spawn(file, args, { env: AGENT_ENV, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    ownAgent.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    ownAgent.stderr?.on('data', (d: Buffer) => (out += d.toString()));
    const deadline = Date.now() + 30_000;
    while (!out.includes('"agent running"')) {
      if (ownAgent.exitCode !== null || Date.now() > deadline) throw new Error(`the agent with --ct-max-tcp ${grown} did not start:\n${out}`);
      await sleep(100);
    }

    await waitForAnswers(10);
    expectEveryConnectionKept(since);
    expect(new Set(udp?.answers().map((a) => a.backend)).size).toBe(1);
    expect(libbpf.pinnedMaxEntries(join(pinDir, tcpMap))).toBe(grown);
    expect(pins().filter((p) => p.includes('resizing'))).toEqual([]);
    expect(forwardFlowsTo(tcpMap, NGINX_VIP)).toBeGreaterThanOrEqual(4);
    expect(out).toContain(`${tcpMap}: ${before} → ${grown} entries`);

    const fresh = new KeepaliveProbe(clientNetns, STICKY_VIP, 80, 100);
    try {
      await fresh.waitFor(1);
      expect(fresh.backends()[0]).toBe(stickyBackend);
    } finally {
      await fresh.stop();
    }

    // Every datagram of the UDP flow across both upgrades was answered (the last one may be in flight).
    await udp?.stop();
    expect((udp?.sent() ?? 0) - (udp?.answers().length ?? 0)).toBeLessThanOrEqual(1);
  }, 120_000);
});
