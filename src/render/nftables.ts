/*
 * kube-proxy's nftables mode, rendered as one `nft -f` transaction for `table ip kube-proxy`
 * following pkg/proxy/nftables/proxier.go (setupNFTables + syncProxyRules, as of Kubernetes
 * v1.34: base chains filter-prerouting-pre-dnat / filter-output-pre-dnat at -110, filter
 * chains at 0).
 *
 * kube-proxy keeps the table and patches it; we always write the whole table. The text begins
 * with `add table` + `delete table` (the add makes the delete valid when the table does not
 * exist yet) and then re-adds everything, so one `nft -f` atomically replaces the table.
 */
import type { DesiredState, Endpoint } from '../model/types.js';
import { nftEndpointChainNameBase, nftServicePortChainNameBase } from './hash.js';
import { isLoopback } from '../model/ipv4.js';
import { resolveOptions, type RenderOptions, type ResolvedOptions } from './options.js';
import { endpointString, policyRouting, servicePortFacts, sourceRangesAllowNode, type ServicePortFacts } from './service-port.js';

export const NFT_TABLE = 'kube-proxy';
const FAMILY = 'ip';
const T = `${FAMILY} ${NFT_TABLE}`;

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

class Transaction {
  readonly lines: string[] = [];
  line(text: string): void {
    this.lines.push(text);
  }
  chain(name: string, comment?: string): void {
    this.line(`add chain ${T} ${name}${comment === undefined ? '' : ` { comment ${q(comment)} ; }`}`);
  }
  rule(chain: string, rule: string, comment?: string): void {
    this.line(`add rule ${T} ${chain} ${rule}${comment === undefined ? '' : ` comment ${q(comment)}`}`);
  }
  element(container: string, key: string, value?: string, comment?: string): void {
    const c = comment === undefined ? '' : ` comment ${q(comment)}`;
    this.line(`add element ${T} ${container} { ${key}${c}${value === undefined ? '' : ` : ${value}`} }`);
  }
}

const q = (text: string): string => `"${text}"`;

export function renderNftables(state: DesiredState, options: RenderOptions): string {
  const opts = resolveOptions(options);
  const tx = new Transaction();
  tx.line(`add table ${T}`);
  tx.line(`delete table ${T}`);
  setupTable(tx, opts);
  for (const entry of state.services) {
    const facts = servicePortFacts(entry);
    tx.line('');
    tx.line(`# ${facts.name}`);
    writeServicePort(tx, facts, opts);
  }
  return `${tx.lines.join('\n')}\n`;
}

