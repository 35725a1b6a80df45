/*
 * The lab's shape as plain data: which network namespaces exist, which veth pairs join them, which
 * addresses and routes each end holds. Pure, so the layout can be checked without root; the
 * builder (src/lab/network.ts) only executes it.
 *
 * The layout follows routed-pod CNIs (Calico, Cilium): every backend pod has its own veth pair to
 * the node, a /32 address and `default via <gateway> onlink`; the node side of every pod veth holds
 * the same gateway /32 and a /32 route to its pod. The client reaches the node over one veth. No
 * link is created in the root namespace and nothing there routes to the lab's addresses, so no
 * lab traffic can leave the lab.
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
  /** The name users type: `client`, `node`, `be1`... */
  name: string;
  role: HostRole;
  netns: string;
}

export interface BackendPlan extends HostPlan {
  role: 'backend';
  /** 1-based, as in the host name. */
  index: number;
  ip: string;
  /** The pod's interface (always `eth0`, as in a pod). */
  ifname: string;
  /** The node-side interface of this pod's veth. */
  nodeIfname: string;
}

export interface NodePlan extends HostPlan {
  role: 'node';
  /** 0-based; only node 0 exists today, the layout leaves room for more. */
  index: number;
  /** The Kubernetes node name used as `nodeName` in the EndpointSlices. */
  nodeName: string;
  /** The interface facing the client. */
  clientIfname: string;
  clientIp: string;
  /** The pods' default gateway, held as /32 on every pod-facing interface. */
  podGateway: string;
  /** The node's pod CIDR (informational: only /32 routes exist). */
  podCidr: string;
  backends: BackendPlan[];
}

export interface LabPlan {
  name: string;
  client: HostPlan & { role: 'client'; ip: string; ifname: string };
  nodes: NodePlan[];
  links: VethPair[];
  routes: RouteSpec[];
  /** Namespaces that forward packets (net.ipv4.ip_forward=1). */
  forwarding: string[];
  /** Service VIPs live here; nothing routes them, the agent's TC program DNATs them. */
  serviceCidr: string;
}

export interface LabPlanOptions {
  name: string;
  backends: number;
}

/** Lab names become namespace names, directory names and log names: keep them plain and short. */
export const LAB_NAME_PATTERN = /^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$/;
export const MAX_BACKENDS = 200;
export const DEFAULT_LAB_NAME = 'vipr';

export const CLIENT_SUBNET_PREFIX = '172.30.0';
export const SERVICE_CIDR = '10.0.0.0/24';

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

/** Node 0 is `<lab>-node` (its Kubernetes name `node`); node i > 0 is `<lab>-node<i+1>`. */
export function nodeHostName(index: number): string {
  return index === 0 ? 'node' : `node${index + 1}`;
}

export function backendHostName(index: number): string {
  return `be${index}`;
}

export function hostNetns(lab: string, host: string): string {
  return `${lab}-${host}`;
}

/**
 * Matches every namespace a lab named `lab` may own, whatever its size: used by `down` to find
 * leftovers of a lab whose state file is gone. Anchored, so lab `a` never matches lab `a-b`'s
 * namespaces (`a-b-client`, `a-b-node`, `a-b-be1`).
 */
export function labNetnsPattern(lab: string): RegExp {
  const escaped = lab.replace(/[-]/g, '\\-');
  return new RegExp(`^${escaped}-(client|node(\\d+)?|be\\d+|ext\\d*)$`);
}

/**
 * Node `index` with `backends` pods. Backend host names are numbered across the whole lab
 * (be1, be2, ... continuing on the next node from `firstBackend`), pod IPs per node from its CIDR.
 */
function nodePlan(lab: string, index: number, backends: number, firstBackend: number): NodePlan {
  const host = nodeHostName(index);
  const podPrefix = `10.244.${index}`;
  const bes: BackendPlan[] = [];
  for (let i = 1; i <= backends; i++) {
    const name = backendHostName(firstBackend + i - 1);
    bes.push({
      name,
      role: 'backend',
      index: i,
      netns: hostNetns(lab, name),
      ip: `${podPrefix}.${10 + i}`,
      ifname: 'eth0',
      nodeIfname: `vbe${i}`,
    });
  }
  return {
    name: host,
    role: 'node',
    index,
    netns: hostNetns(lab, host),
    nodeName: host,
    clientIfname: 'eth0',
    clientIp: `${CLIENT_SUBNET_PREFIX}.${1 + index}`,
    podGateway: `${podPrefix}.1`,
    podCidr: `${podPrefix}.0/24`,
    backends: bes,
  };
}

/** The whole lab for one node. */
export function planLab(opts: LabPlanOptions): LabPlan {
  const problem = labNameProblem(opts.name);
  if (problem) throw new RangeError(problem);
  if (!Number.isInteger(opts.backends) || opts.backends < 1 || opts.backends > MAX_BACKENDS) {
    throw new RangeError(`backends must be an integer from 1 to ${MAX_BACKENDS}, got ${opts.backends}`);
  }
  const node = nodePlan(opts.name, 0, opts.backends, 1);
  const client = {
    name: 'client',
    role: 'client' as const,
    netns: clientNetns(opts.name),
    ip: `${CLIENT_SUBNET_PREFIX}.2`,
    ifname: 'eth0',
  };
  const links: VethPair[] = [
    {
      local: { host: node.name, netns: node.netns, ifname: node.clientIfname, addresses: [`${node.clientIp}/24`] },
      peer: { host: client.name, netns: client.netns, ifname: client.ifname, addresses: [`${client.ip}/24`] },
    },
  ];
  const routes: RouteSpec[] = [
    { netns: client.netns, dest: 'default', dev: client.ifname, via: node.clientIp, onlink: false },
  ];
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
  return {
    name: opts.name,
    client,
    nodes: [node],
    links,
    routes,
    forwarding: [node.netns],
    serviceCidr: SERVICE_CIDR,
  };
}

/** Every host of the plan, client first, then each node followed by its backends. */
export function planHosts(plan: LabPlan): HostPlan[] {
  const hosts: HostPlan[] = [{ name: plan.client.name, role: plan.client.role, netns: plan.client.netns }];
  for (const node of plan.nodes) {
    hosts.push({ name: node.name, role: node.role, netns: node.netns });
    for (const be of node.backends) hosts.push({ name: be.name, role: be.role, netns: be.netns });
  }
  return hosts;
}
