/*
 * kube-proxy's iptables mode, rendered as the `iptables-restore --noflush` input that
 * pkg/proxy/iptables/proxier.go syncProxyRules writes (followed as of Kubernetes v1.33).
 *
 * One family per rendering, as kube-proxy runs one proxier per family: IPv4 is the
 * iptables-restore input, IPv6 the ip6tables-restore input, with the same chain names (hashed
 * from the ServicePortName alone). What differs for IPv6 is what kube-proxy's IPv6 proxier
 * does: endpoints are `[ip]:port` (net.JoinHostPort) in chain hashes, comments and DNAT; no
 * localhost NodePorts (no route_localnet for IPv6), so no KUBE-FIREWALL localnet rule and the
 * NodePort tail call excludes `::1/128`; REJECT's default reply is ip6tables' own
 * (icmp6-port-unreachable), so the rule text is the same.
 *
 * Output order is kube-proxy's write order with services taken in DesiredState order (kube-proxy
 * walks a Go map, so its own order is random; tests canonicalise before comparing). The jump
 * rules from the built-in chains are not part of the restore input: kube-proxy applies them with
 * `iptables -C` / `-I` (iptablesJumpRules()).
 */
import type { DesiredState, Endpoint } from '../model/types.js';
import type { IpFamily } from '../model/ip.js';
import {
  isIptablesServiceChainName,
  servicePortChainName,
  servicePortEndpointChainName,
  serviceExternalChainName,
  serviceFirewallChainName,
  servicePortLocalChainName,
} from './hash.js';
import { isLoopbackIp, resolveOptions, type RenderOptions, type ResolvedOptions } from './options.js';
import { endpointString, isChanged, policyRouting, servicePortFacts, sourceRangesAllowNode, type ServicePortFacts } from './service-port.js';

export const KUBE_SERVICES = 'KUBE-SERVICES';
export const KUBE_EXTERNAL_SERVICES = 'KUBE-EXTERNAL-SERVICES';
export const KUBE_NODEPORTS = 'KUBE-NODEPORTS';
export const KUBE_POSTROUTING = 'KUBE-POSTROUTING';
export const KUBE_MARK_MASQ = 'KUBE-MARK-MASQ';
export const KUBE_FORWARD = 'KUBE-FORWARD';
export const KUBE_PROXY_FIREWALL = 'KUBE-PROXY-FIREWALL';
/** kubelet's firewall chain, which kube-proxy duplicates (anti-martian rule for localhost NodePorts). */
export const KUBE_FIREWALL = 'KUBE-FIREWALL';

/** Above this many endpoints kube-proxy drops per-endpoint comments ("large cluster mode"). */
export const LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000;

const NFACCT_CT_STATE_INVALID_DROPPED = 'ct_state_invalid_dropped_pkts';
const NFACCT_LOCALHOST_NODEPORT_ACCEPTED = 'localhost_nps_accepted_pkts';

export interface IptablesSyncOptions {
  /** The family rendered (its ServicePorts only): IPv4 for iptables-restore, IPv6 for ip6tables-restore. Default IPv4. */
  family?: IpFamily;
  /**
   * Partial sync, as kube-proxy does between full syncs: only the per-service chains
   * (SVC/SVL/EXT/FW/SEP) of these services are declared and rewritten; the others are left
   * untouched in the kernel (declaring a chain with `:NAME` would flush it). Entries are
   * `namespace/name` (kube-proxy's granularity) or a port key `namespace/name:port`.
   * KUBE-SERVICES, KUBE-NODEPORTS and the filter table are always rewritten in full.
   */
  onlyChanged?: ReadonlySet<string>;
  /**
   * The nat table's current chains (from `iptables-save -t nat`). Service chains among them
   * that the new state no longer uses are flushed and deleted (`:CHAIN` + `-X CHAIN`).
   */
  existingNatChains?: Iterable<string>;
}

