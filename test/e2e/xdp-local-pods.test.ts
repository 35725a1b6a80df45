/*
 * `--xdp-local-backends redirect` in the two-node lab (dual-stack), for real: node1's agent with XDP on
 * its underlay interface, a NodePort Service (externalTrafficPolicy Local) whose one endpoint is
 * be1 on node1, the external host `ext` reaching it through node1's address. With the flag the
 * agent lists be1 in vipr_xdp_pods_v1 once node1 has a neighbour entry for it (here: after the
 * first request, which the stack delivers and `ip monitor` reports), and from then on XDP sends
 * the requests to be1's veth itself: TCP and UDP are answered, the backend sees the client, and
 * a counting rule in node1's FORWARD chain sees none of the requests (the stack never forwards
 * them). Without the flag (the agent restarted) the map is emptied and the same rule counts every
 * request again. IPv6 the same (the agent restarted serving IPv6 too, before the restart without the
 * flag): be1's IPv6 address listed in vipr_xdp_pods6_v1, TCP and UDP to the NodePort over IPv6
 * answered without a packet in node1's ip6tables FORWARD chain; without the flag that map is
 * emptied too and the chain counts them again. The lab's XDP is generic (veth), where a redirected frame is an skb sent
 * straight into the veth; native mode is what the north-south bench measures.
 * Native XDP where frames XDP redirects to the pod's veth do not arrive (here: native XDP on a
 * veth that receives skbs from its bridge, whose redirects fail, as they would to a pod side that
 * takes no XDP frames): the agent counts the lost frames at the kernel's XDP tracepoints, says
 * so, and sends that pod's frames through the stack again; requests are answered.
 * The agent serves IPv4 only (--node-ip of IPv4 alone): its IPv6 conntrack maps are the smallest
 * the flags allow, and grow to full size when it is restarted serving IPv6 too.
 * One lab for the file; everything it starts is stopped, and the lab removed, at the end.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pinnedMaxEntries } from '../../src/bpf/libbpf.js';
import { CT_LIMIT_MIN, ctSizes } from '../../src/bpf/conntrack.js';
import {
  datapathCounter, ensureBuilt, eventually, forceCleanLab, labExec, labUdpRequest, labUp, nodePinDirOf, startNodeAgent, uniqueLabName, vipr, type NodeAgent,
} from '../helpers/lab.js';

const lab = uniqueLabName('xdpp');
const work = mkdtempSync(join(tmpdir(), 'vipr-xdp-pods-'));
const manifests = join(work, 'manifests');
const NODE1_IP = '192.168.60.11';
const EXT_IP = '192.168.60.100';
const BE1 = '10.244.1.11';
const NODE1_IP6 = 'fd00:192:168:60::11';
const EXT_IP6 = 'fd00:192:168:60::100';
const BE1_IP6 = 'fd00:10:244:1::11';

const SERVICE = `apiVersion: v1
kind: Service
metadata:
  name: local-web
  namespace: default
spec:
  type: NodePort
  externalTrafficPolicy: Local
  clusterIP: 10.0.0.80
  clusterIPs: [10.0.0.80, "fd00:10:96::80"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: RequireDualStack
  ports:
  - name: http
    protocol: TCP
    port: 80
    targetPort: 80
    nodePort: 30180
  - name: dns
    protocol: UDP
    port: 53
    targetPort: 5353
    nodePort: 30153
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local-web-1
  namespace: default
  labels:
    kubernetes.io/service-name: local-web
addressType: IPv4
ports:
- name: http
  protocol: TCP
  port: 80
- name: dns
  protocol: UDP
  port: 5353
endpoints:
- addresses: ["${BE1}"]
  conditions: {ready: true}
  nodeName: node1
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: local-web-2
  namespace: default
  labels:
    kubernetes.io/service-name: local-web
addressType: IPv6
ports:
- name: http
  protocol: TCP
  port: 80
- name: dns
  protocol: UDP
  port: 5353
endpoints:
- addresses: ["${BE1_IP6}"]
  conditions: {ready: true}
  nodeName: node1
`;

let node1: NodeAgent | null = null;

function agentArgs(extra: string[]): string[] {
  return [
    '--manifests', manifests, '--iface', 'eth0', '--iface', 'eth1', '--iface', 'vbe1', '--pin-dir', nodePinDirOf(lab, 'node1'),
    '--node-name', 'node1', '--cluster-cidr', '10.244.0.0/16', '--node-ip', NODE1_IP, '--xdp', 'eth0', '--socket-lb', 'off',
    '--metrics-bind-address', '127.0.0.1:0', '--healthz-bind-address', '127.0.0.1:0', ...extra,
  ];
}


async function whoami(node = NODE1_IP): Promise<string> {
  const res = await labExec(lab, 'ext', ['curl', '-sS', '-g', '--max-time', '5', `http://${node.includes(':') ? `[${node}]` : node}:30180/whoami`]);
  if (res.code !== 0) throw new Error(`curl from ext: ${res.stderr}`);
  return res.stdout.trim();
}
const whoami6 = (): Promise<string> => whoami(NODE1_IP6);
const BE1_SEES_EXT6 = new RegExp(`^be1 \\[${EXT_IP6}\\]:\\d+$`);

/** Packets node1's FORWARD chain counted towards be1 (the rule the test put there), IPv4's or with `be` IPv6's (ip6tables). */
async function forwardedToBe1(be = BE1): Promise<number> {
  const res = await labExec(lab, 'node1', [be.includes(':') ? 'ip6tables' : 'iptables', '-w', '-nvxL', 'FORWARD']);
  const row = res.stdout.split('\n').find((l) => l.includes(be));
  if (!row) throw new Error(`no counting rule for ${be} in node1's FORWARD chain:\n${res.stdout}`);
  return Number(row.trim().split(/\s+/)[0]);
}

