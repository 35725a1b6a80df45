/*
 * The lab's shape as plain data: which network namespaces exist, which veth pairs join them, which
 * addresses and routes each end holds. Pure, so the layout can be checked without root; the
 * builder (src/lab/network.ts) only executes it.
 *
 * The layout follows routed-pod CNIs (Calico, Cilium): every backend pod has its own veth pair to
 * its node, a /32 address and `default via <gateway> onlink`; the node side of every pod veth holds
 * the same gateway /32 and a /32 route to its pod. The client reaches the (first) node over one
 * veth. No link is created in the root namespace and nothing there routes to the lab's addresses,
 * so no lab traffic can leave the lab.
 *
 * One node (the default) is `<lab>-node`, client on its eth0, pods 10.244.0.0/24. With several
 * nodes, node i (1-based) is `<lab>-node<i>` with eth0 on a shared underlay, a bridge in
 * `<lab>-net` (192.168.60.0/24, node i at .1<i>), pods 10.244.<i>.0/24 and a route to every other
 * node's pod CIDR via that node; the client hangs off node1's eth1 as in the one-node lab, and an
 * `external` host `ext` (192.168.60.100) on the underlay stands for traffic from outside the
 * cluster: it routes only the underlay and the LoadBalancer range (via node1), never pods.
 *
 * Address families (`--ip-family`, dual by default): every link carries the IPv4 plan above, the
 * IPv6 plan below, or both. IPv6 mirrors IPv4 address for address: client link fd00:172:30::/64
 * (node ::1, client ::2), pods fd00:10:244:<node>::<n> (/128, gateway fd00:10:244:<node>::1,
 * `<node>` 0 in the one-node lab, 1.. with several nodes), underlay fd00:192:168:60::/64 (node i
 * at ::1<i>, ext at ::100), Services fd00:10:96::/112, LoadBalancer IPs fd00:10:250::/112. A
 * host's `ip` is its address of the lab's first family (IPv4 unless the lab is IPv6-only); `ips`
 * holds every one, IPv4 first.
 */
import { canonicalIp, type IpFamily } from '../model/ip.js';

export type HostRole = 'client' | 'node' | 'backend' | 'external';

/** One end of a veth pair. */
export interface VethEnd {
  host: string;
  netns: string;
  ifname: string;
  /** CIDR notation, e.g. `172.30.0.1/24`. */
  addresses: string[];
}

export interface VethPair {
  /** The end that `ip link add` creates; the peer is created directly in its own namespace. */
  local: VethEnd;
  peer: VethEnd;
}

export interface RouteSpec {
  netns: string;
  /** `default` or a CIDR. */
  dest: string;
  dev: string;
  via: string | null;
  /** `onlink`: the gateway is not inside any prefix of `dev` (pod /32 addresses). */
  onlink: boolean;
}

export interface HostPlan {
  /** The name users type: `client`, `node`, `node1`, `ext`, `be1`... */
  name: string;
  role: HostRole;
  netns: string;
}

export interface BackendPlan extends HostPlan {
  role: 'backend';
  /** 1-based, as in the host name (numbered across the whole lab). */
  index: number;
  /** The pod's address of the lab's first family. */
  ip: string;
  /** Every address of the pod, IPv4 first. */
  ips: string[];
  /** The pod's interface (always `eth0`, as in a pod). */
  ifname: string;
  /** The node-side interface of this pod's veth: `vbe<index>`, as the host name. */
  nodeIfname: string;
}