/** A jump from a built-in chain that kube-proxy keeps in place with `iptables -C` / `-I`. */
export interface IptablesJumpRule {
  table: 'filter' | 'nat';
  /** The built-in chain holding the rule (INPUT, FORWARD, ...). */
  chain: string;
  /** The chain jumped to; create it (`-N`) before inserting the rule. */
  target: string;
  /** Rule arguments after the chain name, argv style (no shell quoting), ending in `-j target`. */
  args: string[];
}

const CT_NEW = ['-m', 'conntrack', '--ctstate', 'NEW'];

/** iptablesJumpChains + iptablesKubeletJumpChains, in kube-proxy's order. */
export function iptablesJumpRules(): IptablesJumpRule[] {
  const jumps: Array<[IptablesJumpRule['table'], string, string, string, string[]]> = [
    ['filter', KUBE_EXTERNAL_SERVICES, 'INPUT', 'kubernetes externally-visible service portals', CT_NEW],
    ['filter', KUBE_EXTERNAL_SERVICES, 'FORWARD', 'kubernetes externally-visible service portals', CT_NEW],
    ['filter', KUBE_NODEPORTS, 'INPUT', 'kubernetes health check service ports', []],
    ['filter', KUBE_SERVICES, 'FORWARD', 'kubernetes service portals', CT_NEW],
    ['filter', KUBE_SERVICES, 'OUTPUT', 'kubernetes service portals', CT_NEW],
    ['filter', KUBE_FORWARD, 'FORWARD', 'kubernetes forwarding rules', []],
    ['filter', KUBE_PROXY_FIREWALL, 'INPUT', 'kubernetes load balancer firewall', CT_NEW],
    ['filter', KUBE_PROXY_FIREWALL, 'OUTPUT', 'kubernetes load balancer firewall', CT_NEW],
    ['filter', KUBE_PROXY_FIREWALL, 'FORWARD', 'kubernetes load balancer firewall', CT_NEW],
    ['nat', KUBE_SERVICES, 'OUTPUT', 'kubernetes service portals', []],
    ['nat', KUBE_SERVICES, 'PREROUTING', 'kubernetes service portals', []],
    ['nat', KUBE_POSTROUTING, 'POSTROUTING', 'kubernetes postrouting rules', []],
    ['filter', KUBE_FIREWALL, 'INPUT', '', []],
    ['filter', KUBE_FIREWALL, 'OUTPUT', '', []],
  ];
  return jumps.map(([table, target, chain, comment, extra]) => ({
    table,
    chain,
    target,
    args: [...extra, ...(comment === '' ? [] : ['-m', 'comment', '--comment', comment]), '-j', target],
  }));
}

/** A sink for lines; a partial sync sends unchanged services' chains to a discarding one. */
interface LineBuffer {
  write(...parts: Array<string | readonly string[]>): void;
}

class Lines implements LineBuffer {
  readonly lines: string[] = [];
  write(...parts: Array<string | readonly string[]>): void {
    this.lines.push(parts.flat().join(' '));
  }
}

const DISCARD: LineBuffer = { write: () => undefined };

const chainLine = (chain: string): string => `:${chain} - [0:0]`;
const quoted = (text: string): string => `"${text}"`;

/** Go's %0.10f of 1/n, as kube-proxy's computeProbability. */
export function probability(n: number): string {
  return (1 / n).toFixed(10);
}

