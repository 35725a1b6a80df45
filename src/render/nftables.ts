/*
 * kube-proxy's nftables mode for `table ip kube-proxy` and `table ip6 kube-proxy`, following
 * pkg/proxy/nftables/proxier.go (setupNFTables + syncProxyRules, as of Kubernetes v1.34: base
 * chains filter-prerouting-pre-dnat / filter-output-pre-dnat at -110, filter chains at 0).
 *
 * One family per table, as kube-proxy runs one proxier per family. The IPv6 proxier's table
 * differs only where kube-proxy's does: `ip6` matches and `ipv6_addr` sets, endpoints as
 * `[ip]:port` in `dnat to`, and `ip6 daddr != ::1` where IPv4 excludes 127.0.0.0/8 (no
 * localhost NodePorts in nftables mode, in either family).
 *
 * One model, two printers. buildNftTable turns the desired state into commands: the fixed setup
 * part and, per ServicePort, its chains, dispatch elements, affinity sets and rules. Printed by
 * printNftReplace it is one transaction that replaces the whole table (`vipr render`, the golden
 * tests: it begins with `add table` + `delete table`, the add making the delete valid when the
 * table does not exist yet). The agent's dataplane prints the same commands incrementally
 * (nftables-transaction.ts): only changed ServicePorts' chains, elements by difference.
 */
import type { DesiredState, Endpoint, ServiceEntry } from '../model/types.js';
import type { IpFamily } from '../model/ip.js';
import { nftEndpointChainNameBase, nftServicePortChainNameBase } from './hash.js';
import { isLoopbackIp, resolveOptions, type RenderOptions, type ResolvedOptions } from './options.js';
import { endpointString, policyRouting, servicePortFacts, sourceRangesAllowNode } from './service-port.js';

export const NFT_TABLE = 'kube-proxy';

/** The nftables family of a table: `ip` for IPv4, `ip6` for IPv6. */
export type NftFamily = 'ip' | 'ip6';

export function nftFamilyOf(family: IpFamily): NftFamily {
  return family === 'IPv6' ? 'ip6' : 'ip';
}

/** `ip kube-proxy` / `ip6 kube-proxy`, as commands name the table. */
export function nftTableRef(family: NftFamily): string {
  return `${family} ${NFT_TABLE}`;
}

/** The words that differ between kube-proxy's IPv4 and IPv6 tables (its ipX / ipvX_addr / noLocalhost). */
interface FamilyWords {
  ip: NftFamily;
  addrType: 'ipv4_addr' | 'ipv6_addr';
  noLocalhost: string;
}

function familyWords(family: IpFamily): FamilyWords {
  return family === 'IPv6'
    ? { ip: 'ip6', addrType: 'ipv6_addr', noLocalhost: 'ip6 daddr != ::1' }
    : { ip: 'ip', addrType: 'ipv4_addr', noLocalhost: 'ip daddr != 127.0.0.0/8' };
}

const SERVICES = 'services';
const SERVICE_IPS = 'service-ips';
const SERVICE_NODEPORTS = 'service-nodeports';
const NODEPORT_IPS = 'nodeport-ips';
const CLUSTER_IPS = 'cluster-ips';
const SERVICE_ENDPOINTS_CHECK = 'service-endpoints-check';
const NODEPORT_ENDPOINTS_CHECK = 'nodeport-endpoints-check';
const NO_ENDPOINT_SERVICES = 'no-endpoint-services';
const NO_ENDPOINT_NODEPORTS = 'no-endpoint-nodeports';
const REJECT_CHAIN = 'reject-chain';
const CLUSTER_IPS_CHECK = 'cluster-ips-check';
const FIREWALL_IPS = 'firewall-ips';
const FIREWALL_CHECK = 'firewall-check';
const MARK_MASQ = 'mark-for-masquerade';
const MASQUERADING = 'masquerading';

interface BaseChain {
  name: string;
  type: 'filter' | 'nat';
  hook: string;
  priority: number;
}