export interface NodePlan extends HostPlan {
  role: 'node';
  /** 0-based position in the lab. */
  index: number;
  /** The Kubernetes node name used as `nodeName` in the EndpointSlices (the host name). */
  nodeName: string;
  /** The interface facing the client; null on nodes the client is not attached to. */
  clientIfname: string | null;
  /** This node's address on the client link (first family); null with clientIfname. */
  clientIp: string | null;
  /** Every address of the node on the client link, IPv4 first; [] with clientIfname null. */
  clientIps: string[];
  /** The interface on the shared underlay; null in the one-node lab (there is none). */
  underlayIfname: string | null;
  /** The node IP on the underlay (first family); null in the one-node lab. */
  nodeIp: string | null;
  /** Every node IP on the underlay, IPv4 first (its agent's `--node-ip`s); [] in the one-node lab. */
  nodeIps: string[];
  /** The pods' default gateway (first family), held as /32 (/128) on every pod-facing interface. */
  podGateway: string;
  /** The gateway of each family, IPv4 first. */
  podGateways: string[];
  /** The node's pod CIDR: other nodes route it via this node's IP; locally only /32 routes exist. */
  podCidr: string;
  /** The pod CIDR of each family, IPv4 first. */
  podCidrs: string[];
  backends: BackendPlan[];
  /** Every interface of the node, as its agent gets them: underlay, client-facing, pod veths. */
  agentIfaces: string[];
}

/** The L2 segment joining the nodes and the external host: a bridge in a namespace of its own. */
export interface UnderlayPlan {
  netns: string;
  bridge: string;
  /** The underlay's CIDR of the lab's first family. */
  cidr: string;
  /** Its CIDR of each family, IPv4 first. */
  cidrs: string[];
  /** Bridge ports (the underlay veths' ends in `netns`), named after the host on the other end. */
  ports: string[];
}

export interface LabPlan {
  name: string;
  /** `--ip-family`: which families the lab's links carry. */
  ipFamily: LabIpFamily;
  /** The families of ipFamily, IPv4 first. */
  families: IpFamily[];
  client: HostPlan & { role: 'client'; ip: string; ips: string[]; ifname: string };
  nodes: NodePlan[];
  /** The host outside the cluster; null in the one-node lab. */
  external: (HostPlan & { role: 'external'; ip: string; ips: string[]; ifname: string }) | null;
  underlay: UnderlayPlan | null;
  links: VethPair[];
  routes: RouteSpec[];
  /** Namespaces that forward packets (net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1). */
  forwarding: string[];
  /**
   * Namespaces that send no ICMP redirects (send_redirects=0 for all interfaces). The one-node
   * lab's node routes Service addresses back out of the client link, so each untranslated client
   * packet to a VIP would earn the client a redirect to itself; Linux charges a redirect to the
   * same per-host state as its ICMP errors, and the port unreachable of a REJECT rule right behind
   * it is rate-limited away: the client waits for its timeout instead of being refused.
   */
  noRedirects: string[];
  /**
   * Service VIPs live here. Nodes route them as a default route would (to a host that does not
   * forward): only vipr (socket LB, TC) or the fallback modes' rules make them reach a backend.
   */
  serviceCidr: string;
  /** The Service CIDR of each family, IPv4 first. */
  serviceCidrs: string[];
  /** LoadBalancer / external IPs: the external host routes them to the first node. */
  loadBalancerCidr: string;
  /** The LoadBalancer CIDR of each family, IPv4 first. */
  loadBalancerCidrs: string[];
}

export interface LabPlanOptions {
  name: string;
  /** Backends per node. */
  backends: number;
  /** Default 1: the one-node lab. */
  nodes?: number;
  /** Default `dual`. */
  ipFamily?: LabIpFamily;
}

/** `vipr lab up --ip-family`: IPv4 only (the lab as it was before IPv6), IPv6 only, or both. */
export type LabIpFamily = 'ipv4' | 'ipv6' | 'dual';
export const LAB_IP_FAMILIES: readonly LabIpFamily[] = ['ipv4', 'ipv6', 'dual'];
export const DEFAULT_LAB_IP_FAMILY: LabIpFamily = 'dual';