export function renderIptables(state: DesiredState, options: RenderOptions, sync: IptablesSyncOptions = {}): string {
  const family = sync.family ?? 'IPv4';
  const opts = resolveOptions(options, family);
  const services = state.services.filter((e) => e.service.family === family);
  const partial = sync.onlyChanged;
  const mark = opts.masqueradeMark;

  const filterChains = new Lines();
  const filterRules = new Lines();
  const natChains = new Lines();
  const natRules = new Lines();

  for (const chain of [KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL]) {
    filterChains.write(chainLine(chain));
  }
  for (const chain of [KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ]) {
    natChains.write(chainLine(chain));
  }

  natRules.write('-A', KUBE_POSTROUTING, '-m', 'mark', '!', '--mark', `${mark}/${mark}`, '-j', 'RETURN');
  // Clear the mark so a packet re-traversing the stack is not masqueraded twice.
  natRules.write('-A', KUBE_POSTROUTING, '-j', 'MARK', '--xor-mark', mark);
  natRules.write(
    '-A', KUBE_POSTROUTING, '-m', 'comment', '--comment', quoted('kubernetes service traffic requiring SNAT'),
    '-j', 'MASQUERADE', ...(opts.randomFully ? ['--random-fully'] : []),
  );
  natRules.write('-A', KUBE_MARK_MASQ, '-j', 'MARK', '--or-mark', mark);

  if (opts.localhostNodePorts) {
    // route_localnet (needed for localhost NodePorts) opens https://issue.k8s.io/90259; this
    // is kube-proxy's (and kubelet's) mitigation.
    filterChains.write(chainLine(KUBE_FIREWALL));
    filterRules.write(
      '-A', KUBE_FIREWALL, '-m', 'comment', '--comment', quoted('block incoming localnet connections'),
      '-d', '127.0.0.0/8', '!', '-s', '127.0.0.0/8', '-m', 'conntrack', '!', '--ctstate', 'RELATED,ESTABLISHED,DNAT',
      '-j', 'DROP',
    );
  }

  const totalEndpoints = services.reduce((n, s) => n + s.endpoints.length, 0);
  const largeClusterMode = totalEndpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;
  const activeNatChains = new Set<string>();

  for (const entry of services) {
    const facts = servicePortFacts(entry);
    const skip = partial !== undefined && !isChanged(facts, partial);
    writeServicePort(facts, opts, largeClusterMode, activeNatChains, {
      filterRules,
      natRules,
      svcChains: skip ? DISCARD : natChains,
      svcRules: skip ? DISCARD : natRules,
    });
  }

  // Stale service chains: declaring them flushes them, which -X then may delete.
  const stale = [...new Set(sync.existingNatChains ?? [])]
    .filter((chain) => isIptablesServiceChainName(chain) && !activeNatChains.has(chain))
    .sort();
  for (const chain of stale) {
    natChains.write(chainLine(chain));
    natRules.write('-X', chain);
  }

  // The tail call to KUBE-NODEPORTS must stay the last rule of KUBE-SERVICES.
  const nodePortsComment = quoted('kubernetes service nodeports; NOTE: this must be the last rule in this chain');
  if (opts.nodePortAddressesMatchAll) {
    const destinations = ['-m', 'addrtype', '--dst-type', 'LOCAL'];
    // Localhost NodePorts never work for IPv6, and for IPv4 only with route_localnet.
    if (family === 'IPv6') destinations.push('!', '-d', '::1/128');
    else if (!opts.localhostNodePorts) destinations.push('!', '-d', '127.0.0.0/8');
    natRules.write('-A', KUBE_SERVICES, '-m', 'comment', '--comment', nodePortsComment, destinations, '-j', KUBE_NODEPORTS);
  } else {
    for (const ip of opts.nodePortIPs) {
      if (isLoopbackIp(ip) && !opts.localhostNodePorts) continue;
      natRules.write('-A', KUBE_SERVICES, '-m', 'comment', '--comment', nodePortsComment, '-d', ip, '-j', KUBE_NODEPORTS);
    }
  }

  // Without tcp_be_liberal, out-of-window packets marked INVALID would reset connections
  // (kubernetes#74839); kube-proxy drops them instead.
  if (!opts.conntrackTCPLiberal) {
    filterRules.write(
      '-A', KUBE_FORWARD, '-m', 'conntrack', '--ctstate', 'INVALID',
      ...(opts.nfacct ? ['-m', 'nfacct', '--nfacct-name', NFACCT_CT_STATE_INVALID_DROPPED] : []),
      '-j', 'DROP',
    );
  }
  filterRules.write(
    '-A', KUBE_FORWARD, '-m', 'comment', '--comment', quoted('kubernetes forwarding rules'),
    '-m', 'mark', '--mark', `${mark}/${mark}`, '-j', 'ACCEPT',
  );
  filterRules.write(
    '-A', KUBE_FORWARD, '-m', 'comment', '--comment', quoted('kubernetes forwarding conntrack rule'),
    '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT',
  );

  return [
    '*filter', ...filterChains.lines, ...filterRules.lines, 'COMMIT',
    '*nat', ...natChains.lines, ...natRules.lines, 'COMMIT',
    '',
  ].join('\n');
}

