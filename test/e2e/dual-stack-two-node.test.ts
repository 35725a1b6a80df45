/*
 * The dual-stack two-node lab end to end: IPv6 routes between the nodes and from the external
 * host (the underlay fd00:192:168:60::/64, LoadBalancer IPs fd00:10:250::/112 via node1), then a
 * BPF agent per node started as the lab starts them (XDP on the underlay, TC everywhere, a
 * --node-ip per family): the client (outside every node's cgroup, so through TC) reaches the
 * IPv6 ClusterIP on pods of both nodes without a checksum error, UDP over IPv6, NodePort over
 * IPv6 from the external host on both nodes, externalTrafficPolicy Local keeping the client's
 * IPv6 address, and IPv4 beside it all. The default manifests: web-nodeport (30080) with pods of
 * both nodes, web-lb (30081, LB IPs 10.250.0.10 and fd00:10:250::10, Local) likewise.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { agentArgv, loadLabState } from '../../src/lab/lab.js';
import { planLab } from '../../src/lab/topology.js';
import {
  datapathCounter, ensureBuilt, forceCleanLab, labChecksumErrors, labDown, labExec, labLeftovers, labStatus, labTcpConnect, labUdpRequest, labUp,
  nodePinDirOf, rootRoutesToLab, startNodeAgent, uniqueLabName, VIPR_MAIN, type NodeAgent,
} from '../helpers/lab.js';

const NODE1 = 'fd00:192:168:60::11';
const NODE2 = 'fd00:192:168:60::12';
const EXT = 'fd00:192:168:60::100';
const NODE1_PODS = ['be1', 'be2'];
const NODE2_PODS = ['be3', 'be4'];
const BACKENDS = [...NODE1_PODS, ...NODE2_PODS];

describe('two-node dual-stack lab plan', () => {
  const plan = planLab({ name: 'vipr', backends: 2, nodes: 2 });
  const routesOf = (netns: string): string[] =>
    plan.routes.filter((r) => r.netns === netns && (r.dest.includes(':') || (r.via ?? '').includes(':'))).map((r) => `${r.dest} via ${r.via ?? '-'} dev ${r.dev}`);

  it('routes IPv6 pod CIDRs over the underlay, the client subnet via node1, and only LoadBalancer IPs from ext', () => {
    expect(plan.nodes.map((n) => [n.nodeIps, n.podCidrs])).toEqual([
      [['192.168.60.11', NODE1], ['10.244.1.0/24', 'fd00:10:244:1::/64']],
      [['192.168.60.12', NODE2], ['10.244.2.0/24', 'fd00:10:244:2::/64']],
    ]);
    expect(plan.underlay?.cidrs).toEqual(['192.168.60.0/24', 'fd00:192:168:60::/64']);
    expect(routesOf('vipr-node2')).toEqual([
      'fd00:10:244:2::11/128 via - dev vbe3',
      'fd00:10:244:2::12/128 via - dev vbe4',
      `fd00:10:244:1::/64 via ${NODE1} dev eth0`,
      `fd00:172:30::/64 via ${NODE1} dev eth0`,
      `fd00:10:96::/112 via ${EXT} dev eth0`,
    ]);
    expect(routesOf('vipr-ext')).toEqual([`fd00:10:250::/112 via ${NODE1} dev eth0`]);
    expect(plan.external?.ips).toEqual(['192.168.60.100', EXT]);
  });
});

describe('vipr lab --nodes 2 (dual-stack)', () => {
  const lab = uniqueLabName('ds2');

  async function curlFrom(host: string, url: string, count: number, timeout = 2): Promise<string[]> {
    const res = await labExec(lab, host, ['sh', '-c', `for i in $(seq ${count}); do curl -s -g -m ${timeout} '${url}' || echo FAILED; done`], { timeoutMs: 120_000 });
    return res.stdout.trim().split('\n');
  }

  beforeAll(async () => {
    await ensureBuilt();
    await labUp(lab, { nodes: 2, backends: 2 });
  }, 180_000);

  afterAll(() => forceCleanLab(lab), 60_000);

  it('routes IPv6 between the nodes and from the client to pods on both, the client address kept; ext reaches the nodes only', async () => {
    for (const [ip, be] of [['fd00:10:244:1::11', 'be1'], ['fd00:10:244:2::12', 'be4']] as const) {
      const res = await labExec(lab, 'client', ['curl', '-sS', '-g', '-m', '3', `http://[${ip}]/whoami`]);
      expect({ code: res.code, err: res.stderr }).toEqual({ code: 0, err: '' });
      expect(res.stdout).toMatch(new RegExp(`^${be} \\[fd00:172:30::2\\]:\\d+\\n$`));
    }
    expect((await labExec(lab, 'node1', ['curl', '-sS', '-g', '-m', '3', 'http://[fd00:10:244:2::11]/whoami'])).stdout).toMatch(/^be3 \[fd00:192:168:60::11\]:\d+\n$/);
    expect(await labTcpConnect(lab, 'ext', NODE1, 1)).toBe('ECONNREFUSED');
    expect(await labTcpConnect(lab, 'ext', NODE2, 1)).toBe('ECONNREFUSED');
    for (const ip of ['fd00:10:244:1::11', 'fd00:10:244:2::11', 'fd00:10:96::213', 'fd00:172:30::2']) {
      expect([ip, await labTcpConnect(lab, 'ext', ip, 80)]).toEqual([ip, 'ENETUNREACH']);
    }
    const fwd = await labExec(lab, 'node2', ['sysctl', '-n', 'net.ipv6.conf.all.forwarding']);
    expect(fwd.stdout.trim()).toBe('1');
  });

  describe('a BPF agent per node, as the lab starts them', () => {
    const agents: NodeAgent[] = [];

    beforeAll(async () => {
      const state = await loadLabState(lab);
      for (const node of state.nodes) {
        const argv = agentArgv(state, VIPR_MAIN, node);
        agents.push(await startNodeAgent(node.netns, argv.slice(argv.indexOf('run') + 1)));
      }
    }, 90_000);

    afterAll(async () => {
      for (const agent of agents) await agent.kill();
    }, 30_000);

    it('curl -g http://[fd00:10:96::213]/ from the client reaches pods of both nodes through TC, with no checksum error', async () => {
      const answers = await curlFrom('client', 'http://[fd00:10:96::213]/', 40);
      expect(answers.filter((a) => !BACKENDS.includes(a))).toEqual([]);
      expect(answers.some((a) => NODE1_PODS.includes(a)) && answers.some((a) => NODE2_PODS.includes(a))).toBe(true);
      const reply = await labUdpRequest(lab, 'client', 'fd00:10:96::53', 53, 'whoami');
      expect(reply).toMatch(/^be\d \[[0-9a-f:]+\]:\d+$/);
      for (const host of ['client', ...BACKENDS]) {
        expect([host, await labChecksumErrors(lab, host)]).toEqual([host, { tcp: 0, udp: 0, udp6: 0 }]);
      }
    }, 120_000);

    it('NodePort over IPv6 answers the external host on both nodes; local pods see the client, remote ones the node', async () => {
      const tcSkipped = await datapathCounter(nodePinDirOf(lab, 'node1'), 'tc_xdp_done');
      for (const [node, local] of [[NODE1, NODE1_PODS], [NODE2, NODE2_PODS]] as const) {
        const answers = await curlFrom('ext', `http://[${node}]:30080/whoami`, 20);
        expect([node, answers.filter((a) => a === 'FAILED')]).toEqual([node, []]);
        const seen = answers.map((a) => /^(be\d) \[([0-9a-f:]+)\]:\d+$/.exec(a)?.slice(1) ?? [a, '?']);
        expect(new Set(seen.map(([b]) => b)).size).toBeGreaterThan(1);
        for (const [backend, client] of seen) {
          expect([node, backend, client]).toEqual([node, backend, local.includes(backend as string) ? EXT : node]);
        }
      }
      for (const host of ['ext', ...BACKENDS]) expect([host, (await labChecksumErrors(lab, host)).tcp]).toEqual([host, 0]);
      // XDP on node1's eth0 translated the flows to its own pods and passed them marked: TC
      // ingress let them through unread (IPv6's struct vipr_xdp_meta, the hop limit checked).
      expect(await datapathCounter(nodePinDirOf(lab, 'node1'), 'tc_xdp_done')).toBeGreaterThan(tcSkipped + 20);
      // The flows to node2's pods XDP forwarded itself: their next hop (the FIB's answer) kept a
      // second for the next new flow, towards node2 out of node1's eth0.
      const nexthops = JSON.parse(
        execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', join(nodePinDirOf(lab, 'node1'), 'vipr_xdp_nexthops6_v1')], { encoding: 'utf8' }),
      ) as Array<{ formatted?: { value: { ifindex: number; expires_ns: number } } }>;
      expect(nexthops.length).toBeGreaterThan(0);
      for (const e of nexthops) expect([e.formatted?.value.ifindex ?? 0, e.formatted?.value.expires_ns ?? 0].map((v) => v > 0)).toEqual([true, true]);
    }, 120_000);

    it("externalTrafficPolicy Local keeps the client's IPv6 address: NodePort on each node and the LoadBalancer IP", async () => {
      for (const [url, local] of [
        [`http://[${NODE1}]:30081/whoami`, NODE1_PODS],
        [`http://[${NODE2}]:30081/whoami`, NODE2_PODS],
        ['http://[fd00:10:250::10]/whoami', NODE1_PODS],
      ] as const) {
        const answers = await curlFrom('ext', url, 8);
        for (const a of answers) expect([url, a]).toEqual([url, expect.stringMatching(new RegExp(`^(${local.join('|')}) \\[${EXT}\\]:\\d+$`))]);
      }
    }, 60_000);

    it('IPv4 is served beside it: NodePort on both nodes and Local on the IPv4 LoadBalancer IP', async () => {
      for (const node of ['192.168.60.11', '192.168.60.12']) {
        const answers = await curlFrom('ext', `http://${node}:30080/`, 10);
        expect([node, answers.filter((a) => !BACKENDS.includes(a))]).toEqual([node, []]);
      }
      for (const a of await curlFrom('ext', 'http://10.250.0.10/whoami', 6)) expect(a).toMatch(/^be[12] 192\.168\.60\.100:\d+$/);
      const v4 = await curlFrom('client', 'http://10.0.0.213/', 10);
      expect(v4.filter((a) => !BACKENDS.includes(a))).toEqual([]);
    }, 60_000);
  });

  it('down removes both nodes, the underlay and the external host, IPv6 routes included', async () => {
    const pids = (await labStatus(lab)).processes.map((p) => p.pid);
    expect((await labDown(lab)).code).toBe(0);
    expect(await labLeftovers(lab, pids)).toEqual([]);
    expect(await rootRoutesToLab()).toEqual([]);
  });
});