/** The address families of a lab, IPv4 first. */
export function labFamilies(ipFamily: LabIpFamily): IpFamily[] {
  return ipFamily === 'ipv4' ? ['IPv4'] : ipFamily === 'ipv6' ? ['IPv6'] : ['IPv4', 'IPv6'];
}

/** The one of `ips` of `family`, or null (a lab's address lists hold at most one per family). */
export function addressOfFamily(ips: readonly string[], family: IpFamily): string | null {
  return ips.find((ip) => ip.includes(':') === (family === 'IPv6')) ?? null;
}

/** Lab names become namespace names, directory names and log names: keep them plain and short. */
export const LAB_NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$/;
export const MAX_BACKENDS = 200;
export const MAX_NODES = 8;
export const DEFAULT_LAB_NAME = 'vipr';

export const CLIENT_SUBNET_PREFIX = '172.30.0';
export const CLIENT_SUBNET = `${CLIENT_SUBNET_PREFIX}.0/24`;
export const SERVICE_CIDR = '10.0.0.0/24';
export const UNDERLAY_PREFIX = '192.168.60';
export const UNDERLAY_CIDR = `${UNDERLAY_PREFIX}.0/24`;
export const EXTERNAL_IP = `${UNDERLAY_PREFIX}.100`;
export const LOAD_BALANCER_CIDR = '10.250.0.0/24';
export const UNDERLAY_BRIDGE = 'br0';

export const CLIENT_SUBNET6 = 'fd00:172:30::/64';
export const SERVICE_CIDR6 = 'fd00:10:96::/112';
export const UNDERLAY_CIDR6 = 'fd00:192:168:60::/64';
export const EXTERNAL_IP6 = 'fd00:192:168:60::100';
export const LOAD_BALANCER_CIDR6 = 'fd00:10:250::/112';
/** Every pod CIDR of the lab, per family (kube-proxy's --cluster-cidr). */
export const CLUSTER_CIDR = '10.244.0.0/16';
export const CLUSTER_CIDR6 = 'fd00:10:244::/56';

/** Per family, IPv4 first: the IPv4 value, the IPv6 value or both. */
function byFamily<T>(families: readonly IpFamily[], v4: T, v6: T): T[] {
  return families.map((f) => (f === 'IPv4' ? v4 : v6));
}

/** `ip/len` with the IPv4 prefix length or the IPv6 one, as the address's family asks. */
function withPrefix(ip: string, v4Len: number, v6Len: number): string {
  return `${ip}/${ip.includes(':') ? v6Len : v4Len}`;
}

/** The IPv6 address `<prefix>::<suffix>` in canonical text (`fd00:10:244:0::11` is `fd00:10:244::11`). */
function ip6(prefix: string, suffix: string): string {
  return canonicalIp(`${prefix}::${suffix}`);
}

/** Why `name` cannot be a lab name, or null when it can. */
export function labNameProblem(name: string): string | null {
  if (!LAB_NAME_PATTERN.test(name)) {
    return `invalid lab name '${name}': use 1-24 lowercase letters, digits or '-', not starting or ending with '-'`;
  }
  return null;
}

export function clientNetns(lab: string): string {
  return `${lab}-client`;
}

/**
 * The host (and Kubernetes node) name of node `index` (0-based) in a lab of `nodes` nodes: `node`
 * when it is the only one, `node1`, `node2`... otherwise.
 */
export function nodeHostName(index: number, nodes = 1): string {
  return nodes === 1 && index === 0 ? 'node' : `node${index + 1}`;
}

export function backendHostName(index: number): string {
  return `be${index}`;
}

export const EXTERNAL_HOST = 'ext';
/** Not a host (nothing runs there) but `vipr lab exec` reaches it by this name, for tcpdump. */
export const UNDERLAY_HOST = 'net';

export function hostNetns(lab: string, host: string): string {
  return `${lab}-${host}`;
}

/** The pin dir of node `host`'s agent in a multi-node lab: pins are global, never shared. */
export function nodePinDir(lab: string, host: string): string {
  return `/sys/fs/bpf/vipr-${lab}-${host}`;
}

