/*
 * kube-proxy's IPVS mode (pkg/proxy/ipvs/proxier.go, ipset.go), rendered as the inputs of the
 * tools that apply it: `ipvsadm -R`, `ipset restore`, `iptables-restore --noflush`, plus the
 * addresses to bind on the kube-ipvs0 dummy link.
 *
 * kube-proxy drives IPVS and ipset through netlink calls one object at a time; the text here
 * describes the same end state. The ipset input recreates every set's content (create -exist,
 * flush, add), so applying it converges whatever was there before.
 *
 * One family per rendering, as kube-proxy runs one IPVS proxier per family. The IPv6 one's
 * differences: ipsets named `KUBE-6-…` (cut to ipset's 31 characters) with `family inet6`,
 * virtual and real servers as `[ip]:port` (ipvsadm's notation), kube-ipvs0 addresses as /128,
 * and its iptables glue goes to ip6tables-restore.
 */
import type { DesiredState, Endpoint, Protocol } from '../model/types.js';
import { joinHostPort, type IpFamily } from '../model/ip.js';
import { isLoopbackIp, resolveOptions, type RenderOptions, type ResolvedOptions } from './options.js';
import { endpointString, servicePortFacts, sourceRangesAllowNode, type ServicePortFacts } from './service-port.js';

export const KUBE_IPVS_DUMMY_DEVICE = 'kube-ipvs0';

const KUBE_SERVICES = 'KUBE-SERVICES';
const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
const KUBE_SOURCE_RANGES_FIREWALL = 'KUBE-SOURCE-RANGES-FIREWALL';
const KUBE_POSTROUTING = 'KUBE-POSTROUTING';
const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ';
const KUBE_NODE_PORT = 'KUBE-NODE-PORT';
const KUBE_FORWARD = 'KUBE-FORWARD';
const KUBE_LOAD_BALANCER = 'KUBE-LOAD-BALANCER';

export type IpsetType = 'hash:ip,port' | 'hash:ip,port,ip' | 'hash:ip,port,net' | 'bitmap:port';

interface IpsetInfo {
  name: string;
  type: IpsetType;
  comment: string;
}

/** ipsetInfo, in kube-proxy's order. */
export const IPVS_IPSETS: readonly IpsetInfo[] = [
  { name: 'KUBE-LOOP-BACK', type: 'hash:ip,port,ip', comment: 'Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose' },
  { name: 'KUBE-CLUSTER-IP', type: 'hash:ip,port', comment: 'Kubernetes service cluster ip + port for masquerade purpose' },
  { name: 'KUBE-EXTERNAL-IP', type: 'hash:ip,port', comment: 'Kubernetes service external ip + port for masquerade and filter purpose' },
  { name: 'KUBE-EXTERNAL-IP-LOCAL', type: 'hash:ip,port', comment: 'Kubernetes service external ip + port with externalTrafficPolicy=local' },
  { name: 'KUBE-LOAD-BALANCER', type: 'hash:ip,port', comment: 'Kubernetes service lb portal' },
  { name: 'KUBE-LOAD-BALANCER-FW', type: 'hash:ip,port', comment: 'Kubernetes service load balancer ip + port for load balancer with sourceRange' },
  { name: 'KUBE-LOAD-BALANCER-LOCAL', type: 'hash:ip,port', comment: 'Kubernetes service load balancer ip + port with externalTrafficPolicy=local' },
  { name: 'KUBE-LOAD-BALANCER-SOURCE-IP', type: 'hash:ip,port,ip', comment: 'Kubernetes service load balancer ip + port + source IP for packet filter purpose' },
  { name: 'KUBE-LOAD-BALANCER-SOURCE-CIDR', type: 'hash:ip,port,net', comment: 'Kubernetes service load balancer ip + port + source cidr for packet filter purpose' },
  { name: 'KUBE-NODE-PORT-TCP', type: 'bitmap:port', comment: 'Kubernetes nodeport TCP port for masquerade purpose' },
  { name: 'KUBE-NODE-PORT-LOCAL-TCP', type: 'bitmap:port', comment: 'Kubernetes nodeport TCP port with externalTrafficPolicy=local' },
  { name: 'KUBE-NODE-PORT-UDP', type: 'bitmap:port', comment: 'Kubernetes nodeport UDP port for masquerade purpose' },
  { name: 'KUBE-NODE-PORT-LOCAL-UDP', type: 'bitmap:port', comment: 'Kubernetes nodeport UDP port with externalTrafficPolicy=local' },
  { name: 'KUBE-NODE-PORT-SCTP-HASH', type: 'hash:ip,port', comment: "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'" },
  { name: 'KUBE-NODE-PORT-LOCAL-SCTP-HASH', type: 'hash:ip,port', comment: "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'" },
  { name: 'KUBE-HEALTH-CHECK-NODE-PORT', type: 'bitmap:port', comment: 'Kubernetes health check node port' },
];