function setupTable(tx: Transaction, opts: ResolvedOptions): void {
  const mark = opts.masqueradeMark;
  const noLocalhost = 'ip daddr != 127.0.0.0/8';
  tx.line(`add table ${T} { comment ${q('rules for kube-proxy')} ; }`);

  for (const bc of BASE_CHAINS) {
    tx.line(`add chain ${T} ${bc.name} { type ${bc.type} hook ${bc.hook} priority ${bc.priority} ; }`);
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

  tx.line(`add set ${T} ${CLUSTER_IPS} { type ipv4_addr ; comment ${q('Active ClusterIPs')} ; }`);
  tx.rule(CLUSTER_IPS_CHECK, `ip daddr @${CLUSTER_IPS} reject`, 'Reject traffic to invalid ports of ClusterIPs');
  if (opts.serviceCIDRs.length > 0) {
    tx.rule(CLUSTER_IPS_CHECK, `ip daddr { ${opts.serviceCIDRs.join(',')} } drop`, 'Drop traffic to unallocated ClusterIPs');
  }

  if (!opts.nodePortAddressesMatchAll) {
    tx.line(`add set ${T} ${NODEPORT_IPS} { type ipv4_addr ; comment ${q('IPs that accept NodePort traffic')} ; }`);
    // Localhost NodePorts are not supported in nftables mode.
    for (const ip of opts.nodePortIPs) if (!isLoopback(ip)) tx.element(NODEPORT_IPS, ip);
  }

  tx.line(
    `add map ${T} ${NO_ENDPOINT_SERVICES} { type ipv4_addr . inet_proto . inet_service : verdict ; comment ${q('vmap to drop or reject packets to services with no endpoints')} ; }`,
  );
  tx.line(
    `add map ${T} ${NO_ENDPOINT_NODEPORTS} { type inet_proto . inet_service : verdict ; comment ${q('vmap to drop or reject packets to service nodeports with no endpoints')} ; }`,
  );
  tx.chain(REJECT_CHAIN, 'helper for @no-endpoint-services / @no-endpoint-nodeports');
  tx.rule(REJECT_CHAIN, 'reject');
  tx.rule(SERVICE_ENDPOINTS_CHECK, `ip daddr . meta l4proto . th dport vmap @${NO_ENDPOINT_SERVICES}`);
  tx.rule(
    NODEPORT_ENDPOINTS_CHECK,
    opts.nodePortAddressesMatchAll
      ? `${noLocalhost} meta l4proto . th dport vmap @${NO_ENDPOINT_NODEPORTS}`
      : `ip daddr @${NODEPORT_IPS} meta l4proto . th dport vmap @${NO_ENDPOINT_NODEPORTS}`,
  );

  tx.line(
    `add map ${T} ${FIREWALL_IPS} { type ipv4_addr . inet_proto . inet_service : verdict ; comment ${q('destinations that are subject to LoadBalancerSourceRanges')} ; }`,
  );
  ensureChain(FIREWALL_CHECK);
  tx.rule(FIREWALL_CHECK, `ip daddr . meta l4proto . th dport vmap @${FIREWALL_IPS}`);

  tx.line(
    `add map ${T} ${SERVICE_IPS} { type ipv4_addr . inet_proto . inet_service : verdict ; comment ${q('ClusterIP, ExternalIP and LoadBalancer IP traffic')} ; }`,
  );
  tx.line(`add map ${T} ${SERVICE_NODEPORTS} { type inet_proto . inet_service : verdict ; comment ${q('NodePort traffic')} ; }`);
  tx.rule(SERVICES, `ip daddr . meta l4proto . th dport vmap @${SERVICE_IPS}`);
  tx.rule(
    SERVICES,
    opts.nodePortAddressesMatchAll
      ? `fib daddr type local ${noLocalhost} meta l4proto . th dport vmap @${SERVICE_NODEPORTS}`
      : `ip daddr @${NODEPORT_IPS} meta l4proto . th dport vmap @${SERVICE_NODEPORTS}`,
  );
}

function writeServicePort(tx: Transaction, facts: ServicePortFacts, opts: ResolvedOptions): void {
  const { entry, name, protocol } = facts;
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
  for (const ep of allReachableEndpoints) tx.chain(epChain(ep));
  if (usesClusterPolicyChain) tx.chain(clusterPolicyChain);
  if (usesLocalPolicyChain) tx.chain(localPolicyChain);
  if (usesExternalTrafficChain) tx.chain(externalTrafficChain);
  if (usesFWChain) tx.chain(fwChain);

  // Dispatch elements.
  tx.element(CLUSTER_IPS, svc.clusterIP);
  if (hasInternalEndpoints) {
    tx.element(SERVICE_IPS, `${svc.clusterIP} . ${protocol} . ${port}`, `goto ${internalTrafficChain}`);
  } else {
    tx.element(NO_ENDPOINT_SERVICES, `${svc.clusterIP} . ${protocol} . ${port}`, internalVerdict, name);
  }
  for (const ip of svc.externalIPs) {
    if (hasEndpoints) tx.element(SERVICE_IPS, `${ip} . ${protocol} . ${port}`, `goto ${externalTrafficChain}`);
    if (!hasExternalEndpoints) tx.element(NO_ENDPOINT_SERVICES, `${ip} . ${protocol} . ${port}`, externalVerdict, name);
  }
  for (const lbip of svc.loadBalancerIPs) {
    if (hasEndpoints) tx.element(SERVICE_IPS, `${lbip} . ${protocol} . ${port}`, `goto ${externalTrafficChain}`);
    if (usesFWChain) tx.element(FIREWALL_IPS, `${lbip} . ${protocol} . ${port}`, `goto ${fwChain}`);
  }
  if (!hasExternalEndpoints) {
    for (const lbip of svc.loadBalancerIPs) {
      tx.element(NO_ENDPOINT_SERVICES, `${lbip} . ${protocol} . ${port}`, externalVerdict, name);
    }
  }
  if (svc.nodePort !== 0) {
    if (hasEndpoints) tx.element(SERVICE_NODEPORTS, `${protocol} . ${svc.nodePort}`, `goto ${externalTrafficChain}`);
    if (!hasExternalEndpoints) tx.element(NO_ENDPOINT_NODEPORTS, `${protocol} . ${svc.nodePort}`, externalVerdict, name);
  }

  // Affinity sets: one per endpoint, remembering client IPs for the affinity timeout.
  if (facts.affinity) {
    for (const ep of allReachableEndpoints) {
      tx.line(
        `add set ${T} ${affinitySet(ep)} { type ipv4_addr ; flags dynamic,timeout ; timeout ${svc.affinityTimeoutSeconds}s ; }`,
      );
    }
  }

  const writeServiceToEndpointRules = (chain: string, endpoints: Endpoint[]): void => {
    if (facts.affinity) {
      for (const ep of endpoints) tx.rule(chain, `ip saddr @${affinitySet(ep)} goto ${epChain(ep)}`);
    }
    const elements = endpoints.map((ep, i) => `${i} : goto ${epChain(ep)}`).join(' , ');
    tx.rule(chain, `numgen random mod ${endpoints.length} vmap { ${elements} }`);
  };

  if (hasInternalEndpoints) {
    if (opts.masqueradeAll) {
      tx.rule(internalTrafficChain, `ip daddr ${svc.clusterIP} jump ${MARK_MASQ}`);
    } else if (opts.clusterCIDR !== null) {
      // Off-cluster clients may be routed here and bounce off-node: masquerade them.
      tx.rule(internalTrafficChain, `ip daddr ${svc.clusterIP} ip saddr != ${opts.clusterCIDR} jump ${MARK_MASQ}`);
    }
  }
  if (usesClusterPolicyChain) writeServiceToEndpointRules(clusterPolicyChain, clusterEndpoints);
  if (usesLocalPolicyChain) writeServiceToEndpointRules(localPolicyChain, localEndpoints);

  if (usesExternalTrafficChain) {
    if (!facts.externalPolicyLocal) {
      tx.rule(externalTrafficChain, `jump ${MARK_MASQ}`);
    } else {
      if (opts.clusterCIDR !== null) {
        tx.rule(externalTrafficChain, `ip saddr ${opts.clusterCIDR} goto ${clusterPolicyChain}`, 'short-circuit pod traffic');
      }
      tx.rule(externalTrafficChain, `fib saddr type local jump ${MARK_MASQ}`, 'masquerade local traffic');
      tx.rule(externalTrafficChain, `fib saddr type local goto ${clusterPolicyChain}`, 'short-circuit local traffic');
    }
    if (hasExternalEndpoints) tx.rule(externalTrafficChain, `goto ${externalPolicyChain}`);
  }

  for (const ep of allReachableEndpoints) {
    const chain = epChain(ep);
    tx.rule(chain, `ip saddr ${ep.ip} jump ${MARK_MASQ}`);
    if (facts.affinity) tx.rule(chain, `update @${affinitySet(ep)} { ip saddr }`);
    tx.rule(chain, `meta l4proto ${protocol} dnat to ${endpointString(ep)}`);
  }

  if (usesFWChain) {
    const sources = [...facts.sourceRanges];
    if (sourceRangesAllowNode(facts, opts.primaryNodeIP)) sources.push(...svc.loadBalancerIPs);
    tx.rule(fwChain, `ip saddr != { ${sources.join(' , ')} } drop`);
  }
}