/**
 * Matches every namespace a lab named `lab` may own, whatever its size: used by `down` to find
 * leftovers of a lab whose state file is gone. Anchored, so lab `a` never matches lab `a-b`'s
 * namespaces (`a-b-client`, `a-b-node`, `a-b-be1`).
 */
export function labNetnsPattern(lab: string): RegExp {
  const escaped = lab.replace(/[-]/g, '\\-');
  return new RegExp(`^${escaped}-(client|node(\\d+)?|be\\d+|ext\\d*|net)$`);
}

function underlayIps(index: number, families: readonly IpFamily[]): string[] {
  return byFamily(families, `${UNDERLAY_PREFIX}.${11 + index}`, ip6('fd00:192:168:60', String(11 + index)));
}

/**
 * Node `index` of `nodes` with `backends` pods. Backend host names and their node-side veths are
 * numbered across the whole lab (be1, be2, ... continuing on the next node from `firstBackend`),
 * pod IPs per node from its CIDR (.11, .12, ...).
 */
function nodePlan(lab: string, index: number, nodes: number, backends: number, firstBackend: number, families: readonly IpFamily[]): NodePlan {
  const host = nodeHostName(index, nodes);
  const podNet = nodes === 1 ? 0 : index + 1;
  const podPrefix = `10.244.${podNet}`;
  const podPrefix6 = `fd00:10:244:${podNet}`;
  const bes: BackendPlan[] = [];
  for (let i = 1; i <= backends; i++) {
    const number = firstBackend + i - 1;
    const name = backendHostName(number);
    const ips = byFamily(families, `${podPrefix}.${10 + i}`, ip6(podPrefix6, String(10 + i)));
    bes.push({
      name,
      role: 'backend',
      index: number,
      netns: hostNetns(lab, name),
      ip: ips[0] as string,
      ips,
      ifname: 'eth0',
      nodeIfname: `vbe${number}`,
    });
  }
  const podGateways = byFamily(families, `${podPrefix}.1`, ip6(podPrefix6, '1'));
  const podCidrs = byFamily(families, `${podPrefix}.0/24`, `${ip6(podPrefix6, '')}/64`);
  const clientIps = byFamily(families, `${CLIENT_SUBNET_PREFIX}.1`, 'fd00:172:30::1');
  const nodeIps = underlayIps(index, families);
  const multi = nodes > 1;
  // One node: the client on eth0, as it always was. Several: eth0 is the underlay (the node's
  // "NIC", where XDP goes) and the client, on the first node only, moves to eth1.
  const clientIfname = !multi ? 'eth0' : index === 0 ? 'eth1' : null;
  const underlayIfname = multi ? 'eth0' : null;
  return {
    name: host,
    role: 'node',
    index,
    netns: hostNetns(lab, host),
    nodeName: host,
    clientIfname,
    clientIp: clientIfname === null ? null : (clientIps[0] as string),
    clientIps: clientIfname === null ? [] : clientIps,
    underlayIfname,
    nodeIp: multi ? (nodeIps[0] as string) : null,
    nodeIps: multi ? nodeIps : [],
    podGateway: podGateways[0] as string,
    podGateways,
    podCidr: podCidrs[0] as string,
    podCidrs,
    backends: bes,
    agentIfaces: [
      ...(underlayIfname === null ? [] : [underlayIfname]),
      ...(clientIfname === null ? [] : [clientIfname]),
      ...bes.map((b) => b.nodeIfname),
    ],
  };
}