/**
 * ipsetWithIptablesChain: [set, table, from, to, match type, protocol match]. The LOCAL
 * NodePort sets must come before the masquerading ones (RETURN first).
 */
const IPSET_WITH_IPTABLES_CHAIN: ReadonlyArray<[string, 'nat' | 'filter', string, string, string, string]> = [
  ['KUBE-LOOP-BACK', 'nat', KUBE_POSTROUTING, 'MASQUERADE', 'dst,dst,src', ''],
  ['KUBE-LOAD-BALANCER', 'nat', KUBE_SERVICES, KUBE_LOAD_BALANCER, 'dst,dst', ''],
  ['KUBE-LOAD-BALANCER-LOCAL', 'nat', KUBE_LOAD_BALANCER, 'RETURN', 'dst,dst', ''],
  ['KUBE-NODE-PORT-LOCAL-TCP', 'nat', KUBE_NODE_PORT, 'RETURN', 'dst', 'tcp'],
  ['KUBE-NODE-PORT-TCP', 'nat', KUBE_NODE_PORT, KUBE_MARK_MASQ, 'dst', 'tcp'],
  ['KUBE-NODE-PORT-LOCAL-UDP', 'nat', KUBE_NODE_PORT, 'RETURN', 'dst', 'udp'],
  ['KUBE-NODE-PORT-UDP', 'nat', KUBE_NODE_PORT, KUBE_MARK_MASQ, 'dst', 'udp'],
  ['KUBE-NODE-PORT-LOCAL-SCTP-HASH', 'nat', KUBE_NODE_PORT, 'RETURN', 'dst,dst', 'sctp'],
  ['KUBE-NODE-PORT-SCTP-HASH', 'nat', KUBE_NODE_PORT, KUBE_MARK_MASQ, 'dst,dst', 'sctp'],
  ['KUBE-LOAD-BALANCER-FW', 'filter', KUBE_PROXY_FIREWALL, KUBE_SOURCE_RANGES_FIREWALL, 'dst,dst', ''],
  ['KUBE-LOAD-BALANCER-SOURCE-CIDR', 'filter', KUBE_SOURCE_RANGES_FIREWALL, 'RETURN', 'dst,dst,src', ''],
  ['KUBE-LOAD-BALANCER-SOURCE-IP', 'filter', KUBE_SOURCE_RANGES_FIREWALL, 'RETURN', 'dst,dst,src', ''],
];

/** ipset's limit on set names (IPSET_MAXNAMELEN - 1). */
const IPSET_NAME_MAX = 31;

/**
 * The set's name in `family`: kube-proxy's IPv6 proxier renames `KUBE-` to `KUBE-6-` so both
 * families' sets can coexist, cut to 31 characters (KUBE-6-LOAD-BALANCER-SOURCE-CID).
 */
export function ipsetName(name: string, family: IpFamily): string {
  if (family === 'IPv4' || !name.startsWith('KUBE-')) return name;
  return `KUBE-6-${name.slice('KUBE-'.length)}`.slice(0, IPSET_NAME_MAX);
}

/** The prefix length of one kube-ipvs0 address: /32, or /128 for IPv6 (netlink.NewIPNet). */
export function hostPrefix(ip: string): string {
  return ip.includes(':') ? `${ip}/128` : `${ip}/32`;
}

const IPTABLES_CHAINS: ReadonlyArray<['nat' | 'filter', string]> = [
  ['nat', KUBE_SERVICES],
  ['nat', KUBE_POSTROUTING],
  ['nat', KUBE_NODE_PORT],
  ['nat', KUBE_LOAD_BALANCER],
  ['nat', KUBE_MARK_MASQ],
  ['filter', KUBE_FORWARD],
  ['filter', KUBE_NODE_PORT],
  ['filter', KUBE_PROXY_FIREWALL],
  ['filter', KUBE_SOURCE_RANGES_FIREWALL],
];

/** A jump from a built-in chain that kube-proxy's IPVS mode keeps in place (iptablesJumpChain). */
export interface IpvsJumpRule {
  table: 'filter' | 'nat';
  chain: string;
  target: string;
  args: string[];
}

