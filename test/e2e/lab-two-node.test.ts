/*
 * `vipr lab up --nodes 2` for real, as root: two node namespaces on a bridged underlay with a pod
 * CIDR each and routes between them, the client behind node1, an external host that reaches the
 * nodes but never a pod, backends on both nodes, and a complete teardown. Without the agent
 * (`--no-agent`), except one test that starts a stand-in agent per node to pin down each agent's
 * command line, namespace and pin dir, and `restart-agent --node`.
 */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { defaultManifests } from '../../src/lab/manifests.js';
import { planHosts, planLab } from '../../src/lab/topology.js';
import {
  ensureBuilt,
  forceCleanLab,
  labDown,
  labCgroupDirOf,
  labExec,
  labLeftovers,
  labStatus,
  labTcpConnect,
  labUdpRequest,
  labUp,
  rootRoutesToLab,
  uniqueLabName,
  vipr,
  type LabStatusJson,
} from '../helpers/lab.js';

describe('two-node lab plan (--ip-family ipv4)', () => {
  const plan = planLab({ name: 'vipr', backends: 2, nodes: 2, ipFamily: 'ipv4' });

  it('names hosts node1, node2 and ext, numbering backends across nodes', () => {
    expect(planHosts(plan).map((h) => [h.name, h.role, h.netns])).toEqual([
      ['client', 'client', 'vipr-client'],
      ['node1', 'node', 'vipr-node1'],
      ['be1', 'backend', 'vipr-be1'],
      ['be2', 'backend', 'vipr-be2'],
      ['node2', 'node', 'vipr-node2'],
      ['be3', 'backend', 'vipr-be3'],
      ['be4', 'backend', 'vipr-be4'],
      ['ext', 'external', 'vipr-ext'],
    ]);
    expect(plan.underlay).toEqual({ netns: 'vipr-net', bridge: 'br0', cidr: '192.168.60.0/24', cidrs: ['192.168.60.0/24'], ports: ['node1', 'node2', 'ext'] });
  });

  it('gives each node an underlay IP, its own pod CIDR and every interface to its agent', () => {
    expect(
      plan.nodes.map((n) => ({ name: n.nodeName, ip: n.nodeIp, cidr: n.podCidr, gw: n.podGateway, pods: n.backends.map((b) => b.ip), ifaces: n.agentIfaces })),
    ).toEqual([
      { name: 'node1', ip: '192.168.60.11', cidr: '10.244.1.0/24', gw: '10.244.1.1', pods: ['10.244.1.11', '10.244.1.12'], ifaces: ['eth0', 'eth1', 'vbe1', 'vbe2'] },
      { name: 'node2', ip: '192.168.60.12', cidr: '10.244.2.0/24', gw: '10.244.2.1', pods: ['10.244.2.11', '10.244.2.12'], ifaces: ['eth0', 'vbe3', 'vbe4'] },
    ]);
  });

  it('routes pod CIDRs between nodes over the underlay, and the external host only to LB IPs', () => {
    const routesOf = (netns: string): string[] =>
      plan.routes.filter((r) => r.netns === netns).map((r) => `${r.dest} via ${r.via ?? '-'} dev ${r.dev}${r.onlink ? ' onlink' : ''}`);
    expect(routesOf('vipr-node1')).toEqual([
      '10.244.1.11/32 via - dev vbe1',
      '10.244.1.12/32 via - dev vbe2',
      '10.244.2.0/24 via 192.168.60.12 dev eth0',
      '10.0.0.0/24 via 192.168.60.100 dev eth0',
    ]);
    expect(routesOf('vipr-node2')).toEqual([
      '10.244.2.11/32 via - dev vbe3',
      '10.244.2.12/32 via - dev vbe4',
      '10.244.1.0/24 via 192.168.60.11 dev eth0',
      '172.30.0.0/24 via 192.168.60.11 dev eth0',
      '10.0.0.0/24 via 192.168.60.100 dev eth0',
    ]);
    expect(routesOf('vipr-ext')).toEqual(['10.250.0.0/24 via 192.168.60.11 dev eth0']);
    expect(routesOf('vipr-client')).toEqual(['default via 172.30.0.1 dev eth0']);
    expect(routesOf('vipr-be3')).toEqual(['default via 10.244.2.1 dev eth0 onlink']);
    expect(plan.forwarding).toEqual(['vipr-node1', 'vipr-node2']);
    expect(plan.noRedirects).toEqual([]);
  });

  it('writes NodePort and LoadBalancer services with endpoints on both nodes', () => {
    const files = defaultManifests(plan.nodes);
    expect([...files.keys()]).toEqual(['nginx-service.yaml', 'echo-udp.yaml', 'web-nodeport.yaml', 'web-lb.yaml']);
    const [lb, lbSlice] = parseAllDocuments(files.get('web-lb.yaml') ?? '').map((d) => d.toJS() as Record<string, never>);
    expect(lb).toMatchObject({
      kind: 'Service',
      metadata: { name: 'web-lb' },
      spec: {
        type: 'LoadBalancer',
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 32000,
        ports: [{ protocol: 'TCP', port: 80, targetPort: 80, nodePort: 30081 }],
      },
      status: { loadBalancer: { ingress: [{ ip: '10.250.0.10' }] } },
    });
    const endpoints = (lbSlice as unknown as { endpoints: { addresses: string[]; nodeName: string }[] }).endpoints;
    expect(endpoints.map((e) => `${e.addresses[0]}@${e.nodeName}`)).toEqual([
      '10.244.1.11@node1', '10.244.1.12@node1', '10.244.2.11@node2', '10.244.2.12@node2',
    ]);
    // The one-node lab keeps its two services.
    expect([...defaultManifests(planLab({ name: 'x', backends: 1, ipFamily: 'ipv4' }).nodes).keys()]).toEqual(['nginx-service.yaml', 'echo-udp.yaml']);
  });

  it('refuses node counts it cannot lay out', () => {
    expect(() => planLab({ name: 'x', backends: 1, nodes: 0 })).toThrow(RangeError);
    expect(() => planLab({ name: 'x', backends: 1, nodes: 9 })).toThrow(RangeError);
    const big = planLab({ name: 'a-rather-long-lab-name', backends: 200, nodes: 2 });
    for (const l of big.links) for (const end of [l.local, l.peer]) expect(end.ifname.length).toBeLessThanOrEqual(15);
  });
});