const node1Counter = (name: string): Promise<number> => datapathCounter(nodePinDirOf(lab, 'node1'), name);
const xdpRedirects = (): Promise<number> => node1Counter('xdp_redirect');

async function listedPods(map = 'vipr_xdp_pods_v1'): Promise<string> {
  const res = await vipr(['maps', map, '--pin-dir', nodePinDirOf(lab, 'node1')]);
  if (res.code !== 0) throw new Error(`vipr maps: ${res.stderr}`);
  return res.stdout;
}

beforeAll(async () => {
  await ensureBuilt();
  await labUp(lab, { nodes: 2, backends: 1, ipFamily: 'dual' });
  mkdirSync(manifests);
  writeFileSync(join(manifests, 'local-web.yaml'), SERVICE);
  for (const [tool, be] of [['iptables', BE1], ['ip6tables', BE1_IP6]] as const) {
    const rule = await labExec(lab, 'node1', [tool, '-w', '-A', 'FORWARD', '-d', be, '-j', 'ACCEPT']);
    if (rule.code !== 0) throw new Error(`${tool} in node1: ${rule.stderr}`);
  }
  node1 = await startNodeAgent(`${lab}-node1`, agentArgs(['--xdp-local-backends', 'redirect']));
}, 240_000);

afterAll(async () => {
  await node1?.kill();
  await forceCleanLab(lab);
  rmSync(work, { recursive: true, force: true });
}, 60_000);

describe('--xdp-local-backends redirect', () => {
  it('lists be1 once node1 has its neighbour entry; then TCP requests reach be1 from XDP, never through the FORWARD chain', async () => {
    // The first request goes through the stack (no neighbour entry yet), which resolves be1.
    expect(await eventually(whoami)).toMatch(new RegExp(`^be1 ${EXT_IP.replace(/\./g, '\\.')}:\\d+$`));
    await eventually(async () => {
      if (!(await listedPods()).includes(BE1)) throw new Error('be1 not listed yet');
    });
    const [forwarded, redirects] = [await forwardedToBe1(), await xdpRedirects()];
    for (let i = 0; i < 5; i++) expect(await whoami()).toMatch(new RegExp(`^be1 ${EXT_IP.replace(/\./g, '\\.')}:\\d+$`));
    expect(await forwardedToBe1()).toBe(forwarded);
    // Every packet of the five connections from ext (SYN, ACKs, the request, FIN): at least 4 each.
    expect(await xdpRedirects()).toBeGreaterThanOrEqual(redirects + 20);
    expect(node1?.log()).toContain('vipr_xdp_pods_v1/vipr_xdp_pods6_v1 updated');
  });

  it('UDP too: answered, the backend sees the client, nothing forwarded by the stack', async () => {
    const forwarded = await forwardedToBe1();
    const answer = await eventually(() => labUdpRequest(lab, 'ext', NODE1_IP, 30153, 'whoami'));
    expect(answer).toMatch(new RegExp(`^be1 ${EXT_IP.replace(/\./g, '\\.')}:\\d+$`));
    expect(await forwardedToBe1()).toBe(forwarded);
  });
});

describe('conntrack maps by family', () => {
  const pinned = (map: string): number | null => pinnedMaxEntries(join(nodePinDirOf(lab, 'node1'), map));

  it('an agent serving IPv4 only keeps IPv6\'s conntrack maps at the smallest size, IPv4\'s at full size', () => {
    const full = ctSizes();
    expect([pinned('vipr_ct_tcp_v1'), pinned('vipr_ct_tcp_syn_v1'), pinned('vipr_ct_udp_v1')]).toEqual([full.tcp, full.tcpSyn, full.udp]);
    expect([pinned('vipr_ct6_tcp_v1'), pinned('vipr_ct6_tcp_syn_v1'), pinned('vipr_ct6_udp_v1')]).toEqual([CT_LIMIT_MIN, CT_LIMIT_MIN, CT_LIMIT_MIN]);
  });
});