/** nftablesBaseChains: filtering sees pre-DNAT destinations, hence -110 (DNAT is -100). */
const BASE_CHAINS: BaseChain[] = [
  { name: 'filter-prerouting-pre-dnat', type: 'filter', hook: 'prerouting', priority: -110 },
  { name: 'filter-output-pre-dnat', type: 'filter', hook: 'output', priority: -110 },
  { name: 'filter-input', type: 'filter', hook: 'input', priority: 0 },
  { name: 'filter-forward', type: 'filter', hook: 'forward', priority: 0 },
  { name: 'filter-output', type: 'filter', hook: 'output', priority: 0 },
  { name: 'nat-prerouting', type: 'nat', hook: 'prerouting', priority: -100 },
  { name: 'nat-output', type: 'nat', hook: 'output', priority: -100 },
  { name: 'nat-postrouting', type: 'nat', hook: 'postrouting', priority: 100 },
];

/** nftablesJumpChains: [destination, source base chain, match]. */
const JUMP_CHAINS: Array<[string, string, string]> = [
  [NODEPORT_ENDPOINTS_CHECK, 'filter-input', 'ct state new'],
  [SERVICE_ENDPOINTS_CHECK, 'filter-input', 'ct state new'],
  [SERVICE_ENDPOINTS_CHECK, 'filter-forward', 'ct state new'],
  [SERVICE_ENDPOINTS_CHECK, 'filter-output', 'ct state new'],
  [FIREWALL_CHECK, 'filter-prerouting-pre-dnat', 'ct state new'],
  [FIREWALL_CHECK, 'filter-output-pre-dnat', 'ct state new'],
  [SERVICES, 'nat-output', ''],
  [SERVICES, 'nat-prerouting', ''],
  [MASQUERADING, 'nat-postrouting', ''],
  [CLUSTER_IPS_CHECK, 'filter-forward', 'ct state new'],
  [CLUSTER_IPS_CHECK, 'filter-output', 'ct state new'],
];

/** A base chain's hook, as `add chain` declares it. */
export interface NftHook {
  type: 'filter' | 'nat';
  hook: string;
  priority: number;
}

/**
 * One command of the model. Printed, each is one `add` line of an `nft -f` transaction; the
 * incremental printer (nftables-transaction.ts) adds the flushes and deletes around them.
 */
export type NftCommand =
  | { kind: 'table'; comment: string }
  | { kind: 'chain'; name: string; comment?: string; hook?: NftHook }
  | { kind: 'rule'; chain: string; rule: string; comment?: string }
  | { kind: 'set'; name: string; map: boolean; spec: string }
  | { kind: 'element'; container: string; key: string; value?: string; comment?: string };

export type NftElement = Extract<NftCommand, { kind: 'element' }>;
export type NftSetDeclaration = Extract<NftCommand, { kind: 'set' }>;
export type NftRule = Extract<NftCommand, { kind: 'rule' }>;

/** Everything one ServicePort puts in the table: its chains, affinity sets, rules, and elements. */
export interface NftServicePort {
  /** ServicePortName.String(). */
  key: string;
  /** The ServiceEntry's key (the family's: `ns/name:port IPv6` for IPv6). */
  entryKey: string;
  /** `namespace/name`: what the change trackers name. */
  serviceName: string;
  /** Chains declared, endpoint chains first (nft resolves jump targets as it reads). */
  chains: string[];
  /** Elements of the shared dispatch sets and maps (cluster-ips, service-ips, ...). */
  elements: NftElement[];
  /** Per-endpoint affinity sets (ClientIP affinity only). */
  sets: NftSetDeclaration[];
  /** Rules of the chains above, in order. */
  rules: NftRule[];
}

/** The whole `table ip|ip6 kube-proxy`: the fixed part (setupNFTables) and one part per ServicePort. */
export interface NftTable {
  family: NftFamily;
  setup: NftCommand[];
  servicePorts: NftServicePort[];
}

/** The sets and maps every ServicePort adds elements to: kube-proxy rebuilds them on a full sync. */
export const NFT_SERVICE_CONTAINERS: ReadonlyArray<{ name: string; map: boolean }> = [
  { name: CLUSTER_IPS, map: false },
  { name: SERVICE_IPS, map: true },
  { name: SERVICE_NODEPORTS, map: true },
  { name: NO_ENDPOINT_SERVICES, map: true },
  { name: NO_ENDPOINT_NODEPORTS, map: true },
  { name: FIREWALL_IPS, map: true },
];