export function ipvsIptablesJumpRules(): IpvsJumpRule[] {
  const jumps: Array<[IpvsJumpRule['table'], string, string, string]> = [
    ['nat', 'OUTPUT', KUBE_SERVICES, 'kubernetes service portals'],
    ['nat', 'PREROUTING', KUBE_SERVICES, 'kubernetes service portals'],
    ['nat', 'POSTROUTING', KUBE_POSTROUTING, 'kubernetes postrouting rules'],
    ['filter', 'FORWARD', KUBE_FORWARD, 'kubernetes forwarding rules'],
    ['filter', 'INPUT', KUBE_NODE_PORT, 'kubernetes health check rules'],
    ['filter', 'INPUT', KUBE_PROXY_FIREWALL, 'kube-proxy firewall rules'],
    ['filter', 'FORWARD', KUBE_PROXY_FIREWALL, 'kube-proxy firewall rules'],
  ];
  return jumps.map(([table, chain, target, comment]) => ({
    table,
    chain,
    target,
    args: ['-m', 'comment', '--comment', comment, '-j', target],
  }));
}

export interface IpvsRendering {
  family: IpFamily;
  /** `ipvsadm -R` input (after `ipvsadm -C`, or diffed against `ipvsadm -Sn`). */
  ipvsadm: string;
  /** `ipset restore` input. */
  ipset: string;
  /** `iptables-restore --noflush` input, ip6tables-restore for IPv6 (nat then filter, as kube-proxy writes it). */
  iptables: string;
  /** Addresses to bind to kube-ipvs0 (each as /32 or /128: hostPrefix()). */
  addresses: string[];
}

interface VirtualServer {
  protocol: Protocol;
  address: string;
  port: number;
  persistentSeconds: number;
  realServers: Endpoint[];
}

const IPVSADM_PROTOCOL_FLAG: Record<Protocol, string> = { TCP: '-t', UDP: '-u', SCTP: '--sctp-service' };

/** `family`'s IPVS proxier's objects for its ServicePorts in `state` (IPv4 by default). */
export function renderIpvs(state: DesiredState, options: RenderOptions, family: IpFamily = 'IPv4'): IpvsRendering {
  const opts = resolveOptions(options, family);
  const entries = new Map<string, Set<string>>(IPVS_IPSETS.map((s) => [s.name, new Set<string>()]));
  const add = (set: string, entry: string): void => {
    entries.get(set)?.add(entry);
  };
  const virtualServers: VirtualServer[] = [];
  const addresses: string[] = [];
  const bind = (ip: string): void => {
    if (!addresses.includes(ip)) addresses.push(ip);
  };
  // NodePort virtual servers live on the node's own (non-loopback) addresses.
  const nodeIPs = opts.nodePortIPs.filter((ip) => !isLoopbackIp(ip));

  for (const entry of state.services) {
    if (entry.service.family !== family) continue;
    const facts = servicePortFacts(entry);
    const svc = entry.service;
    const { protocol } = facts;
    const persistentSeconds = facts.affinity ? svc.affinityTimeoutSeconds : 0;
    const vs = (address: string, port: number, onlyNodeLocal: boolean): void => {
      virtualServers.push({ protocol: svc.id.protocol, address, port, persistentSeconds, realServers: realServers(facts, onlyNodeLocal) });
    };

    // Hairpin: local endpoints reaching themselves through the service get masqueraded.
    for (const ep of entry.endpoints) {
      if (ep.isLocal) add('KUBE-LOOP-BACK', `${ep.ip},${protocol}:${ep.port},${ep.ip}`);
    }

    add('KUBE-CLUSTER-IP', `${svc.clusterIP},${protocol}:${svc.port}`);
    vs(svc.clusterIP, svc.port, facts.internalPolicyLocal);
    bind(svc.clusterIP);

    for (const ip of svc.externalIPs) {
      add(facts.externalPolicyLocal ? 'KUBE-EXTERNAL-IP-LOCAL' : 'KUBE-EXTERNAL-IP', `${ip},${protocol}:${svc.port}`);
      vs(ip, svc.port, facts.externalPolicyLocal);
      bind(ip);
    }

    for (const lbip of svc.loadBalancerIPs) {
      const key = `${lbip},${protocol}:${svc.port}`;
      add('KUBE-LOAD-BALANCER', key);
      if (facts.externalPolicyLocal) add('KUBE-LOAD-BALANCER-LOCAL', key);
      if (facts.sourceRanges.length > 0) {
        add('KUBE-LOAD-BALANCER-FW', key);
        for (const cidr of facts.sourceRanges) add('KUBE-LOAD-BALANCER-SOURCE-CIDR', `${key},${cidr}`);
        if (sourceRangesAllowNode(facts, opts.primaryNodeIP)) add('KUBE-LOAD-BALANCER-SOURCE-IP', `${key},${lbip}`);
      }
      vs(lbip, svc.port, facts.externalPolicyLocal);
      bind(lbip);
    }

    if (svc.nodePort !== 0 && nodeIPs.length > 0) {
      const sets: Record<Protocol, [string, string]> = {
        TCP: ['KUBE-NODE-PORT-TCP', 'KUBE-NODE-PORT-LOCAL-TCP'],
        UDP: ['KUBE-NODE-PORT-UDP', 'KUBE-NODE-PORT-LOCAL-UDP'],
        SCTP: ['KUBE-NODE-PORT-SCTP-HASH', 'KUBE-NODE-PORT-LOCAL-SCTP-HASH'],
      };
      const [set, localSet] = sets[svc.id.protocol];
      // bitmap:port sets hold the port; SCTP uses hash:ip,port with every node IP.
      const keys = svc.id.protocol === 'SCTP' ? nodeIPs.map((ip) => `${ip},${protocol}:${svc.nodePort}`) : [String(svc.nodePort)];
      for (const key of keys) add(set, key);
      if (facts.externalPolicyLocal) for (const key of keys) add(localSet, key);
      for (const ip of nodeIPs) vs(ip, svc.nodePort, facts.externalPolicyLocal);
    }

    if (facts.healthCheckNodePort !== 0) add('KUBE-HEALTH-CHECK-NODE-PORT', String(facts.healthCheckNodePort));
  }

  return {
    family,
    ipvsadm: renderIpvsadm(virtualServers, opts),
    ipset: renderIpset(entries, family),
    iptables: renderIpvsIptables(entries, opts),
    addresses,
  };
}

