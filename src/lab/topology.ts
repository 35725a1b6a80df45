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
 */

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
  ip: string;
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
  /** This node's address on the client link; null with clientIfname. */
  clientIp: string | null;
  /** The interface on the shared underlay; null in the one-node lab (there is none). */
  underlayIfname: string | null;
  /** The node IP on the underlay (`--node-ip` of its agent); null in the one-node lab. */
  nodeIp: string | null;
  /** The pods' default gateway, held as /32 on every pod-facing interface. */
  podGateway: string;
  /** The node's pod CIDR: other nodes route it via this node's IP; locally only /32 routes exist. */
  podCidr: string;
  backends: BackendPlan[];
  /** Every interface of the node, as its agent gets them: underlay, client-facing, pod veths. */
  agentIfaces: string[];
}

/** The L2 segment joining the nodes and the external host: a bridge in a namespace of its own. */
export interface UnderlayPlan {
  netns: string;
  bridge: string;
  cidr: string;
  /** Bridge ports (the underlay veths' ends in `netns`), named after the host on the other end. */
  ports: string[];
}

export interface LabPlan {
  name: string;
  client: HostPlan & { role: 'client'; ip: string; ifname: string };
  nodes: NodePlan[];
  /** The host outside the cluster; null in the one-node lab. */
  external: (HostPlan & { role: 'external'; ip: string; ifname: string }) | null;
  underlay: UnderlayPlan | null;
  links: VethPair[];
  routes: RouteSpec[];
  /** Namespaces that forward packets (net.ipv4.ip_forward=1). */
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
  /** LoadBalancer / external IPs: the external host routes them to the first node. */
  loadBalancerCidr: string;
}

export interface LabPlanOptions {
  name: string;
  /** Backends per node. */
  backends: number;
  /** Default 1: the one-node lab. */
  nodes?: number;
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

function underlayIp(index: number): string {
  return `${UNDERLAY_PREFIX}.${11 + index}`;
}

/**
 * Node `index` of `nodes` with `backends` pods. Backend host names and their node-side veths are
 * numbered across the whole lab (be1, be2, ... continuing on the next node from `firstBackend`),
 * pod IPs per node from its CIDR (.11, .12, ...).
 */
function nodePlan(lab: string, index: number, nodes: number, backends: number, firstBackend: number): NodePlan {
  const host = nodeHostName(index, nodes);
  const podPrefix = nodes === 1 ? '10.244.0' : `10.244.${index + 1}`;
  const bes: BackendPlan[] = [];
  for (let i = 1; i <= backends; i++) {
    const number = firstBackend + i - 1;
    const name = backendHostName(number);
    bes.push({
      name,
      role: 'backend',
      index: number,
      netns: hostNetns(lab, name),
      ip: `${podPrefix}.${10 + i}`,
      ifname: 'eth0',
      nodeIfname: `vbe${number}`,
    });
  }
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
    clientIp: clientIfname === null ? null : `${CLIENT_SUBNET_PREFIX}.1`,
    underlayIfname,
    nodeIp: multi ? underlayIp(index) : null,
    podGateway: `${podPrefix}.1`,
    podCidr: `${podPrefix}.0/24`,
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
      local: { host: node.name, netns: node.netns, ifname: be.nodeIfname, addresses: [`${node.podGateway}/32`] },
      peer: { host: be.name, netns: be.netns, ifname: be.ifname, addresses: [`${be.ip}/32`] },
    });
    routes.push(
      { netns: node.netns, dest: `${be.ip}/32`, dev: be.nodeIfname, via: null, onlink: false },
      { netns: be.netns, dest: 'default', dev: be.ifname, via: node.podGateway, onlink: true },
    );
  }
}

