/*
 * The dual-stack lab (the default, `--ip-family dual`) end to end on one node: IPv6 on every
 * link beside IPv4, usable at once; the real agent serving nginx-service and echo-udp over both
 * families (`curl -g http://[fd00:10:96::213]/` from the client reaches every backend, UDP to
 * [fd00:10:96::53]:53, no checksum error anywhere); then, in the same lab, the fallback modes
 * (iptables, nftables) serving IPv6 beside IPv4; and a teardown that leaves nothing, IPv6 routes
 * included. The two-node lab (NodePort, externalTrafficPolicy Local over IPv6) is
 * dual-stack-two-node.test.ts.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { agentArgv, loadLabState } from '../../src/lab/lab.js';
import { defaultManifests } from '../../src/lab/manifests.js';
import { planLab } from '../../src/lab/topology.js';
import {
  ensureBuilt, forceCleanLab, labChecksumErrors, labDown, labExec, labLeftovers, labStatus, labUdpRequest, labUp, rootRoutesToLab,
  startNodeAgent, uniqueLabName, vipr, VIPR_MAIN, type LabStatusJson, type NodeAgent,
} from '../helpers/lab.js';

const execFileP = promisify(execFile);

const VIP4 = '10.0.0.213';
const VIP6 = 'fd00:10:96::213';
const UDP_VIP6 = 'fd00:10:96::53';
const CLIENT6 = 'fd00:172:30::2';
const BACKENDS = ['be1', 'be2', 'be3'];
const PODS6 = ['fd00:10:244::11', 'fd00:10:244::12', 'fd00:10:244::13'];

describe('dual-stack lab plan (the default)', () => {
  const plan = planLab({ name: 'vipr', backends: 3 });

  it('gives every host an IPv6 address beside the IPv4 one, and IPv6 routes beside the IPv4 ones', () => {
    expect(plan.ipFamily).toBe('dual');
    expect(plan.client.ips).toEqual(['172.30.0.2', CLIENT6]);
    expect(plan.nodes[0]?.backends.map((b) => b.ips)).toEqual([
      ['10.244.0.11', 'fd00:10:244::11'], ['10.244.0.12', 'fd00:10:244::12'], ['10.244.0.13', 'fd00:10:244::13'],
    ]);
    expect(plan.nodes[0]?.podCidrs).toEqual(['10.244.0.0/24', 'fd00:10:244::/64']);
    const podLink = plan.links.find((l) => l.peer.host === 'be2');
    expect([podLink?.local.addresses, podLink?.peer.addresses]).toEqual([['10.244.0.1/32', 'fd00:10:244::1/128'], ['10.244.0.12/32', 'fd00:10:244::12/128']]);
    expect(plan.routes).toContainEqual({ netns: 'vipr-be2', dest: 'default', dev: 'eth0', via: 'fd00:10:244::1', onlink: true });
    expect(plan.routes).toContainEqual({ netns: 'vipr-node', dest: 'fd00:10:244::12/128', dev: 'vbe2', via: null, onlink: false });
    expect(plan.routes).toContainEqual({ netns: 'vipr-client', dest: 'default', dev: 'eth0', via: 'fd00:172:30::1', onlink: false });
    expect(plan.routes).toContainEqual({ netns: 'vipr-node', dest: 'fd00:10:96::/112', dev: 'eth0', via: CLIENT6, onlink: false });
    expect(plan.serviceCidrs).toEqual(['10.0.0.0/24', 'fd00:10:96::/112']);
    expect(planLab({ name: 'vipr', backends: 1, ipFamily: 'ipv6' }).nodes[0]?.backends[0]?.ips).toEqual(['fd00:10:244::11']);
  });

  it('writes dual-stack Services with an EndpointSlice per family', () => {
    const [svc, v4, v6, ...rest] = parseAllDocuments(defaultManifests(plan.nodes).get('nginx-service.yaml') ?? '').map((d) => d.toJS() as Record<string, unknown>);
    expect(rest).toEqual([]);
    expect(svc).toMatchObject({
      spec: { clusterIP: VIP4, clusterIPs: [VIP4, VIP6], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'RequireDualStack' },
    });
    const addresses = (slice: unknown): string[] => (slice as { endpoints: { addresses: string[] }[] }).endpoints.map((e) => e.addresses[0] as string);
    expect([v4?.addressType, addresses(v4)]).toEqual(['IPv4', ['10.244.0.11', '10.244.0.12', '10.244.0.13']]);
    expect([v6?.addressType, (v6?.metadata as { name: string }).name, addresses(v6)]).toEqual(['IPv6', 'nginx-service-lab-ipv6', PODS6]);
  });
});

describe('vipr lab (dual-stack, one node)', () => {
  const lab = uniqueLabName('ds');
  let status: LabStatusJson;

  /** `count` new connections from `host` to `url`, one answer line each (FAILED for a failure). */
  async function curlMany(host: string, url: string, count: number): Promise<string[]> {
    const res = await labExec(lab, host, ['sh', '-c', `for i in $(seq ${count}); do curl -s -g -m 2 '${url}' || echo FAILED; done`], { timeoutMs: 120_000 });
    return res.stdout.trim().split('\n');
  }

  /** Every answer is a backend's name, and each backend answered at least `min` times. */
  function expectSpread(answers: string[], count: number, min: number): void {
    expect(answers).toHaveLength(count);
    expect(answers.filter((a) => !BACKENDS.includes(a))).toEqual([]);
    for (const b of BACKENDS) expect([b, answers.filter((a) => a === b).length >= min]).toEqual([b, true]);
  }

  // The lab without its agent: each dataplane below starts its own in the node's namespace
  // (the BPF one with the lab's own command line), so one that cannot start fails only its tests.
  beforeAll(async () => {
    await ensureBuilt();
    await labUp(lab);
    status = await labStatus(lab);
  }, 180_000);

  afterAll(() => forceCleanLab(lab), 60_000);

  it('gives every host its IPv6 address beside the IPv4 one, usable at once, and forwards IPv6 on the node', async () => {
    expect(status.ipFamily).toBe('dual');
    expect(status.hosts.map((h) => [h.name, h.addresses])).toEqual([
      ['client', ['172.30.0.2/24', 'fd00:172:30::2/64']],
      ['node', ['172.30.0.1/24', 'fd00:172:30::1/64', ...Array<string[]>(3).fill(['10.244.0.1/32', 'fd00:10:244::1/128']).flat()]],
      ['be1', ['10.244.0.11/32', 'fd00:10:244::11/128']],
      ['be2', ['10.244.0.12/32', 'fd00:10:244::12/128']],
      ['be3', ['10.244.0.13/32', 'fd00:10:244::13/128']],
    ]);
    for (const host of ['client', 'node', 'be2']) {
      const tentative = await labExec(lab, host, ['ip', '-6', 'addr', 'show', 'tentative']);
      expect([host, tentative.stdout]).toEqual([host, '']);
    }
    const sysctls = await labExec(lab, 'node', ['sysctl', '-n', 'net.ipv6.conf.all.forwarding', 'net.ipv4.ip_forward', 'net.ipv6.conf.eth0.accept_dad']);
    expect(sysctls.stdout.trim().split('\n')).toEqual(['1', '1', '0']);
    expect((await labExec(lab, 'client', ['sysctl', '-n', 'net.ipv6.conf.all.forwarding'])).stdout.trim()).toBe('0');
    expect((await labExec(lab, 'be1', ['ethtool', '-k', 'eth0'])).stdout).toMatch(/^tx-checksumming: off$/m);
  });

  it('lists both cluster IPs and the endpoints of both families', async () => {
    const nginx = status.services.find((s) => s.name === 'nginx-service');
    expect(nginx?.clusterIPs).toEqual([VIP4, VIP6]);
    expect(nginx?.ports[0]?.endpoints).toEqual([...['10.244.0.11', '10.244.0.12', '10.244.0.13'].map((ip) => `${ip}:80`), ...PODS6.map((ip) => `[${ip}]:80`)]);
    expect(status.services.find((s) => s.name === 'echo-udp')?.clusterIPs).toEqual(['10.0.0.53', UDP_VIP6]);
    const table = await vipr(['lab', 'status', '--name', lab]);
    expect(table.stdout).toMatch(/^default\/nginx-service\s+ClusterIP\s+10\.0\.0\.213:80\/TCP,\[fd00:10:96::213\]:80\/TCP\s/m);
  });

  it('routes IPv6 from the client to every pod, which sees the client address, over TCP and UDP', async () => {
    for (const [i, ip] of PODS6.entries()) {
      const who = await labExec(lab, 'client', ['curl', '-sS', '-g', '-m', '3', `http://[${ip}]/whoami`]);
      expect({ code: who.code, out: who.stdout, err: who.stderr }).toMatchObject({ code: 0, err: '' });
      expect(who.stdout).toMatch(new RegExp(`^${BACKENDS[i]} \\[fd00:172:30::2\\]:\\d+\\n$`));
      expect(await labUdpRequest(lab, 'client', ip, 5353, 'whoami')).toMatch(new RegExp(`^${BACKENDS[i]} \\[fd00:172:30::2\\]:\\d+$`));
    }
    // IPv4 clients are still themselves, not ::ffff:-mapped (one socket per family).
    expect((await labExec(lab, 'client', ['curl', '-sS', '-m', '3', 'http://10.244.0.11/whoami'])).stdout).toMatch(/^be1 172\.30\.0\.2:\d+\n$/);
  });

  describe('the BPF agent, as the lab starts it', () => {
    let agent: NodeAgent | null = null;

    beforeAll(async () => {
      const state = await loadLabState(lab);
      const argv = agentArgv(state, VIPR_MAIN);
      agent = await startNodeAgent(state.nodes[0]?.netns as string, argv.slice(argv.indexOf('run') + 1));
    }, 60_000);

    afterAll(() => agent?.kill(), 30_000);

    it('BPF: curl -g http://[fd00:10:96::213]/ from the client reaches all three backends, with no checksum error anywhere', async () => {
      expectSpread(await curlMany('client', `http://[${VIP6}]/`, 60), 60, 5);
      for (const host of ['client', 'node', ...BACKENDS]) {
        expect([host, await labChecksumErrors(lab, host)]).toEqual([host, { tcp: 0, udp: 0, udp6: 0 }]);
      }
    }, 120_000);

    it("BPF: the backend sees the client's IPv6 address; UDP over IPv6 is answered by a backend", async () => {
      const [who] = await curlMany('client', `http://[${VIP6}]/whoami`, 1);
      expect(who).toMatch(/^be\d \[fd00:172:30::2\]:\d+$/);
      for (let i = 0; i < 3; i++) expect(await labUdpRequest(lab, 'client', UDP_VIP6, 53, 'whoami')).toMatch(/^be\d \[fd00:172:30::2\]:\d+$/);
      expect((await labChecksumErrors(lab, 'client')).udp6).toBe(0);
    }, 60_000);

    it('BPF: IPv4 is served as before beside it, from the client and from the node', async () => {
      expectSpread(await curlMany('client', `http://${VIP4}/`, 30), 30, 2);
      expect(await labUdpRequest(lab, 'client', '10.0.0.53', 53, 'whoami')).toMatch(/^be\d 172\.30\.0\.2:\d+$/);
      expect((await curlMany('node', `http://[${VIP6}]/`, 6)).filter((a) => !BACKENDS.includes(a))).toEqual([]);
    }, 60_000);

    it('vipr list -n shows the IPv6 Service and its backends as ipvsadm does', async () => {
      const res = await vipr(['list', '-n', '--pin-dir', status.pinDir]);
      expect(res.code).toBe(0);
      expect(res.stdout).toMatch(/^TCP {2}\[fd00:10:96::213\]:80 random$/m);
      expect(res.stdout).toMatch(/^UDP {2}\[fd00:10:96::53\]:53 random$/m);
      expect(res.stdout).toMatch(/^TCP {2}10\.0\.0\.213:80 random$/m);
      for (const ip of PODS6) expect(res.stdout).toContain(`-> [${ip}]:80`);
    });
  });

  describe.each([
    ['iptables (legacy)', ['--mode', 'iptables', '--iptables-backend', 'legacy'], 'ip6tables-legacy-save'],
    ['nftables', ['--mode', 'nftables'], 'nft'],
  ])('then vipr run %s in the same lab', (title, args, tool) => {
    let agent: NodeAgent | null = null;

    beforeAll(async () => {
      // The previous dataplane's agent is gone (killed); this mode's agent removes what it left.
      const node = status.nodes[0];
      if (!node) throw new Error('the lab has no node');
      agent = await startNodeAgent(node.netns, [
        ...args, '--manifests', status.manifests, '--node-name', 'node', '--node-ip', '172.30.0.1', '--node-ip', 'fd00:172:30::1',
        '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56', '--pin-dir', node.pinDir, '--min-sync-period', '200ms',
      ]);
    }, 60_000);

    afterAll(() => agent?.kill(), 30_000);

    it(`${title}: the IPv6 ClusterIP spreads over the backends from the client and answers the node; UDP over IPv6; IPv4 beside`, async () => {
      expectSpread(await curlMany('client', `http://[${VIP6}]/`, 30), 30, 2);
      // The client is outside --cluster-cidr: masqueraded to the node's address towards the pod, as kube-proxy does.
      expect(await labUdpRequest(lab, 'client', UDP_VIP6, 53, 'whoami')).toMatch(/^be\d \[fd00:10:244::1\]:\d+$/);
      expect((await curlMany('node', `http://[${VIP6}]/`, 6)).filter((a) => !BACKENDS.includes(a))).toEqual([]);
      expectSpread(await curlMany('client', `http://${VIP4}/`, 30), 30, 2);
      for (const host of ['client', ...BACKENDS]) expect([host, await labChecksumErrors(lab, host)]).toEqual([host, { tcp: 0, udp: 0, udp6: 0 }]);
      const rules = await execFileP('nsenter', [`--net=/run/netns/${lab}-node`, tool, ...(tool === 'nft' ? ['list', 'table', 'ip6', 'kube-proxy'] : [])]);
      expect(rules.stdout).toContain(tool === 'nft' ? VIP6 : `${VIP6}/128`);
    }, 120_000);
  });

  it('down removes everything, IPv6 routes included', async () => {
    const pids = (await labStatus(lab)).processes.map((p) => p.pid);
    const res = await labDown(lab);
    expect(res.code).toBe(0);
    expect(await labLeftovers(lab, pids)).toEqual([]);
    expect(await rootRoutesToLab()).toEqual([]);
  });
});