describe('IPv6 with the flag (the agent restarted, serving IPv6 too)', () => {
  beforeAll(async () => {
    await node1?.kill();
    node1 = await startNodeAgent(`${lab}-node1`, agentArgs(['--node-ip', NODE1_IP6, '--xdp-local-backends', 'redirect']));
  }, 60_000);

  it('IPv6\'s conntrack maps grow to full size', () => {
    const full = ctSizes();
    const pinDir = nodePinDirOf(lab, 'node1');
    expect([pinnedMaxEntries(join(pinDir, 'vipr_ct6_tcp_v1')), pinnedMaxEntries(join(pinDir, 'vipr_ct6_udp_v1'))]).toEqual([full.tcp, full.udp]);
    expect(node1?.log()).toContain('vipr_ct6_tcp_v1: 1024 → ');
  });

  it('lists be1\'s IPv6 address in vipr_xdp_pods6_v1; TCP and UDP over IPv6 reach be1 from XDP, never through the ip6tables FORWARD chain', async () => {
    // The first request goes through the stack, which resolves be1's IPv6 neighbour entry.
    expect(await eventually(whoami6)).toMatch(BE1_SEES_EXT6);
    await eventually(async () => {
      if (!(await listedPods('vipr_xdp_pods6_v1')).includes(BE1_IP6)) throw new Error('be1 not listed in vipr_xdp_pods6_v1 yet');
    });
    const [forwarded, redirects] = [await forwardedToBe1(BE1_IP6), await xdpRedirects()];
    for (let i = 0; i < 5; i++) expect(await whoami6()).toMatch(BE1_SEES_EXT6);
    expect(await labUdpRequest(lab, 'ext', NODE1_IP6, 30153, 'whoami')).toMatch(BE1_SEES_EXT6);
    expect(await forwardedToBe1(BE1_IP6)).toBe(forwarded);
    // Every packet of the five connections (at least 4 each) and the datagram.
    expect(await xdpRedirects()).toBeGreaterThanOrEqual(redirects + 21);
  });
});

describe('without the flag (the agent restarted, serving IPv6 too)', () => {
  beforeAll(async () => {
    await node1?.kill();
    node1 = await startNodeAgent(`${lab}-node1`, agentArgs(['--node-ip', NODE1_IP6]));
  }, 60_000);

  it('both maps are emptied and the stack forwards every request again, IPv6\'s too', async () => {
    expect(await listedPods()).not.toContain(BE1);
    expect(await listedPods('vipr_xdp_pods6_v1')).not.toContain(BE1_IP6);
    const forwarded6 = await forwardedToBe1(BE1_IP6);
    expect(await eventually(whoami6)).toMatch(BE1_SEES_EXT6);
    expect(await forwardedToBe1(BE1_IP6)).toBeGreaterThanOrEqual(forwarded6 + 4);
    const forwarded = await forwardedToBe1();
    const tcSkipped = await node1Counter('tc_xdp_done');
    for (let i = 0; i < 3; i++) expect(await eventually(whoami)).toMatch(new RegExp(`^be1 ${EXT_IP.replace(/\./g, '\\.')}:\\d+$`));
    expect(await forwardedToBe1()).toBeGreaterThanOrEqual(forwarded + 12);
    // XDP translated them and said so in their metadata: TC ingress on eth0 let them through unread.
    expect(await node1Counter('tc_xdp_done')).toBeGreaterThanOrEqual(tcSkipped + 12);
  });
});

describe("native XDP whose redirects to the pod's veth do not arrive", () => {
  beforeAll(async () => {
    await node1?.kill();
    node1 = await startNodeAgent(`${lab}-node1`, agentArgs(['--xdp-mode', 'native', '--xdp-local-backends', 'redirect']));
  }, 60_000);

  it('the lost frames are seen: the pod goes back to the stack, with a warning naming the likely fix, and requests are answered', async () => {
    // be1 is listed (node1 has its neighbour entry from the requests above).
    await eventually(async () => {
      if (!(await listedPods()).includes(BE1)) throw new Error('be1 not listed yet');
    });
    // XDP redirects the SYN to vbe1 and the frame is lost (counted at xdp_redirect_err). The
    // agent sees that within 2 s and unlists be1; the SYN's retransmission goes through the stack.
    const res = await labExec(lab, 'ext', ['curl', '-sS', '--max-time', '15', `http://${NODE1_IP}:30180/whoami`]);
    expect({ code: res.code, out: res.stdout.trim().replace(/:\d+$/, ''), err: res.stderr }).toEqual({ code: 0, out: `be1 ${EXT_IP}`, err: '' });
    expect(node1?.log()).toContain('did not arrive; its frames go through the stack again');
    expect(await listedPods()).not.toContain(BE1);
    for (let i = 0; i < 3; i++) expect(await whoami()).toMatch(new RegExp(`^be1 ${EXT_IP.replace(/\./g, '\\.')}:\\d+$`));
  }, 60_000);
});