/** The whole lab: one node (the default) or `nodes` nodes on an underlay. */
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
  const nodes: NodePlan[] = [];
  for (let i = 0; i < count; i++) nodes.push(nodePlan(opts.name, i, count, opts.backends, 1 + i * opts.backends));
  const first = nodes[0] as NodePlan;
  const client = {
    name: 'client',
    role: 'client' as const,
    netns: clientNetns(opts.name),
    ip: `${CLIENT_SUBNET_PREFIX}.2`,
    ifname: 'eth0',
  };
  const firstClientIfname = first.clientIfname as string;
  const firstClientIp = first.clientIp as string;
  const links: VethPair[] = [
    {
      local: { host: first.name, netns: first.netns, ifname: firstClientIfname, addresses: [`${firstClientIp}/24`] },
      peer: { host: client.name, netns: client.netns, ifname: client.ifname, addresses: [`${client.ip}/24`] },
    },
  ];
  const routes: RouteSpec[] = [
    { netns: client.netns, dest: 'default', dev: client.ifname, via: firstClientIp, onlink: false },
  ];
  if (count === 1) {
    podLinksAndRoutes(first, links, routes);
    // A real node's default route covers Service addresses; without one, a connect() from the
    // node fails before kube-proxy's OUTPUT chain (fallback modes) could DNAT it. Towards the
    // client, which does not forward: untranslated traffic goes no further.
    routes.push({ netns: first.netns, dest: SERVICE_CIDR, dev: firstClientIfname, via: client.ip, onlink: false });
    return {
      name: opts.name,
      client,
      nodes,
      external: null,
      underlay: null,
      links,
      routes,
      forwarding: [first.netns],
      noRedirects: [first.netns],
      serviceCidr: SERVICE_CIDR,
      loadBalancerCidr: LOAD_BALANCER_CIDR,
    };
  }

  const underlay: UnderlayPlan = {
    netns: hostNetns(opts.name, UNDERLAY_HOST),
    bridge: UNDERLAY_BRIDGE,
    cidr: UNDERLAY_CIDR,
    ports: [],
  };
  const external = {
    name: EXTERNAL_HOST,
    role: 'external' as const,
    netns: hostNetns(opts.name, EXTERNAL_HOST),
    ip: EXTERNAL_IP,
    ifname: 'eth0',
  };
  const prefixLen = UNDERLAY_CIDR.split('/')[1] as string;
  for (const node of nodes) {
    const ifname = node.underlayIfname as string;
    const nodeIp = node.nodeIp as string;
    links.push({
      local: { host: node.name, netns: node.netns, ifname, addresses: [`${nodeIp}/${prefixLen}`] },
      peer: { host: UNDERLAY_HOST, netns: underlay.netns, ifname: node.name, addresses: [] },
    });
    underlay.ports.push(node.name);
    podLinksAndRoutes(node, links, routes);
    for (const other of nodes) {
      if (other !== node) routes.push({ netns: node.netns, dest: other.podCidr, dev: ifname, via: other.nodeIp, onlink: false });
    }
    // Replies to the client (behind the first node) from pods on the other nodes.
    if (node !== first) routes.push({ netns: node.netns, dest: CLIENT_SUBNET, dev: ifname, via: first.nodeIp, onlink: false });
    // Service addresses as a real node's default route takes them (see the one-node lab): towards
    // the external host, which does not forward.
    routes.push({ netns: node.netns, dest: SERVICE_CIDR, dev: ifname, via: EXTERNAL_IP, onlink: false });
  }
  links.push({
    local: { host: external.name, netns: external.netns, ifname: external.ifname, addresses: [`${external.ip}/${prefixLen}`] },
    peer: { host: UNDERLAY_HOST, netns: underlay.netns, ifname: external.name, addresses: [] },
  });
  underlay.ports.push(external.name);
  // Outside the cluster: the underlay (connected) and LoadBalancer IPs, nothing else: no pod or
  // ClusterIP route, so services are reachable only through what nodes expose.
  routes.push({ netns: external.netns, dest: LOAD_BALANCER_CIDR, dev: external.ifname, via: first.nodeIp, onlink: false });
  return {
    name: opts.name,
    client,
    nodes,
    external,
    underlay,
    links,
    routes,
    forwarding: nodes.map((n) => n.netns),
    // The client is on node1's eth1 and Service routes leave by the underlay: the client's
    // packets to a VIP never go back out the link they came in on (see the one-node lab).
    noRedirects: [],
    serviceCidr: SERVICE_CIDR,
    loadBalancerCidr: LOAD_BALANCER_CIDR,
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
