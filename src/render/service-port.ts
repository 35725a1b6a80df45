/*
 * The per-ServicePort facts every kube-proxy backend derives from BaseServicePortInfo
 * (pkg/proxy/serviceport.go, pkg/api/v1/service): which traffic policies apply, whether the
 * port is reachable from outside, and the names of its chains. Endpoint *selection* is not
 * recomputed here: it comes from the model (EndpointSelection).
 */
import type { Endpoint, ServiceEntry } from '../model/types.js';
import { lowerProtocol } from './hash.js';
import { servicePortKey } from '../model/types.js';
import { cidrHas, joinHostPort, normalizeCidr, parseCidr } from '../model/ip.js';

export interface ServicePortFacts {
  entry: ServiceEntry;
  /** ServicePortName.String(). */
  name: string;
  /** `namespace/name`: the unit kube-proxy's partial syncs track changes by. */
  serviceName: string;
  protocol: string;
  externallyAccessible: boolean;
  externalPolicyLocal: boolean;
  internalPolicyLocal: boolean;
  usesClusterEndpoints: boolean;
  usesLocalEndpoints: boolean;
  affinity: boolean;
  /** 0 unless the Service needs one (LoadBalancer with externalTrafficPolicy Local), as kube-proxy. */
  healthCheckNodePort: number;
  /** Source ranges normalised as Go prints net.IPNet. */
  sourceRanges: string[];
}

export function servicePortFacts(entry: ServiceEntry): ServicePortFacts {
  const svc = entry.service;
  const externallyAccessible = svc.nodePort !== 0 || svc.loadBalancerIPs.length > 0 || svc.externalIPs.length > 0;
  // apiservice.ExternalPolicyLocal looks at the Service as a whole, not the port.
  const serviceExternallyAccessible = svc.type === 'LoadBalancer' || svc.type === 'NodePort' || svc.externalIPs.length > 0;
  const externalPolicyLocal = serviceExternallyAccessible && svc.externalTrafficPolicy === 'Local';
  const internalPolicyLocal = svc.internalTrafficPolicy === 'Local';
  return {
    entry,
    name: servicePortKey(svc.id),
    serviceName: `${svc.id.namespace}/${svc.id.name}`,
    protocol: lowerProtocol(svc.id.protocol),
    externallyAccessible,
    externalPolicyLocal,
    internalPolicyLocal,
    // Even with externalTrafficPolicy Local, pod traffic to external IPs short-circuits to
    // the Cluster endpoints, so any externally reachable port uses them.
    usesClusterEndpoints: !internalPolicyLocal || externallyAccessible,
    usesLocalEndpoints: internalPolicyLocal || (externallyAccessible && externalPolicyLocal),
    affinity: svc.affinityTimeoutSeconds > 0,
    // apiservice.NeedsHealthCheck: kube-proxy ignores the field on any other Service.
    healthCheckNodePort: svc.type === 'LoadBalancer' && svc.externalTrafficPolicy === 'Local' ? svc.healthCheckNodePort : 0,
    sourceRanges: svc.loadBalancerSourceRanges.map(normalizeCidr),
  };
}

/** kube-proxy's BaseEndpointInfo.String(): net.JoinHostPort, so `[fd00::1]:80` for IPv6. */
export function endpointString(ep: Endpoint): string {
  return joinHostPort(ep.ip, ep.port);
}

/** Whether any source range admits the node itself (kube-proxy's allowFromNode). */
export function sourceRangesAllowNode(facts: ServicePortFacts, nodeIP: string | null): boolean {
  if (nodeIP === null) return false;
  return facts.sourceRanges.some((range) => cidrHas(parseCidr(range), nodeIP));
}

/** Whether a changed-set names this port: by service (`ns/name`, as kube-proxy) or by port key. */
export function isChanged(facts: ServicePortFacts, changed: ReadonlySet<string>): boolean {
  return changed.has(facts.serviceName) || changed.has(facts.name) || changed.has(facts.entry.key);
}

/** Which policy chains a service port uses and where its internal and external traffic goes. */
export interface PolicyRouting<C> {
  usesClusterPolicyChain: boolean;
  usesLocalPolicyChain: boolean;
  internalTrafficChain: C;
  hasInternalEndpoints: boolean;
  externalPolicyChain: C;
  hasExternalEndpoints: boolean;
  /** Needed even without externally usable endpoints, for the local short-circuit rules. */
  usesExternalTrafficChain: boolean;
}

/**
 * kube-proxy's routing of a service port between its cluster- and local-policy chains, shared by
 * the iptables and nftables renderers (both proxiers compute it the same way).
 */
export function policyRouting<C>(facts: ServicePortFacts, clusterPolicyChain: C, localPolicyChain: C): PolicyRouting<C> {
  const { clusterEndpoints, localEndpoints, hasAnyEndpoints } = facts.entry.selection;
  const localOr = (local: boolean): { chain: C; has: boolean } =>
    local ? { chain: localPolicyChain, has: hasAnyEndpoints && localEndpoints.length > 0 } : { chain: clusterPolicyChain, has: hasAnyEndpoints };
  const internal = localOr(facts.internalPolicyLocal);
  const external = localOr(facts.externalPolicyLocal);
  return {
    usesClusterPolicyChain: clusterEndpoints.length > 0 && facts.usesClusterEndpoints,
    usesLocalPolicyChain: localEndpoints.length > 0 && facts.usesLocalEndpoints,
    internalTrafficChain: internal.chain,
    hasInternalEndpoints: internal.has,
    externalPolicyChain: external.chain,
    hasExternalEndpoints: external.has,
    usesExternalTrafficChain: hasAnyEndpoints && facts.externallyAccessible,
  };
}