/**
 * syncEndpoint: node-local traffic policies use the local endpoints, falling back to the
 * cluster ones when there are none (kubernetes#97081); real servers in sorted `ip:port` order.
 */
function realServers(facts: ServicePortFacts, onlyNodeLocal: boolean): Endpoint[] {
  const { clusterEndpoints, localEndpoints } = facts.entry.selection;
  const chosen = onlyNodeLocal && localEndpoints.length > 0 ? localEndpoints : clusterEndpoints;
  const byString = new Map(chosen.map((ep) => [endpointString(ep), ep]));
  return [...byString.keys()].sort().map((key) => byString.get(key) as Endpoint);
}

function renderIpvsadm(virtualServers: VirtualServer[], opts: ResolvedOptions): string {
  const lines: string[] = [];
  for (const vs of virtualServers) {
    const service = `${IPVSADM_PROTOCOL_FLAG[vs.protocol]} ${joinHostPort(vs.address, vs.port)}`;
    lines.push(`-A ${service} -s ${opts.ipvsScheduler}${vs.persistentSeconds > 0 ? ` -p ${vs.persistentSeconds}` : ''}`);
    for (const rs of vs.realServers) lines.push(`-a ${service} -r ${endpointString(rs)} -m -w 1`);
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

function renderIpset(entries: Map<string, Set<string>>, family: IpFamily): string {
  const lines: string[] = [];
  const hashFamily = family === 'IPv6' ? 'inet6' : 'inet';
  for (const set of IPVS_IPSETS) {
    // As kube-proxy's ipset util creates them: hash sets sized 1024/65536, bitmaps over all ports.
    const params = set.type === 'bitmap:port' ? 'range 0-65535' : `family ${hashFamily} hashsize 1024 maxelem 65536`;
    const name = ipsetName(set.name, family);
    lines.push(`create ${name} ${set.type} ${params} comment -exist`);
    lines.push(`flush ${name}`);
    for (const entry of [...(entries.get(set.name) ?? [])].sort()) lines.push(`add ${name} ${entry}`);
  }
  return `${lines.join('\n')}\n`;
}

function renderIpvsIptables(entries: Map<string, Set<string>>, opts: ResolvedOptions): string {
  const mark = opts.masqueradeMark;
  const natChains: string[] = ['*nat'];
  const filterChains: string[] = ['*filter'];
  for (const [table, chain] of IPTABLES_CHAINS) (table === 'nat' ? natChains : filterChains).push(`:${chain} - [0:0]`);
  const natRules: string[] = [];
  const filterRules: string[] = [];
  const nonEmpty = (set: string): boolean => (entries.get(set)?.size ?? 0) > 0;
  const comment = (set: string): string => `"${IPVS_IPSETS.find((s) => s.name === set)?.comment ?? set}"`;
  const named = (set: string): string => ipsetName(set, opts.family);

  for (const [set, table, from, to, matchType, proto] of IPSET_WITH_IPTABLES_CHAIN) {
    if (!nonEmpty(set)) continue;
    const line = [
      '-A', from, ...(proto === '' ? [] : ['-p', proto]),
      '-m', 'comment', '--comment', comment(set), '-m', 'set', '--match-set', named(set), matchType, '-j', to,
    ].join(' ');
    (table === 'filter' ? filterRules : natRules).push(line);
  }

  if (nonEmpty('KUBE-CLUSTER-IP')) {
    const head = `-A ${KUBE_SERVICES} -m comment --comment ${comment('KUBE-CLUSTER-IP')} -m set --match-set ${named('KUBE-CLUSTER-IP')}`;
    if (opts.masqueradeAll) {
      natRules.push(`${head} dst,dst -j ${KUBE_MARK_MASQ}`);
    } else if (opts.clusterCIDR !== null) {
      // Off-cluster clients routed to a VIP may bounce off-node: masquerade them.
      natRules.push(`${head} dst,dst ! -s ${opts.clusterCIDR} -j ${KUBE_MARK_MASQ}`);
    } else {
      // kube-ipvs0 holds every VIP, so the node reaching a VIP picks a VIP as source.
      natRules.push(`${head} src,dst -j ${KUBE_MARK_MASQ}`);
    }
  }

  const externalIPRules = (args: string): void => {
    // Traffic from off-machine (not a bridge, not a local process) to an external IP.
    natRules.push(`${args} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT`);
    // External IPs that happen to be local addresses (e.g. GCE LBs) stay local.
    natRules.push(`${args} -m addrtype --dst-type LOCAL -j ACCEPT`);
  };
  if (nonEmpty('KUBE-EXTERNAL-IP')) {
    const args = `-A ${KUBE_SERVICES} -m comment --comment ${comment('KUBE-EXTERNAL-IP')} -m set --match-set ${named('KUBE-EXTERNAL-IP')} dst,dst`;
    natRules.push(`${args} -j ${KUBE_MARK_MASQ}`);
    externalIPRules(args);
  }
  if (nonEmpty('KUBE-EXTERNAL-IP-LOCAL')) {
    externalIPRules(
      `-A ${KUBE_SERVICES} -m comment --comment ${comment('KUBE-EXTERNAL-IP-LOCAL')} -m set --match-set ${named('KUBE-EXTERNAL-IP-LOCAL')} dst,dst`,
    );
  }

  natRules.push(`-A ${KUBE_SERVICES} -m addrtype --dst-type LOCAL -j ${KUBE_NODE_PORT}`);
  natRules.push(`-A ${KUBE_LOAD_BALANCER} -j ${KUBE_MARK_MASQ}`);
  filterRules.push(`-A ${KUBE_SOURCE_RANGES_FIREWALL} -j DROP`);

  // Accept IPVS traffic in case other rules would block it; last in KUBE-SERVICES.
  for (const set of ['KUBE-CLUSTER-IP', 'KUBE-LOAD-BALANCER']) {
    if (nonEmpty(set)) natRules.push(`-A ${KUBE_SERVICES} -m set --match-set ${named(set)} dst,dst -j ACCEPT`);
  }

  filterRules.push(
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark ${mark}/${mark} -j ACCEPT`,
  );
  filterRules.push(
    `-A ${KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
  );
  filterRules.push(
    `-A ${KUBE_NODE_PORT} -m comment --comment ${comment('KUBE-HEALTH-CHECK-NODE-PORT')} -m set --match-set ${named('KUBE-HEALTH-CHECK-NODE-PORT')} dst -j ACCEPT`,
  );

  natRules.push(`-A ${KUBE_POSTROUTING} -m mark ! --mark ${mark}/${mark} -j RETURN`);
  natRules.push(`-A ${KUBE_POSTROUTING} -j MARK --xor-mark ${mark}`);
  natRules.push(
    `-A ${KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE${opts.randomFully ? ' --random-fully' : ''}`,
  );
  natRules.push(`-A ${KUBE_MARK_MASQ} -j MARK --or-mark ${mark}`);

  return [...natChains, ...natRules, 'COMMIT', ...filterChains, ...filterRules, 'COMMIT', ''].join('\n');
}