/** The set of node addresses NodePorts listen on, written by the setup part. */
export const NFT_NODEPORT_IPS = NODEPORT_IPS;

/** Collects commands in the order they are declared. */
class Commands {
  readonly list: NftCommand[] = [];
  chain(name: string, comment?: string): void {
    this.list.push(comment === undefined ? { kind: 'chain', name } : { kind: 'chain', name, comment });
  }
  rule(chain: string, rule: string, comment?: string): void {
    this.list.push(comment === undefined ? { kind: 'rule', chain, rule } : { kind: 'rule', chain, rule, comment });
  }
  set(name: string, spec: string, map = false): void {
    this.list.push({ kind: 'set', name, map, spec });
  }
  element(container: string, key: string, value?: string, comment?: string): void {
    const e: NftElement = { kind: 'element', container, key };
    if (value !== undefined) e.value = value;
    if (comment !== undefined) e.comment = comment;
    this.list.push(e);
  }
}

const q = (text: string): string => `"${text}"`;

/** The `nft -f` line adding what `cmd` describes to the table of `family`. */
export function nftAddLine(cmd: NftCommand, family: NftFamily = 'ip'): string {
  const T = nftTableRef(family);
  switch (cmd.kind) {
    case 'table':
      return `add table ${T} { comment ${q(cmd.comment)} ; }`;
    case 'chain':
      if (cmd.hook !== undefined) {
        return `add chain ${T} ${cmd.name} { type ${cmd.hook.type} hook ${cmd.hook.hook} priority ${cmd.hook.priority} ; }`;
      }
      return `add chain ${T} ${cmd.name}${cmd.comment === undefined ? '' : ` { comment ${q(cmd.comment)} ; }`}`;
    case 'rule':
      return `add rule ${T} ${cmd.chain} ${cmd.rule}${cmd.comment === undefined ? '' : ` comment ${q(cmd.comment)}`}`;
    case 'set':
      return `add ${cmd.map ? 'map' : 'set'} ${T} ${cmd.name} { ${cmd.spec} }`;
    case 'element': {
      const c = cmd.comment === undefined ? '' : ` comment ${q(cmd.comment)}`;
      return `add element ${T} ${cmd.container} { ${cmd.key}${c}${cmd.value === undefined ? '' : ` : ${cmd.value}`} }`;
    }
  }
}

/** The ServicePort's commands in the order the full text declares them. */
export function servicePortCommands(sp: NftServicePort): NftCommand[] {
  return [...sp.chains.map((name): NftCommand => ({ kind: 'chain', name })), ...sp.elements, ...sp.sets, ...sp.rules];
}

/** The model of `family`'s whole table for `state` (that family's ServicePorts). */
export function buildNftTable(state: DesiredState, options: RenderOptions, family: IpFamily = 'IPv4'): NftTable {
  const opts = resolveOptions(options, family);
  const servicePorts: NftServicePort[] = [];
  for (const e of state.services) if (e.service.family === family) servicePorts.push(nftServicePort(e, opts));
  return { family: nftFamilyOf(family), setup: nftSetup(opts), servicePorts };
}

/**
 * The whole table as one transaction that replaces it: `add table` + `delete table` (the add
 * makes the delete valid when the table does not exist yet), then everything re-added. This is
 * what `vipr render` prints and the golden tests compare with kube-proxy's outputs.
 */
export function printNftReplace(table: NftTable): string {
  const T = nftTableRef(table.family);
  const lines = [`add table ${T}`, `delete table ${T}`, ...table.setup.map((cmd) => nftAddLine(cmd, table.family))];
  for (const sp of table.servicePorts) {
    lines.push('', `# ${sp.key}`);
    for (const cmd of servicePortCommands(sp)) lines.push(nftAddLine(cmd, table.family));
  }
  return `${lines.join('\n')}\n`;
}

export function renderNftables(state: DesiredState, options: RenderOptions, family: IpFamily = 'IPv4'): string {
  return printNftReplace(buildNftTable(state, options, family));
}