interface Buffers {
  filterRules: LineBuffer;
  natRules: LineBuffer;
  /** Where this service's own chains and their rules go (discarded when unchanged). */
  svcChains: LineBuffer;
  svcRules: LineBuffer;
}

function writeServicePort(
  facts: ServicePortFacts,
  opts: ResolvedOptions,
  largeClusterMode: boolean,
  activeNatChains: Set<string>,
  out: Buffers,
): void {
  const { entry, name, protocol } = facts;
  const svc = entry.service;
  const { clusterEndpoints, localEndpoints, allReachableEndpoints, hasAnyEndpoints: hasEndpoints } = entry.selection;
  const port = String(svc.port);

  const clusterPolicyChain = servicePortChainName(name, protocol);
  const localPolicyChain = servicePortLocalChainName(name, protocol);
  const externalTrafficChain = serviceExternalChainName(name, protocol);
  const fwChain = serviceFirewallChainName(name, protocol);

  const {
    usesClusterPolicyChain, usesLocalPolicyChain, internalTrafficChain, hasInternalEndpoints,
    externalPolicyChain, hasExternalEndpoints, usesExternalTrafficChain,
  } = policyRouting(facts, clusterPolicyChain, localPolicyChain);
  const usesFWChain = hasEndpoints && svc.loadBalancerIPs.length > 0 && facts.sourceRanges.length > 0;
  const loadBalancerTrafficChain = usesFWChain ? fwChain : externalTrafficChain;

  let internalFilterTarget = '';
  let internalFilterComment = '';
  let externalFilterTarget = '';
  let externalFilterComment = '';
  if (!hasEndpoints) {
    internalFilterTarget = externalFilterTarget = 'REJECT';
    internalFilterComment = externalFilterComment = quoted(`${name} has no endpoints`);
  } else {
    if (!hasInternalEndpoints) {
      internalFilterTarget = 'DROP';
      internalFilterComment = quoted(`${name} has no local endpoints`);
    }
    if (!hasExternalEndpoints) {
      externalFilterTarget = 'DROP';
      externalFilterComment = quoted(`${name} has no local endpoints`);
    }
  }

  const match = ['-m', protocol, '-p', protocol];

  // Capture the cluster IP.
  if (hasInternalEndpoints) {
    out.natRules.write(
      '-A', KUBE_SERVICES, '-m', 'comment', '--comment', quoted(`${name} cluster IP`), match,
      '-d', svc.clusterIP, '--dport', port, '-j', internalTrafficChain,
    );
  } else {
    out.filterRules.write(
      '-A', KUBE_SERVICES, '-m', 'comment', '--comment', internalFilterComment, match,
      '-d', svc.clusterIP, '--dport', port, '-j', internalFilterTarget,
    );
  }

  // Capture external IPs.
  for (const externalIP of svc.externalIPs) {
    if (hasEndpoints) {
      out.natRules.write(
        '-A', KUBE_SERVICES, '-m', 'comment', '--comment', quoted(`${name} external IP`), match,
        '-d', externalIP, '--dport', port, '-j', externalTrafficChain,
      );
    }
    if (!hasExternalEndpoints) {
      out.filterRules.write(
        '-A', KUBE_EXTERNAL_SERVICES, '-m', 'comment', '--comment', externalFilterComment, match,
        '-d', externalIP, '--dport', port, '-j', externalFilterTarget,
      );
    }
  }

  // Capture load balancer ingress.
  for (const lbip of svc.loadBalancerIPs) {
    if (hasEndpoints) {
      out.natRules.write(
        '-A', KUBE_SERVICES, '-m', 'comment', '--comment', quoted(`${name} loadbalancer IP`), match,
        '-d', lbip, '--dport', port, '-j', loadBalancerTrafficChain,
      );
    }
    if (usesFWChain) {
      out.filterRules.write(
        '-A', KUBE_PROXY_FIREWALL, '-m', 'comment', '--comment', quoted(`${name} traffic not accepted by ${fwChain}`),
        match, '-d', lbip, '--dport', port, '-j', 'DROP',
      );
    }
  }
  if (!hasExternalEndpoints) {
    for (const lbip of svc.loadBalancerIPs) {
      out.filterRules.write(
        '-A', KUBE_EXTERNAL_SERVICES, '-m', 'comment', '--comment', externalFilterComment, match,
        '-d', lbip, '--dport', port, '-j', externalFilterTarget,
      );
    }
  }

  // Capture NodePorts (not subject to loadBalancerSourceRanges, as in kube-proxy).
  if (svc.nodePort !== 0) {
    const nodePort = String(svc.nodePort);
    if (hasEndpoints) {
      if (opts.localhostNodePorts && opts.nfacct) {
        out.natRules.write(
          '-A', KUBE_NODEPORTS, '-m', 'comment', '--comment', name, match, '-d', '127.0.0.0/8', '--dport', nodePort,
          '-m', 'nfacct', '--nfacct-name', NFACCT_LOCALHOST_NODEPORT_ACCEPTED, '-j', externalTrafficChain,
        );
      }
      out.natRules.write(
        '-A', KUBE_NODEPORTS, '-m', 'comment', '--comment', name, match, '--dport', nodePort, '-j', externalTrafficChain,
      );
    }
    if (!hasExternalEndpoints) {
      out.filterRules.write(
        '-A', KUBE_EXTERNAL_SERVICES, '-m', 'comment', '--comment', externalFilterComment,
        '-m', 'addrtype', '--dst-type', 'LOCAL', match, '--dport', nodePort, '-j', externalFilterTarget,
      );
    }
  }

  // Health check NodePort: accepted whether or not this node has local endpoints.
  if (facts.healthCheckNodePort !== 0) {
    out.filterRules.write(
      '-A', KUBE_NODEPORTS, '-m', 'comment', '--comment', quoted(`${name} health check node port`),
      '-m', 'tcp', '-p', 'tcp', '--dport', String(facts.healthCheckNodePort), '-j', 'ACCEPT',
    );
  }

  const chains = out.svcChains;
  const rules = out.svcRules;

  // Internal traffic: masquerade what comes from outside the cluster (it may bounce off-node).
  if (hasInternalEndpoints) {
    const args = ['-m', 'comment', '--comment', quoted(`${name} cluster IP`), ...match, '-d', svc.clusterIP, '--dport', port];
    if (opts.masqueradeAll) {
      rules.write('-A', internalTrafficChain, args, '-j', KUBE_MARK_MASQ);
    } else if (opts.clusterCIDR !== null) {
      rules.write('-A', internalTrafficChain, args, '!', '-s', opts.clusterCIDR, '-j', KUBE_MARK_MASQ);
    }
  }

  // External traffic: special cases, then the external policy chain.
  if (usesExternalTrafficChain) {
    chains.write(chainLine(externalTrafficChain));
    activeNatChains.add(externalTrafficChain);
    if (!facts.externalPolicyLocal) {
      rules.write(
        '-A', externalTrafficChain, '-m', 'comment', '--comment',
        quoted(`masquerade traffic for ${name} external destinations`), '-j', KUBE_MARK_MASQ,
      );
    } else {
      if (opts.clusterCIDR !== null) {
        // Pod -> external IP acts as if it went out to the load balancer and came back.
        rules.write(
          '-A', externalTrafficChain, '-m', 'comment', '--comment',
          quoted(`pod traffic for ${name} external destinations`), '-s', opts.clusterCIDR, '-j', clusterPolicyChain,
        );
      }
      // The host itself picks the (local) LB IP as source, so it must be masqueraded.
      rules.write(
        '-A', externalTrafficChain, '-m', 'comment', '--comment',
        quoted(`masquerade LOCAL traffic for ${name} external destinations`),
        '-m', 'addrtype', '--src-type', 'LOCAL', '-j', KUBE_MARK_MASQ,
      );
      rules.write(
        '-A', externalTrafficChain, '-m', 'comment', '--comment',
        quoted(`route LOCAL traffic for ${name} external destinations`),
        '-m', 'addrtype', '--src-type', 'LOCAL', '-j', clusterPolicyChain,
      );
    }
    if (hasExternalEndpoints) rules.write('-A', externalTrafficChain, '-j', externalPolicyChain);
  }

  // loadBalancerSourceRanges.
  if (usesFWChain) {
    chains.write(chainLine(fwChain));
    activeNatChains.add(fwChain);
    const head = ['-A', fwChain, '-m', 'comment', '--comment', quoted(`${name} loadbalancer IP`)];
    for (const cidr of facts.sourceRanges) rules.write(head, '-s', cidr, '-j', externalTrafficChain);
    // A VIP-like LB often loops node -> VIP traffic back with the VIP as source.
    if (sourceRangesAllowNode(facts, opts.primaryNodeIP)) {
      for (const lbip of svc.loadBalancerIPs) rules.write(head, '-s', lbip, '-j', externalTrafficChain);
    }
    // What falls through was not DNATed and is dropped by KUBE-PROXY-FIREWALL in filter.
    rules.write(
      '-A', fwChain, '-m', 'comment', '--comment', quoted(`other traffic to ${name} will be dropped by KUBE-PROXY-FIREWALL`),
    );
  }

  const sepChain = (ep: Endpoint): string => servicePortEndpointChainName(name, protocol, endpointString(ep));
  const comment = (text: string): string[] => (largeClusterMode ? [] : ['-m', 'comment', '--comment', text]);

  const writeServiceToEndpointRules = (svcChain: string, endpoints: Endpoint[]): void => {
    if (facts.affinity) {
      for (const ep of endpoints) {
        rules.write(
          '-A', svcChain, comment(quoted(`${name} -> ${endpointString(ep)}`)),
          '-m', 'recent', '--name', sepChain(ep), '--rcheck', '--seconds', String(svc.affinityTimeoutSeconds), '--reap',
          '-j', sepChain(ep),
        );
      }
    }
    endpoints.forEach((ep, i) => {
      const statistic =
        i < endpoints.length - 1 ? ['-m', 'statistic', '--mode', 'random', '--probability', probability(endpoints.length - i)] : [];
      rules.write('-A', svcChain, comment(quoted(`${name} -> ${endpointString(ep)}`)), statistic, '-j', sepChain(ep));
    });
  };

  if (usesClusterPolicyChain) {
    chains.write(chainLine(clusterPolicyChain));
    activeNatChains.add(clusterPolicyChain);
    writeServiceToEndpointRules(clusterPolicyChain, clusterEndpoints);
  }
  if (usesLocalPolicyChain) {
    chains.write(chainLine(localPolicyChain));
    activeNatChains.add(localPolicyChain);
    writeServiceToEndpointRules(localPolicyChain, localEndpoints);
  }

  for (const ep of allReachableEndpoints) {
    const chain = sepChain(ep);
    chains.write(chainLine(chain));
    activeNatChains.add(chain);
    const head = ['-A', chain, ...comment(name)];
    // Hairpin: a backend reaching itself through the service must be masqueraded.
    rules.write(head, '-s', ep.ip, '-j', KUBE_MARK_MASQ);
    rules.write(
      head,
      ...(facts.affinity ? [['-m', 'recent', '--name', chain, '--set']] : []),
      match, '-j', 'DNAT', '--to-destination', endpointString(ep),
    );
  }
}