describe('vipr lab --nodes 2 --ip-family ipv4 (no agent)', () => {
  const lab = uniqueLabName('two');
  let status: LabStatusJson;

  beforeAll(async () => {
    await ensureBuilt();
    await labUp(lab, { nodes: 2, backends: 2, ipFamily: 'ipv4' });
    status = await labStatus(lab);
  }, 180_000);

  afterAll(() => forceCleanLab(lab), 60_000);

  it('reports every host with its role, node and live addresses', () => {
    const hosts = status.hosts.map((h) => ({ name: h.name, role: h.role, netns: h.netns, node: h.node, addresses: [...h.addresses].sort() }));
    expect(hosts).toEqual([
      { name: 'client', role: 'client', netns: `${lab}-client`, node: 'node1', addresses: ['172.30.0.2/24'] },
      {
        name: 'node1',
        role: 'node',
        netns: `${lab}-node1`,
        node: null,
        addresses: ['10.244.1.1/32', '10.244.1.1/32', '172.30.0.1/24', '192.168.60.11/24'],
      },
      { name: 'be1', role: 'backend', netns: `${lab}-be1`, node: 'node1', addresses: ['10.244.1.11/32'] },
      { name: 'be2', role: 'backend', netns: `${lab}-be2`, node: 'node1', addresses: ['10.244.1.12/32'] },
      { name: 'node2', role: 'node', netns: `${lab}-node2`, node: null, addresses: ['10.244.2.1/32', '10.244.2.1/32', '192.168.60.12/24'] },
      { name: 'be3', role: 'backend', netns: `${lab}-be3`, node: 'node2', addresses: ['10.244.2.11/32'] },
      { name: 'be4', role: 'backend', netns: `${lab}-be4`, node: 'node2', addresses: ['10.244.2.12/32'] },
      { name: 'ext', role: 'external', netns: `${lab}-ext`, node: null, addresses: ['192.168.60.100/24'] },
    ]);
    expect(status.hosts.find((h) => h.name === 'node1')?.interfaces.find((i) => i.ifname === 'eth0')?.addresses).toEqual(['192.168.60.11/24']);
    expect(status.hosts.find((h) => h.name === 'node1')?.interfaces.find((i) => i.ifname === 'eth1')?.addresses).toEqual(['172.30.0.1/24']);
  });

  it('reports both nodes with node IP, pod CIDR, agent interfaces and a pin dir each', () => {
    expect(status.nodes).toEqual([
      {
        name: 'node1',
        nodeName: 'node1',
        netns: `${lab}-node1`,
        nodeIp: '192.168.60.11',
        nodeIps: ['192.168.60.11'],
        podCidr: '10.244.1.0/24',
        podCidrs: ['10.244.1.0/24'],
        pinDir: `/sys/fs/bpf/vipr-${lab}-node1`,
        agentIfaces: ['eth0', 'eth1', 'vbe1', 'vbe2'],
        agentLog: `/run/vipr/lab/${lab}/agent-node1.log`,
        cgroup: `${labCgroupDirOf(lab)}/node1`,
        agent: 'disabled',
        agentPid: null,
      },
      {
        name: 'node2',
        nodeName: 'node2',
        netns: `${lab}-node2`,
        nodeIp: '192.168.60.12',
        nodeIps: ['192.168.60.12'],
        podCidr: '10.244.2.0/24',
        podCidrs: ['10.244.2.0/24'],
        pinDir: `/sys/fs/bpf/vipr-${lab}-node2`,
        agentIfaces: ['eth0', 'vbe3', 'vbe4'],
        agentLog: `/run/vipr/lab/${lab}/agent-node2.log`,
        cgroup: `${labCgroupDirOf(lab)}/node2`,
        agent: 'disabled',
        agentPid: null,
      },
    ]);
    expect(status.pinDir).toBe(`/sys/fs/bpf/vipr-${lab}-node1`);
    expect(status.underlay).toEqual({ netns: `${lab}-net`, bridge: 'br0', cidr: '192.168.60.0/24', cidrs: ['192.168.60.0/24'] });
    expect(status.manifests).toBe(`/run/vipr/lab/${lab}/manifests`);
    expect(status.agent).toBe('disabled');
    expect(status.processes.map((p) => [p.kind, p.host, p.running])).toEqual(
      ['be1', 'be2', 'be3', 'be4'].map((be) => ['server', be, true]),
    );
  });

  it('lists the default services, with endpoints on both nodes', () => {
    expect(status.problems).toEqual([]);
    const all = ['10.244.1.11', '10.244.1.12', '10.244.2.11', '10.244.2.12'];
    const nodes = ['node1', 'node1', 'node2', 'node2'];
    const svc = (name: string): LabStatusJson['services'][number] | undefined => status.services.find((s) => s.name === name);
    expect(status.services.map((s) => s.name)).toEqual(['echo-udp', 'nginx-service', 'web-lb', 'web-nodeport']);
    expect(svc('nginx-service')).toMatchObject({
      type: 'ClusterIP',
      clusterIP: '10.0.0.213',
      ports: [{ protocol: 'TCP', port: 80, nodePort: 0, endpoints: all.map((ip) => `${ip}:80`), endpointNodes: nodes }],
    });
    expect(svc('echo-udp')).toMatchObject({ clusterIP: '10.0.0.53', ports: [{ protocol: 'UDP', port: 53, endpoints: all.map((ip) => `${ip}:5353`) }] });
    expect(svc('web-nodeport')).toMatchObject({
      type: 'NodePort',
      externalTrafficPolicy: 'Cluster',
      ports: [{ protocol: 'TCP', port: 80, nodePort: 30080, endpoints: all.map((ip) => `${ip}:80`), endpointNodes: nodes }],
    });
    expect(svc('web-lb')).toMatchObject({
      type: 'LoadBalancer',
      loadBalancerIPs: ['10.250.0.10'],
      externalIPs: [],
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 32000,
      ports: [{ protocol: 'TCP', port: 80, nodePort: 30081, endpoints: all.map((ip) => `${ip}:80`), endpointNodes: nodes }],
    });
  });

  it('routes from node1 to a pod on node2 directly over the underlay', async () => {
    const res = await labExec(lab, 'node1', ['curl', '-sS', '--max-time', '5', 'http://10.244.2.11/whoami']);
    // Leaving by eth0, node1 speaks from its node IP.
    expect({ code: res.code, err: res.stderr }).toEqual({ code: 0, err: '' });
    expect(res.stdout).toMatch(/^be3 192\.168\.60\.11:\d+\n$/);
    const back = await labExec(lab, 'node2', ['curl', '-sS', '--max-time', '5', 'http://10.244.1.12/whoami']);
    expect(back.stdout).toMatch(/^be2 192\.168\.60\.12:\d+\n$/);
  });

  it('routes the client to pods on both nodes, node2 via node1 and the underlay, keeping its address', async () => {
    for (const [ip, be] of [['10.244.1.11', 'be1'], ['10.244.2.11', 'be3'], ['10.244.2.12', 'be4']] as const) {
      const res = await labExec(lab, 'client', ['curl', '-sS', '--max-time', '5', `http://${ip}/whoami`]);
      expect({ code: res.code, err: res.stderr }).toEqual({ code: 0, err: '' });
      expect(res.stdout).toMatch(new RegExp(`^${be} 172\\.30\\.0\\.2:\\d+\\n$`));
    }
    expect(await labUdpRequest(lab, 'client', '10.244.2.12', 5353, 'whoami')).toMatch(/^be4 172\.30\.0\.2:\d+$/);
    // node1 forwards it over the underlay to node2.
    const route = await labExec(lab, 'node1', ['ip', '-4', 'route', 'get', '10.244.2.12']);
    expect(route.stdout).toMatch(/^10\.244\.2\.12 via 192\.168\.60\.12 dev eth0 /);
  });

  it('lets the external host reach both node IPs and nothing behind them', async () => {
    // Nothing listens on port 1: a RST back means the node's kernel got the SYN and answered.
    expect(await labTcpConnect(lab, 'ext', '192.168.60.11', 1)).toBe('ECONNREFUSED');
    expect(await labTcpConnect(lab, 'ext', '192.168.60.12', 1)).toBe('ECONNREFUSED');
    for (const ip of ['10.244.1.11', '10.244.2.11', '10.0.0.213', '172.30.0.2']) {
      expect([ip, await labTcpConnect(lab, 'ext', ip, 80)]).toEqual([ip, 'ENETUNREACH']);
    }
    const routes = await labExec(lab, 'ext', ['ip', '-4', 'route', 'show']);
    expect(routes.stdout.trim().split('\n').map((l) => l.trim())).toEqual([
      '10.250.0.0/24 via 192.168.60.11 dev eth0',
      '192.168.60.0/24 dev eth0 proto kernel scope link src 192.168.60.100',
    ]);
  });

  it('turns tx checksum offload off on every veth end, the external host and the bridge ports included', async () => {
    const ends = [
      ['ext', 'eth0'], ['node1', 'eth0'], ['node1', 'eth1'], ['node2', 'eth0'], ['node2', 'vbe4'], ['be3', 'eth0'],
      ['net', 'node1'], ['net', 'node2'], ['net', 'ext'], ['client', 'eth0'],
    ] as const;
    for (const [host, ifname] of ends) {
      const res = await labExec(lab, host, ['ethtool', '-k', ifname]);
      expect([host, ifname, res.stdout.match(/^tx-checksumming: \w+$/m)?.[0]]).toEqual([host, ifname, 'tx-checksumming: off']);
    }
    for (const [host, on] of [['node1', '1'], ['node2', '1'], ['ext', '0'], ['client', '0'], ['be1', '0']] as const) {
      const fwd = await labExec(lab, host, ['sysctl', '-n', 'net.ipv4.ip_forward']);
      expect([host, fwd.stdout.trim()]).toEqual([host, on]);
    }
    const ports = await labExec(lab, 'net', ['ip', '-o', 'link', 'show', 'master', 'br0']);
    expect(ports.stdout.match(/^\d+: (\w+)@?/gm)?.map((m) => m.replace(/^\d+: |@$/g, ''))).toEqual(['node1', 'node2', 'ext']);
    expect(await rootRoutesToLab()).toEqual([]);
  });

  it('exec knows node1, node2, ext and every backend, and nothing else', async () => {
    const inode = statSync(`/run/netns/${lab}-node2`).ino;
    expect((await labExec(lab, 'node2', ['readlink', '/proc/self/ns/net'])).stdout.trim()).toBe(`net:[${inode}]`);
    const unknown = await labExec(lab, 'node', ['true']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe(`vipr lab: no host 'node' in lab '${lab}'; hosts: client, node1, be1, be2, node2, be3, be4, ext\n`);
  });

  it('down removes both nodes, the underlay, the external host and every process', async () => {
    const pids = status.processes.map((p) => p.pid);
    const res = await labDown(lab);
    expect(res.code).toBe(0);
    for (const ns of ['client', 'node1', 'node2', 'ext', 'net', 'be1', 'be2', 'be3', 'be4']) {
      expect(res.stdout).toContain(`deleted netns ${lab}-${ns}\n`);
    }
    expect(await labLeftovers(lab, pids)).toEqual([]);
    expect(await rootRoutesToLab()).toEqual([]);
  });
});

describe('vipr lab --nodes 2 with stand-in agents', () => {
  const lab = uniqueLabName('two-agt');
  const work = mkdtempSync(join(tmpdir(), 'vipr-lab2-agent-'));
  // Records how each agent was started, one file per --node-name, then runs like the agent.
  const agent = join(work, 'agent.mjs');
  writeFileSync(
    agent,
    `import { readlinkSync, writeFileSync } from 'node:fs';
const argv = process.argv.slice(2);
const node = argv[argv.indexOf('--node-name') + 1];
writeFileSync(${JSON.stringify(work)} + '/' + node + '.json', JSON.stringify({ argv, pid: process.pid, netns: readlinkSync('/proc/self/ns/net') }));
process.stdout.write(JSON.stringify({ level: 30, msg: 'agent running' }) + '\\n');
const keep = setInterval(() => undefined, 1000);
process.on('SIGTERM', () => { clearInterval(keep); process.exit(0); });
`,
  );
  const seen = (node: string): { argv: string[]; pid: number; netns: string } =>
    JSON.parse(readFileSync(join(work, `${node}.json`), 'utf8')) as { argv: string[]; pid: number; netns: string };

  beforeAll(() => ensureBuilt(), 180_000);
  afterAll(async () => {
    await forceCleanLab(lab);
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('starts one agent per node with its interfaces, node name, node IPs of both families and pin dir', async () => {
    await labUp(lab, { nodes: 2, backends: 1, agent: true, agentMain: agent });
    const node1 = seen('node1');
    const node2 = seen('node2');
    const manifests = `/run/vipr/lab/${lab}/manifests`;
    expect(node1.argv).toEqual([
      'run', '--manifests', manifests, '--iface', 'eth0', '--iface', 'eth1', '--iface', 'vbe1',
      '--pin-dir', `/sys/fs/bpf/vipr-${lab}-node1`, '--node-name', 'node1',
      '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56', '--node-ip', '192.168.60.11', '--node-ip', 'fd00:192:168:60::11', '--xdp', 'eth0',
      '--cgroup-root', `${labCgroupDirOf(lab)}/node1`, '--log-level', 'info',
    ]);
    expect(node2.argv).toEqual([
      'run', '--manifests', manifests, '--iface', 'eth0', '--iface', 'vbe2',
      '--pin-dir', `/sys/fs/bpf/vipr-${lab}-node2`, '--node-name', 'node2',
      '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56', '--node-ip', '192.168.60.12', '--node-ip', 'fd00:192:168:60::12', '--xdp', 'eth0',
      '--cgroup-root', `${labCgroupDirOf(lab)}/node2`, '--log-level', 'info',
    ]);
    expect(node1.netns).toBe(`net:[${statSync(`/run/netns/${lab}-node1`).ino}]`);
    expect(node2.netns).toBe(`net:[${statSync(`/run/netns/${lab}-node2`).ino}]`);

    const status = await labStatus(lab);
    expect(status.agent).toBe('running');
    expect(status.nodes.map((n) => [n.name, n.agent, n.agentPid])).toEqual([
      ['node1', 'running', node1.pid],
      ['node2', 'running', node2.pid],
    ]);
    expect(readFileSync(`/run/vipr/lab/${lab}/agent-node2.log`, 'utf8')).toContain('"msg":"agent running"');

    const restart = await vipr(['lab', 'restart-agent', '--name', lab, '--node', 'node2'], { timeoutMs: 60_000 });
    const restarted = seen('node2');
    expect({ code: restart.code, out: restart.stdout }).toEqual({ code: 0, out: `agent on node2 restarted (pid ${restarted.pid})\n` });
    expect(restarted.pid).not.toBe(node2.pid);
    expect(seen('node1').pid).toBe(node1.pid);
    const after = await labStatus(lab);
    expect(after.nodes.map((n) => n.agentPid)).toEqual([node1.pid, restarted.pid]);
    const bad = await vipr(['lab', 'restart-agent', '--name', lab, '--node', 'node3']);
    expect({ code: bad.code, err: bad.stderr }).toEqual({ code: 1, err: `vipr lab: no node 'node3' in lab '${lab}'; nodes: node1, node2\n` });

    const down = await labDown(lab);
    expect(down.code).toBe(0);
    expect(down.stdout).toContain(`stopped agent on node1 (pid ${node1.pid})\n`);
    expect(down.stdout).toContain(`stopped agent on node2 (pid ${restarted.pid})\n`);
    expect(down.stdout).toContain(`removed pin dir /sys/fs/bpf/vipr-${lab}-node1\n`);
    expect(down.stdout).toContain(`removed pin dir /sys/fs/bpf/vipr-${lab}-node2\n`);
    expect(await labLeftovers(lab, [node1.pid, node2.pid, restarted.pid])).toEqual([]);
  });
});