/** kube-proxy's setupNFTables: the base chains, the jumps into ours, the dispatch sets and maps. */
export function nftSetup(opts: ResolvedOptions): NftCommand[] {
  const tx = new Commands();
  const mark = opts.masqueradeMark;
  const { ip, addrType, noLocalhost } = familyWords(opts.family);
  tx.list.push({ kind: 'table', comment: 'rules for kube-proxy' });

  for (const bc of BASE_CHAINS) {
    tx.list.push({ kind: 'chain', name: bc.name, hook: { type: bc.type, hook: bc.hook, priority: bc.priority } });
  }
  const created = new Set<string>();
  const ensureChain = (name: string): void => {
    if (created.has(name)) return;
    created.add(name);
    tx.chain(name);
  };
  for (const [dst, src, match] of JUMP_CHAINS) {
    ensureChain(dst);
    tx.rule(src, `${match === '' ? '' : `${match} `}jump ${dst}`);
  }
  for (const name of [SERVICES, CLUSTER_IPS_CHECK, MASQUERADING, MARK_MASQ]) ensureChain(name);

  tx.rule(MARK_MASQ, `mark set mark or ${mark}`);
  tx.rule(MASQUERADING, `mark and ${mark} == 0 return`);
  tx.rule(MASQUERADING, `mark set mark xor ${mark}`);
  tx.rule(MASQUERADING, 'masquerade fully-random');

  tx.set(CLUSTER_IPS, `type ${addrType} ; comment ${q('Active ClusterIPs')} ;`);
  tx.rule(CLUSTER_IPS_CHECK, `${ip} daddr @${CLUSTER_IPS} reject`, 'Reject traffic to invalid ports of ClusterIPs');
  if (opts.serviceCIDRs.length > 0) {
    tx.rule(CLUSTER_IPS_CHECK, `${ip} daddr { ${opts.serviceCIDRs.join(',')} } drop`, 'Drop traffic to unallocated ClusterIPs');
  }

  if (!opts.nodePortAddressesMatchAll) {
    tx.set(NODEPORT_IPS, `type ${addrType} ; comment ${q('IPs that accept NodePort traffic')} ;`);
    // Localhost NodePorts are not supported in nftables mode.
    for (const nodeIP of opts.nodePortIPs) if (!isLoopbackIp(nodeIP)) tx.element(NODEPORT_IPS, nodeIP);
  }

  tx.set(NO_ENDPOINT_SERVICES, `type ${addrType} . inet_proto . inet_service : verdict ; comment ${q('vmap to drop or reject packets to services with no endpoints')} ;`, true);
  tx.set(NO_ENDPOINT_NODEPORTS, `type inet_proto . inet_service : verdict ; comment ${q('vmap to drop or reject packets to service nodeports with no endpoints')} ;`, true);
  tx.chain(REJECT_CHAIN, 'helper for @no-endpoint-services / @no-endpoint-nodeports');
  tx.rule(REJECT_CHAIN, 'reject');
  tx.rule(SERVICE_ENDPOINTS_CHECK, `${ip} daddr . meta l4proto . th dport vmap @${NO_ENDPOINT_SERVICES}`);
  tx.rule(
    NODEPORT_ENDPOINTS_CHECK,
    opts.nodePortAddressesMatchAll
      ? `${noLocalhost} meta l4proto . th dport vmap @${NO_ENDPOINT_NODEPORTS}`
      : `${ip} daddr @${NODEPORT_IPS} meta l4proto . th dport vmap @${NO_ENDPOINT_NODEPORTS}`,
  );

  tx.set(FIREWALL_IPS, `type ${addrType} . inet_proto . inet_service : verdict ; comment ${q('destinations that are subject to LoadBalancerSourceRanges')} ;`, true);
  ensureChain(FIREWALL_CHECK);
  tx.rule(FIREWALL_CHECK, `${ip} daddr . meta l4proto . th dport vmap @${FIREWALL_IPS}`);

  tx.set(SERVICE_IPS, `type ${addrType} . inet_proto . inet_service : verdict ; comment ${q('ClusterIP, ExternalIP and LoadBalancer IP traffic')} ;`, true);
  tx.set(SERVICE_NODEPORTS, `type inet_proto . inet_service : verdict ; comment ${q('NodePort traffic')} ;`, true);
  tx.rule(SERVICES, `${ip} daddr . meta l4proto . th dport vmap @${SERVICE_IPS}`);
  tx.rule(
    SERVICES,
    opts.nodePortAddressesMatchAll
      ? `fib daddr type local ${noLocalhost} meta l4proto . th dport vmap @${SERVICE_NODEPORTS}`
      : `${ip} daddr @${NODEPORT_IPS} meta l4proto . th dport vmap @${SERVICE_NODEPORTS}`,
  );
  return tx.list;
}