function podLinksAndRoutes(node: NodePlan, links: VethPair[], routes: RouteSpec[]): void {
  for (const be of node.backends) {
    links.push({
      local: { host: node.name, netns: node.netns, ifname: be.nodeIfname, addresses: node.podGateways.map((g) => withPrefix(g, 32, 128)) },
      peer: { host: be.name, netns: be.netns, ifname: be.ifname, addresses: be.ips.map((ip) => withPrefix(ip, 32, 128)) },
    });
    for (const ip of be.ips) routes.push({ netns: node.netns, dest: withPrefix(ip, 32, 128), dev: be.nodeIfname, via: null, onlink: false });
    for (const gw of node.podGateways) routes.push({ netns: be.netns, dest: 'default', dev: be.ifname, via: gw, onlink: true });
  }
}

/** The whole lab: one node (the default) or `nodes` nodes on an underlay, in one or both families. */
export function planLab(opts: LabPlanOptions): LabPlan {
  const problem = labNameProblem(opts.name);
  if (problem) throw new RangeError(problem);
  if (!Number.isInteger(opts.backends) || opts.backends < 1 || opts.backends > MAX_BACKENDS) {
    throw new RangeError(`backends must be an integer from 1 to ${MAX_BACKENDS}, got ${opts.backends}`);
  }
  const count = opts.nodes ?? 1;
  if (!Number.isInteger(count) || count < 1 || count > MAX_NODES) {
    throw new RangeError(`nodes must be an integer from 1 to ${MAX_NODES}, got ${count}`);
  }
  const ipFamily = opts.ipFamily ?? DEFAULT_LAB_IP_FAMILY;
  if (!LAB_IP_FAMILIES.includes(ipFamily)) throw new RangeError(`ipFamily must be one of ${LAB_IP_FAMILIES.join(', ')}, got ${String(ipFamily)}`);
  const families = labFamilies(ipFamily);
  const nodes: NodePlan[] = [];
  for (let i = 0; i < count; i++) nodes.push(nodePlan(opts.name, i, count, opts.backends, 1 + i * opts.backends, families));
  const first = nodes[0] as NodePlan;
  const clientIps = byFamily(families, `${CLIENT_SUBNET_PREFIX}.2`, 'fd00:172:30::2');
  const client = {
    name: 'client',
    role: 'client' as const,
    netns: clientNetns(opts.name),
    ip: clientIps[0] as string,
    ips: clientIps,
    ifname: 'eth0',
  };
  const firstClientIfname = first.clientIfname as string;
  const serviceCidrs = byFamily(families, SERVICE_CIDR, SERVICE_CIDR6);
  const loadBalancerCidrs = byFamily(families, LOAD_BALANCER_CIDR, LOAD_BALANCER_CIDR6);
  const links: VethPair[] = [
    {
      local: { host: first.name, netns: first.netns, ifname: firstClientIfname, addresses: first.clientIps.map((ip) => withPrefix(ip, 24, 64)) },
      peer: { host: client.name, netns: client.netns, ifname: client.ifname, addresses: client.ips.map((ip) => withPrefix(ip, 24, 64)) },
    },
  ];
  const routes: RouteSpec[] = first.clientIps.map((via) => ({ netns: client.netns, dest: 'default', dev: client.ifname, via, onlink: false }));
  const common = {
    name: opts.name,
    ipFamily,
    families,
    client,
    nodes,
    serviceCidr: serviceCidrs[0] as string,
    serviceCidrs,
    loadBalancerCidr: loadBalancerCidrs[0] as string,
    loadBalancerCidrs,
  };
  if (count === 1) {
    podLinksAndRoutes(first, links, routes);
    // A real node's default route covers Service addresses; without one, a connect() from the
    // node fails before kube-proxy's OUTPUT chain (fallback modes) could DNAT it. Towards the
    // client, which does not forward: untranslated traffic goes no further.
    families.forEach((_, i) => {
      routes.push({ netns: first.netns, dest: serviceCidrs[i] as string, dev: firstClientIfname, via: clientIps[i] as string, onlink: false });
    });
    return {
      ...common,
      external: null,
      underlay: null,
      links,
      routes,
      forwarding: [first.netns],
      noRedirects: [first.netns],
    };
  }

  const underlay: UnderlayPlan = {
    netns: hostNetns(opts.name, UNDERLAY_HOST),
    bridge: UNDERLAY_BRIDGE,
    cidr: families[0] === 'IPv4' ? UNDERLAY_CIDR : UNDERLAY_CIDR6,
    cidrs: byFamily(families, UNDERLAY_CIDR, UNDERLAY_CIDR6),
    ports: [],
  };
  const externalIps = byFamily(families, EXTERNAL_IP, EXTERNAL_IP6);
  const external = {
    name: EXTERNAL_HOST,
    role: 'external' as const,
    netns: hostNetns(opts.name, EXTERNAL_HOST),
    ip: externalIps[0] as string,
    ips: externalIps,
    ifname: 'eth0',
  };
  const underlayPrefix = (ip: string): string => withPrefix(ip, Number(UNDERLAY_CIDR.split('/')[1]), Number(UNDERLAY_CIDR6.split('/')[1]));
  for (const node of nodes) {
    const ifname = node.underlayIfname as string;
    links.push({
      local: { host: node.name, netns: node.netns, ifname, addresses: node.nodeIps.map(underlayPrefix) },
      peer: { host: UNDERLAY_HOST, netns: underlay.netns, ifname: node.name, addresses: [] },
    });
    underlay.ports.push(node.name);
    podLinksAndRoutes(node, links, routes);
    families.forEach((_, f) => {
      for (const other of nodes) {
        if (other !== node) routes.push({ netns: node.netns, dest: other.podCidrs[f] as string, dev: ifname, via: other.nodeIps[f] as string, onlink: false });
      }
      // Replies to the client (behind the first node) from pods on the other nodes.
      const clientSubnet = families[f] === 'IPv4' ? CLIENT_SUBNET : CLIENT_SUBNET6;
      if (node !== first) routes.push({ netns: node.netns, dest: clientSubnet, dev: ifname, via: first.nodeIps[f] as string, onlink: false });
      // Service addresses as a real node's default route takes them (see the one-node lab): towards
      // the external host, which does not forward.
      routes.push({ netns: node.netns, dest: serviceCidrs[f] as string, dev: ifname, via: externalIps[f] as string, onlink: false });
    });
  }
  links.push({
    local: { host: external.name, netns: external.netns, ifname: external.ifname, addresses: external.ips.map(underlayPrefix) },
    peer: { host: UNDERLAY_HOST, netns: underlay.netns, ifname: external.name, addresses: [] },
  });
  underlay.ports.push(external.name);
  // Outside the cluster: the underlay (connected) and LoadBalancer IPs, nothing else: no pod or
  // ClusterIP route, so services are reachable only through what nodes expose.
  families.forEach((_, f) => {
    routes.push({ netns: external.netns, dest: loadBalancerCidrs[f] as string, dev: external.ifname, via: first.nodeIps[f] as string, onlink: false });
  });
  return {
    ...common,
    external,
    underlay,
    links,
    routes,
    forwarding: nodes.map((n) => n.netns),
    // The client is on node1's eth1 and Service routes leave by the underlay: the client's
    // packets to a VIP never go back out the link they came in on (see the one-node lab).
    noRedirects: [],
  };
}

/** Every host of the plan, client first, then each node followed by its backends, then `ext`. */
export function planHosts(plan: LabPlan): HostPlan[] {
  const hosts: HostPlan[] = [{ name: plan.client.name, role: plan.client.role, netns: plan.client.netns }];
  for (const node of plan.nodes) {
    hosts.push({ name: node.name, role: node.role, netns: node.netns });
    for (const be of node.backends) hosts.push({ name: be.name, role: be.role, netns: be.netns });
  }
  if (plan.external) hosts.push({ name: plan.external.name, role: plan.external.role, netns: plan.external.netns });
  return hosts;
}
