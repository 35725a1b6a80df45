/*
 * `vipr lab` for real, as root: namespaces, veths, backend servers, traffic from the client, and a
 * complete teardown. The lab's own tests run without the agent (`--no-agent`), except one that
 * starts a stand-in agent to pin down the agent's command line and environment.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { planLab, planHosts, labNetnsPattern, labNameProblem } from '../../src/lab/topology.js';
import {
  ensureBuilt,
  FAKE_AGENT,
  forceCleanLab,
  labDown,
  labCgroupDirOf,
  labExec,
  labLeftovers,
  labNamespaces,
  labStatus,
  labUdpRequest,
  labUp,
  rootRoutesToLab,
  runProgram,
  uniqueLabName,
  vipr,
  VIPR_MAIN,
  type LabStatusJson,
} from '../helpers/lab.js';

describe('lab plan (--ip-family ipv4)', () => {
  const plan = planLab({ name: 'vipr', backends: 3, ipFamily: 'ipv4' });

  it('names every namespace after the lab', () => {
    expect(planHosts(plan).map((h) => [h.name, h.role, h.netns])).toEqual([
      ['client', 'client', 'vipr-client'],
      ['node', 'node', 'vipr-node'],
      ['be1', 'backend', 'vipr-be1'],
      ['be2', 'backend', 'vipr-be2'],
      ['be3', 'backend', 'vipr-be3'],
    ]);
  });

  it('gives pods /32 addresses behind one gateway held by every pod-facing node interface', () => {
    const node = plan.nodes[0]!;
    expect(node.backends.map((b) => b.ip)).toEqual(['10.244.0.11', '10.244.0.12', '10.244.0.13']);
    const podLinks = plan.links.filter((l) => l.peer.host.startsWith('be'));
    expect(podLinks.map((l) => l.local.addresses)).toEqual([['10.244.0.1/32'], ['10.244.0.1/32'], ['10.244.0.1/32']]);
    expect(podLinks.map((l) => l.peer.addresses)).toEqual([['10.244.0.11/32'], ['10.244.0.12/32'], ['10.244.0.13/32']]);
    expect(plan.routes).toContainEqual({ netns: 'vipr-be2', dest: 'default', dev: 'eth0', via: '10.244.0.1', onlink: true });
    expect(plan.routes).toContainEqual({ netns: 'vipr-node', dest: '10.244.0.12/32', dev: 'vbe2', via: null, onlink: false });
    expect(plan.routes).toContainEqual({ netns: 'vipr-client', dest: 'default', dev: 'eth0', via: '172.30.0.1', onlink: false });
    expect(plan.routes).toContainEqual({ netns: 'vipr-node', dest: '10.0.0.0/24', dev: 'eth0', via: '172.30.0.2', onlink: false });
    expect(plan.forwarding).toEqual(['vipr-node']);
    // The Service route leads back out of the client link: no redirects there (a REJECT's ICMP
    // error would be rate-limited behind each one).
    expect(plan.noRedirects).toEqual(['vipr-node']);
  });

  it('keeps interface names within IFNAMSIZ', () => {
    const big = planLab({ name: 'a-rather-long-lab-name', backends: 200 });
    for (const l of big.links) for (const end of [l.local, l.peer]) expect(end.ifname.length).toBeLessThanOrEqual(15);
  });

  it('matches only its own namespaces when cleaning up by name', () => {
    const re = labNetnsPattern('a');
    expect(['a-client', 'a-node', 'a-be1', 'a-be12', 'a-node2', 'a-ext', 'a-net'].every((n) => re.test(n))).toBe(true);
    expect(['a-b-client', 'a-b-node', 'ab-client', 'a-be', 'xa-client', 'a-b-net', 'a-netx'].some((n) => re.test(n))).toBe(false);
  });

  it('rejects names that cannot name namespaces and files', () => {
    expect(labNameProblem('vipr')).toBeNull();
    expect(labNameProblem('../x')).not.toBeNull();
    expect(labNameProblem('-x')).not.toBeNull();
    expect(labNameProblem('A')).not.toBeNull();
    expect(() => planLab({ name: 'x', backends: 0 })).toThrow(RangeError);
  });
});

// `--ip-family ipv4`: exactly the lab as it was before IPv6 (test/e2e/dual-stack.test.ts has the default, dual).
describe('vipr lab --ip-family ipv4 (no agent)', () => {
  const lab = uniqueLabName('lab');
  let status: LabStatusJson;
  let serverPids: number[] = [];

  beforeAll(async () => {
    await ensureBuilt();
    await labUp(lab, { backends: 3, ipFamily: 'ipv4' });
    status = await labStatus(lab);
    serverPids = status.processes.map((p) => p.pid);
  }, 180_000);

  afterAll(() => forceCleanLab(lab), 60_000);

  it('reports client, node and three backends with their addresses', () => {
    const hosts = status.hosts.map((h) => ({ name: h.name, role: h.role, netns: h.netns, addresses: h.addresses }));
    expect(hosts).toEqual([
      { name: 'client', role: 'client', netns: `${lab}-client`, addresses: ['172.30.0.2/24'] },
      {
        name: 'node',
        role: 'node',
        netns: `${lab}-node`,
        addresses: ['172.30.0.1/24', '10.244.0.1/32', '10.244.0.1/32', '10.244.0.1/32'],
      },
      { name: 'be1', role: 'backend', netns: `${lab}-be1`, addresses: ['10.244.0.11/32'] },
      { name: 'be2', role: 'backend', netns: `${lab}-be2`, addresses: ['10.244.0.12/32'] },
      { name: 'be3', role: 'backend', netns: `${lab}-be3`, addresses: ['10.244.0.13/32'] },
    ]);
    expect(status.agent).toBe('disabled');
    expect(status.ipFamily).toBe('ipv4');
    expect(status.pinDir).toBe(`/sys/fs/bpf/vipr-${lab}`);
    expect(status.nodes).toEqual([
      {
        name: 'node',
        nodeName: 'node',
        netns: `${lab}-node`,
        nodeIp: null,
        nodeIps: [],
        podCidr: '10.244.0.0/24',
        podCidrs: ['10.244.0.0/24'],
        pinDir: `/sys/fs/bpf/vipr-${lab}`,
        agentIfaces: ['eth0', 'vbe1', 'vbe2', 'vbe3'],
        agentLog: `/run/vipr/lab/${lab}/agent.log`,
        cgroup: `${labCgroupDirOf(lab)}/node`,
        agent: 'disabled',
        agentPid: null,
      },
    ]);
    expect(status.underlay).toBeNull();
    expect(status.hosts.filter((h) => h.role === 'backend').map((h) => h.node)).toEqual(['node', 'node', 'node']);
    expect(status.processes.map((p) => [p.kind, p.host, p.running])).toEqual([
      ['server', 'be1', true],
      ['server', 'be2', true],
      ['server', 'be3', true],
    ]);
  });

  it('lists the default services from the manifests it wrote', () => {
    expect(status.manifests).toBe(`/run/vipr/lab/${lab}/manifests`);
    expect(status.problems).toEqual([]);
    expect(status.services.map((s) => ({ id: `${s.namespace}/${s.name}`, ip: s.clusterIP, ports: s.ports }))).toEqual([
      {
        id: 'default/echo-udp',
        ip: '10.0.0.53',
        ports: [
          {
            name: '',
            protocol: 'UDP',
            port: 53,
            targetPort: 5353,
            nodePort: 0,
            endpoints: ['10.244.0.11:5353', '10.244.0.12:5353', '10.244.0.13:5353'],
            endpointNodes: ['node', 'node', 'node'],
          },
        ],
      },
      {
        id: 'default/nginx-service',
        ip: '10.0.0.213',
        ports: [
          {
            name: '',
            protocol: 'TCP',
            port: 80,
            targetPort: 80,
            nodePort: 0,
            endpoints: ['10.244.0.11:80', '10.244.0.12:80', '10.244.0.13:80'],
            endpointNodes: ['node', 'node', 'node'],
          },
        ],
      },
    ]);
  });

  it('routes the client to every backend over HTTP, and the backend sees the client address', async () => {
    for (const [i, be] of ['be1', 'be2', 'be3'].entries()) {
      const ip = `10.244.0.${11 + i}`;
      const plain = await labExec(lab, 'client', ['curl', '-sS', '--max-time', '5', `http://${ip}/`]);
      expect({ code: plain.code, out: plain.stdout, err: plain.stderr }).toEqual({ code: 0, out: `${be}\n`, err: '' });
      const who = await labExec(lab, 'client', ['curl', '-sS', '--max-time', '5', `http://${ip}:80/whoami`]);
      expect(who.stdout).toMatch(new RegExp(`^${be} 172\\.30\\.0\\.2:\\d+\\n$`));
    }
  });

  it('serves several requests on one keep-alive connection', async () => {
    const res = await labExec(lab, 'client', [
      'curl', '-sS', '--max-time', '5', '-w', '%{num_connects}\\n', 'http://10.244.0.12/', 'http://10.244.0.12/whoami',
    ]);
    const lines = res.stdout.trim().split('\n');
    // curl reports 1 connect for the first transfer and 0 for the reused one.
    expect(lines[0]).toBe('be2');
    expect(lines[1]).toBe('1');
    expect(lines[2]).toMatch(/^be2 172\.30\.0\.2:\d+$/);
    expect(lines[3]).toBe('0');
  });

  it('answers UDP on :5353 with the backend name, and whoami with the client address', async () => {
    for (const [i, be] of ['be1', 'be2', 'be3'].entries()) {
      const ip = `10.244.0.${11 + i}`;
      expect(await labUdpRequest(lab, 'client', ip, 5353, 'hello')).toBe(be);
      expect(await labUdpRequest(lab, 'client', ip, 5353, 'whoami')).toMatch(new RegExp(`^${be} 172\\.30\\.0\\.2:\\d+$`));
    }
  });

  it('does not route service VIPs without the agent, and keeps lab routes out of the root namespace', async () => {
    const res = await labExec(lab, 'client', ['curl', '-sS', '--max-time', '2', 'http://10.0.0.213/']);
    expect(res.code).not.toBe(0);
    expect(await rootRoutesToLab()).toEqual([]);
  });

  it('turns tx checksum offload off on every veth end and forwards on the node only', async () => {
    for (const [host, ifname] of [['client', 'eth0'], ['node', 'eth0'], ['node', 'vbe3'], ['be2', 'eth0']] as const) {
      const res = await labExec(lab, host, ['ethtool', '-k', ifname]);
      expect(res.stdout).toMatch(/^tx-checksumming: off$/m);
    }
    const fwd = await labExec(lab, 'node', ['sysctl', '-n', 'net.ipv4.ip_forward']);
    expect(fwd.stdout.trim()).toBe('1');
    const clientFwd = await labExec(lab, 'client', ['sysctl', '-n', 'net.ipv4.ip_forward']);
    expect(clientFwd.stdout.trim()).toBe('0');
    // IPv6 is left as a new namespace has it: no forwarding, duplicate address detection on.
    const six = await labExec(lab, 'node', ['sysctl', '-n', 'net.ipv6.conf.all.forwarding', 'net.ipv6.conf.default.accept_dad']);
    expect(six.stdout.trim().split('\n')).toEqual(['0', '1']);
  });

  it('exec passes the exit code through and runs in the host namespace (with /sys/fs/bpf untouched)', async () => {
    expect((await labExec(lab, 'be2', ['sh', '-c', 'exit 7'])).code).toBe(7);
    const nsInode = statSync(`/run/netns/${lab}-node`).ino;
    const self = await labExec(lab, 'node', ['readlink', '/proc/self/ns/net']);
    expect(self.stdout.trim()).toBe(`net:[${nsInode}]`);
    const unknown = await labExec(lab, 'be9', ['true']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toBe(`vipr lab: no host 'be9' in lab '${lab}'; hosts: client, node, be1, be2, be3\n`);
  });

  it("refuses a second 'up' with one clear line", async () => {
    const res = await vipr(['lab', 'up', '--name', lab, '--no-agent']);
    expect(res.code).toBe(1);
    expect(res.stderr).toBe(`vipr lab: lab '${lab}' is already up; run 'vipr lab down --name ${lab}' first\n`);
  });

  it('prints a readable status table', async () => {
    const res = await vipr(['lab', 'status', '--name', lab]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^be2\s+backend\s+\S+-be2\s+eth0 10\.244\.0\.12\/32$/m);
    expect(res.stdout).toMatch(/^default\/nginx-service\s+ClusterIP\s+10\.0\.0\.213:80\/TCP\s+10\.244\.0\.11:80 10\.244\.0\.12:80 10\.244\.0\.13:80$/m);
  });

  it('down removes every namespace, process and file, and reports them', async () => {
    expect(serverPids).toHaveLength(3);
    const res = await labDown(lab);
    expect(res.code).toBe(0);
    for (const ns of ['client', 'node', 'be1', 'be2', 'be3']) expect(res.stdout).toContain(`deleted netns ${lab}-${ns}\n`);
    for (const be of ['be1', 'be2', 'be3']) expect(res.stdout).toMatch(new RegExp(`^stopped server on ${be} \\(pid \\d+\\)$`, 'm'));
    expect(res.stdout).toContain(`removed state dir /run/vipr/lab/${lab}\n`);
    expect(await labLeftovers(lab, serverPids)).toEqual([]);
    const again = await labDown(lab);
    expect({ code: again.code, out: again.stdout }).toEqual({ code: 0, out: `lab '${lab}' is not up; nothing to remove\n` });
  });
});

describe('vipr lab with a stand-in agent', () => {
  const lab = uniqueLabName('agt');
  const work = mkdtempSync(join(tmpdir(), 'vipr-lab-agent-'));
  const record = join(work, 'agent.json');

  beforeAll(() => ensureBuilt(), 180_000);
  afterAll(async () => {
    await forceCleanLab(lab);
    rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('starts the agent in the node namespace with the agreed command line, and down stops it', async () => {
    await labUp(lab, {
      backends: 2,
      agent: true,
      agentMain: FAKE_AGENT,
      env: { ...process.env, VIPR_FAKE_AGENT_OUT: record },
    });
    const seen = JSON.parse(readFileSync(record, 'utf8')) as { argv: string[]; pid: number; netns: string; bpffs: boolean };
    expect(seen.argv).toEqual([
      'run',
      '--manifests', `/run/vipr/lab/${lab}/manifests`,
      '--iface', 'eth0',
      '--iface', 'vbe1',
      '--iface', 'vbe2',
      '--pin-dir', `/sys/fs/bpf/vipr-${lab}`,
      // The default lab is dual-stack: kube-proxy's dual-stack --cluster-cidr.
      '--node-name', 'node', '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56',
      '--cgroup-root', `${labCgroupDirOf(lab)}/node`,
      '--log-level', 'info',
    ]);
    expect(seen.netns).toBe(`net:[${statSync(`/run/netns/${lab}-node`).ino}]`);
    // Entered with nsenter --net, not `ip netns exec`: the BPF filesystem is still visible.
    expect(seen.bpffs).toBe(true);
    expect(existsSync(`/sys/fs/bpf/vipr-${lab}`)).toBe(true);

    const status = await labStatus(lab);
    expect(status.agent).toBe('running');
    expect(status.processes.find((p) => p.kind === 'agent')).toMatchObject({ host: 'node', pid: seen.pid, running: true });
    expect(readFileSync(`/run/vipr/lab/${lab}/agent.log`, 'utf8')).toContain('"msg":"agent running"');

    const down = await labDown(lab);
    expect(down.code).toBe(0);
    expect(down.stdout).toContain(`stopped agent on node (pid ${seen.pid})\n`);
    expect(down.stdout).toContain(`removed pin dir /sys/fs/bpf/vipr-${lab}\n`);
    expect(await labLeftovers(lab, [seen.pid, ...status.processes.map((p) => p.pid)])).toEqual([]);
  });

  it('leaves the lab up and says so when the agent exits at start', async () => {
    const failing = join(work, 'failing-agent.mjs');
    writeFileSync(failing, "process.stderr.write('cannot attach\\n');\nprocess.exit(3);\n");
    const res = await vipr(['lab', 'up', '--name', lab, '--backends', '1', '--agent-main', failing]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain(`exited with code 3 while starting (log /run/vipr/lab/${lab}/agent.log: cannot attach)`);
    expect(res.stderr).toContain(`the lab is up without the agent, 'vipr lab down --name ${lab}' removes it`);
    const curl = await labExec(lab, 'client', ['curl', '-sS', '--max-time', '5', 'http://10.244.0.11/']);
    expect(curl.stdout).toBe('be1\n');
    expect((await labStatus(lab)).agent).toBe('stopped');
    expect((await labDown(lab)).code).toBe(0);
    expect(await labLeftovers(lab)).toEqual([]);
  });
});

describe('vipr lab edge cases', () => {
  const lab = uniqueLabName('edge');

  beforeAll(() => ensureBuilt(), 180_000);
  afterAll(() => forceCleanLab(lab), 60_000);

  it('refuses to build over leftovers of an interrupted lab, and down removes them without a state file', async () => {
    execFileSync('ip', ['netns', 'add', `${lab}-be2`]);
    const up = await vipr(['lab', 'up', '--name', lab, '--no-agent']);
    expect(up.code).toBe(1);
    expect(up.stderr).toBe(`vipr lab: lab '${lab}' is already up (namespaces ${lab}-be2 exist); run 'vipr lab down --name ${lab}' first\n`);
    const down = await labDown(lab);
    expect({ code: down.code, out: down.stdout }).toEqual({ code: 0, out: `deleted netns ${lab}-be2\nlab '${lab}' is down\n` });
    expect(await labNamespaces(lab)).toEqual([]);
  });

  it('removes everything it created when up fails halfway', async () => {
    // An ethtool that fails makes `up` fail after the namespaces and the first veth exist.
    const bin = mkdtempSync(join(tmpdir(), 'vipr-lab-bin-'));
    try {
      writeFileSync(join(bin, 'ethtool'), '#!/bin/sh\necho "ethtool: boom" >&2\nexit 1\n', { mode: 0o755 });
      const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` };
      const res = await vipr(['lab', 'up', '--name', lab, '--no-agent'], { env });
      expect(res.code).toBe(1);
      expect(res.stderr).toBe(`vipr lab: ethtool -K eth0 tx off (in ${lab}-node) failed: boom\n`);
      expect(res.stdout).toContain('up failed, removing what was created');
      expect(await labLeftovers(lab)).toEqual([]);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it('requires root, with one line', async () => {
    const res = await runProgram('runuser', ['-u', 'nobody', '--', process.execPath, VIPR_MAIN, 'lab', 'status']);
    expect({ code: res.code, err: res.stderr }).toEqual({
      code: 1,
      err: 'vipr lab: must run as root (it creates network namespaces and starts processes in them)\n',
    });
  });

  it('rejects bad options with one line', async () => {
    const bad = await vipr(['lab', 'up', '--name', 'Bad/Name']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^vipr lab: invalid lab name 'Bad\/Name'.*\n$/);
    const backends = await vipr(['lab', 'up', '--name', lab, '--backends', '0']);
    expect(backends.stderr).toBe("vipr lab: --backends must be an integer from 1 to 200, got '0'\n");
    const notUp = await vipr(['lab', 'status', '--name', lab]);
    expect({ code: notUp.code, err: notUp.stderr }).toEqual({
      code: 1,
      err: `vipr lab: lab '${lab}' is not up; run 'vipr lab up --name ${lab}' first\n`,
    });
  });
});