/** One ServicePort's part of the table (the per-service loop of kube-proxy's syncProxyRules). */
export function nftServicePort(entry: ServiceEntry, opts: ResolvedOptions): NftServicePort {
  const facts = servicePortFacts(entry);
  const { name, protocol } = facts;
  const { ip, addrType } = familyWords(opts.family);
  const chains: string[] = [];
  const dispatch = new Commands();
  const affinitySets = new Commands();
  const tx = new Commands();
  const svc = entry.service;
  const { clusterEndpoints, localEndpoints, allReachableEndpoints, hasAnyEndpoints: hasEndpoints } = entry.selection;
  const base = nftServicePortChainNameBase(svc.id, protocol);
  const clusterPolicyChain = `service-${base}`;
  const localPolicyChain = `local-${base}`;
  const externalTrafficChain = `external-${base}`;
  const fwChain = `firewall-${base}`;
  const epBase = (ep: Endpoint): string => nftEndpointChainNameBase(svc.id, protocol, ep.ip, ep.port);
  const epChain = (ep: Endpoint): string => `endpoint-${epBase(ep)}`;
  const affinitySet = (ep: Endpoint): string => `affinity-${epBase(ep)}`;

  const {
    usesClusterPolicyChain, usesLocalPolicyChain, internalTrafficChain, hasInternalEndpoints,
    externalPolicyChain, hasExternalEndpoints, usesExternalTrafficChain,
  } = policyRouting(facts, clusterPolicyChain, localPolicyChain);
  const usesFWChain = svc.loadBalancerIPs.length > 0 && facts.sourceRanges.length > 0;

  let internalVerdict = '';
  let externalVerdict = '';
  if (!hasEndpoints) {
    internalVerdict = externalVerdict = `goto ${REJECT_CHAIN}`;
  } else {
    if (!hasInternalEndpoints) internalVerdict = 'drop';
    if (!hasExternalEndpoints) externalVerdict = 'drop';
  }
  const port = svc.port;

  // Chains first: nft resolves jump/goto targets and map verdicts as it reads.
  for (const ep of allReachableEndpoints) chains.push(epChain(ep));
  if (usesClusterPolicyChain) chains.push(clusterPolicyChain);
  if (usesLocalPolicyChain) chains.push(localPolicyChain);
  if (usesExternalTrafficChain) chains.push(externalTrafficChain);
  if (usesFWChain) chains.push(fwChain);

  // Dispatch elements.
  dispatch.element(CLUSTER_IPS, svc.clusterIP);
  if (hasInternalEndpoints) {
    dispatch.element(SERVICE_IPS, `${svc.clusterIP} . ${protocol} . ${port}`, `goto ${internalTrafficChain}`);
  } else {
    dispatch.element(NO_ENDPOINT_SERVICES, `${svc.clusterIP} . ${protocol} . ${port}`, internalVerdict, name);
  }
  for (const ip of svc.externalIPs) {
    if (hasEndpoints) dispatch.element(SERVICE_IPS, `${ip} . ${protocol} . ${port}`, `goto ${externalTrafficChain}`);
    if (!hasExternalEndpoints) dispatch.element(NO_ENDPOINT_SERVICES, `${ip} . ${protocol} . ${port}`, externalVerdict, name);
  }
  for (const lbip of svc.loadBalancerIPs) {
    if (hasEndpoints) dispatch.element(SERVICE_IPS, `${lbip} . ${protocol} . ${port}`, `goto ${externalTrafficChain}`);
    if (usesFWChain) dispatch.element(FIREWALL_IPS, `${lbip} . ${protocol} . ${port}`, `goto ${fwChain}`);
  }
  if (!hasExternalEndpoints) {
    for (const lbip of svc.loadBalancerIPs) {
      dispatch.element(NO_ENDPOINT_SERVICES, `${lbip} . ${protocol} . ${port}`, externalVerdict, name);
    }
  }
  if (svc.nodePort !== 0) {
    if (hasEndpoints) dispatch.element(SERVICE_NODEPORTS, `${protocol} . ${svc.nodePort}`, `goto ${externalTrafficChain}`);
    if (!hasExternalEndpoints) dispatch.element(NO_ENDPOINT_NODEPORTS, `${protocol} . ${svc.nodePort}`, externalVerdict, name);
  }

  // Affinity sets: one per endpoint, remembering client IPs for the affinity timeout.
  if (facts.affinity) {
    for (const ep of allReachableEndpoints) {
      affinitySets.set(affinitySet(ep), `type ${addrType} ; flags dynamic,timeout ; timeout ${svc.affinityTimeoutSeconds}s ;`);
    }
  }

  const writeServiceToEndpointRules = (chain: string, endpoints: Endpoint[]): void => {
    if (facts.affinity) {
      for (const ep of endpoints) tx.rule(chain, `${ip} saddr @${affinitySet(ep)} goto ${epChain(ep)}`);
    }
    const elements = endpoints.map((ep, i) => `${i} : goto ${epChain(ep)}`).join(' , ');
    tx.rule(chain, `numgen random mod ${endpoints.length} vmap { ${elements} }`);
  };

  if (hasInternalEndpoints) {
    if (opts.masqueradeAll) {
      tx.rule(internalTrafficChain, `${ip} daddr ${svc.clusterIP} jump ${MARK_MASQ}`);
    } else if (opts.clusterCIDR !== null) {
      // Off-cluster clients may be routed here and bounce off-node: masquerade them.
      tx.rule(internalTrafficChain, `${ip} daddr ${svc.clusterIP} ${ip} saddr != ${opts.clusterCIDR} jump ${MARK_MASQ}`);
    }
  }
  if (usesClusterPolicyChain) writeServiceToEndpointRules(clusterPolicyChain, clusterEndpoints);
  if (usesLocalPolicyChain) writeServiceToEndpointRules(localPolicyChain, localEndpoints);

  if (usesExternalTrafficChain) {
    if (!facts.externalPolicyLocal) {
      tx.rule(externalTrafficChain, `jump ${MARK_MASQ}`);
    } else {
      if (opts.clusterCIDR !== null) {
        tx.rule(externalTrafficChain, `${ip} saddr ${opts.clusterCIDR} goto ${clusterPolicyChain}`, 'short-circuit pod traffic');
      }
      tx.rule(externalTrafficChain, `fib saddr type local jump ${MARK_MASQ}`, 'masquerade local traffic');
      tx.rule(externalTrafficChain, `fib saddr type local goto ${clusterPolicyChain}`, 'short-circuit local traffic');
    }
    if (hasExternalEndpoints) tx.rule(externalTrafficChain, `goto ${externalPolicyChain}`);
  }

  for (const ep of allReachableEndpoints) {
    const chain = epChain(ep);
    tx.rule(chain, `${ip} saddr ${ep.ip} jump ${MARK_MASQ}`);
    if (facts.affinity) tx.rule(chain, `update @${affinitySet(ep)} { ${ip} saddr }`);
    tx.rule(chain, `meta l4proto ${protocol} dnat to ${endpointString(ep)}`);
  }

  if (usesFWChain) {
    const sources = [...facts.sourceRanges];
    if (sourceRangesAllowNode(facts, opts.primaryNodeIP)) sources.push(...svc.loadBalancerIPs);
    tx.rule(fwChain, `${ip} saddr != { ${sources.join(' , ')} } drop`);
  }
  return {
    key: name,
    entryKey: entry.key,
    serviceName: facts.serviceName,
    chains,
    elements: dispatch.list as NftElement[],
    sets: affinitySets.list as NftSetDeclaration[],
    rules: tx.list as NftRule[],
  };
}
