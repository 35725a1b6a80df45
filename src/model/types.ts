/*
 * The desired state: what every dataplane (BPF maps, iptables, nftables, IPVS) is rendered from.
 *
 * The shapes follow kube-proxy's pkg/proxy model: one ServicePort per (Service, port), each with
 * its endpoints; endpoint selection (ready / serving / terminating, traffic policies, topology)
 * is applied in src/model/endpoints.ts, never by a dataplane. Everything here is plain data:
 * pure, serialisable, and compared by value.
 */

import type { IpFamily } from './ip.js';

export type { IpFamily } from './ip.js';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

/** Traffic policy for external (NodePort / LB / externalIPs) or internal (ClusterIP) traffic. */
export type TrafficPolicy = 'Cluster' | 'Local';

/** Schedulers the BPF dataplane implements; `random` is kube-proxy's behaviour. */
export type Scheduler = 'random' | 'rr' | 'sh' | 'maglev' | 'lc';

/**
 * How external traffic reaches a backend on another node (BPF dataplane, IPv4; bpf/lib/dsr.h):
 * `snat` through this node both ways (kube-proxy's behaviour), `dsr` with the reply straight
 * from the backend's node, `hybrid` DSR for TCP and SNAT for UDP.
 */
export type LbMode = 'snat' | 'dsr' | 'hybrid';
export const LB_MODES: readonly LbMode[] = ['snat', 'dsr', 'hybrid'];

/** Identifies one port of one Service, as kube-proxy's ServicePortName. */
export interface ServicePortName {
  namespace: string;
  name: string;
  /** The port's `name` in the Service spec; '' for an unnamed single port. */
  port: string;
  protocol: Protocol;
}

/**
 * One port of one Service in one IP family, as kube-proxy's BaseServicePortInfo as that family's
 * proxier sees it: a dual-stack Service is two ServicePorts, one per family, each with only its
 * family's addresses (cluster IP, external IPs, load-balancer IPs and source ranges).
 */
export interface ServicePort {
  id: ServicePortName;
  family: IpFamily;
  type: ServiceType;
  /** The family's cluster IP (from spec.clusterIPs), canonical text. */
  clusterIP: string;
  port: number;
  /** spec.ports[].targetPort: a number, or a named container port resolved through endpoints. */
  targetPort: number | string;
  /** 0 when the Service has none. */
  nodePort: number;
  externalIPs: string[];
  /** status.loadBalancer.ingress[].ip of this family. */
  loadBalancerIPs: string[];
  /** CIDRs of this family allowed to reach the load balancer IPs; empty = everyone. */
  loadBalancerSourceRanges: string[];
  /** ClientIP affinity timeout in seconds; 0 = sessionAffinity None. */
  affinityTimeoutSeconds: number;
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  /** spec.healthCheckNodePort (LoadBalancer with externalTrafficPolicy Local); 0 = none. */
  healthCheckNodePort: number;
  /** From the annotation `vipr.io/scheduler`; null = the node default. */
  scheduler: Scheduler | null;
  /** From the annotation `vipr.io/lb-mode`; absent or null = the node default (--lb-mode). */
  lbMode?: LbMode | null;
}

/** One endpoint of one ServicePort, as kube-proxy's BaseEndpointInfo. */
export interface Endpoint {
  ip: string;
  port: number;
  /** conditions.ready (nil counts as true, as kube-proxy). */
  ready: boolean;
  /** conditions.serving (nil = ready). */
  serving: boolean;
  /** conditions.terminating (nil = false). */
  terminating: boolean;
  nodeName: string | null;
  zone: string | null;
  /** hints.forZones; null when the endpoint carries no hints. */
  zoneHints: string[] | null;
  /** nodeName equals this node's name. */
  isLocal: boolean;
}

/** The endpoints chosen for a ServicePort by kube-proxy's rules (topology.go CategorizeEndpoints). */
export interface EndpointSelection {
  /** Endpoints for traffic under the Cluster policy; empty when the policy is Local. */
  clusterEndpoints: Endpoint[];
  /** Endpoints on this node, for traffic under the Local policy. */
  localEndpoints: Endpoint[];
  /** Union of the above: every endpoint any traffic may reach. */
  allReachableEndpoints: Endpoint[];
  /** Whether the service has any endpoint at all (ready, serving or terminating). */
  hasAnyEndpoints: boolean;
}

/** One ServicePort with all its endpoints (sorted by ip then port) and kube-proxy's selection. */
export interface ServiceEntry {
  /**
   * The entry's identity, unique in a DesiredState: kube-proxy's ServicePortName.String()
   * (`namespace/name:port`, `namespace/name` if unnamed) for IPv4, with ` IPv6` appended for
   * IPv6 (serviceEntryKey). Renderers derive kube-proxy's chain names from `service.id`, never
   * from this key, so both families' chains carry kube-proxy's names.
   */
  key: string;
  service: ServicePort;
  endpoints: Endpoint[];
  selection: EndpointSelection;
}

/** Facts about the node the agent runs on. */
export interface NodeInfo {
  name: string;
  /** topology.kubernetes.io/zone, if known. */
  zone: string | null;
  /** Node addresses of both families, canonical text (NodePort targets); each family's dataplane uses its own. */
  ips: string[];
}

/** Everything a dataplane needs, sorted by key. */
export interface DesiredState {
  node: NodeInfo;
  services: ServiceEntry[];
  /**
   * The same entries by Service (`namespace/name`), when the producer keeps such an index (the
   * agent): a dataplane syncing a few changed Services reads them here instead of scanning
   * `services`. Read-only, and valid only during the sync it came with.
   */
  byService?: ReadonlyMap<string, readonly ServiceEntry[]>;
}

/**
 * kube-proxy's ServicePortName.String(): `namespace/name:port`, or `namespace/name` for an
 * unnamed port.
 */
export function servicePortKey(id: Pick<ServicePortName, 'namespace' | 'name' | 'port'>): string {
  return id.port === '' ? `${id.namespace}/${id.name}` : `${id.namespace}/${id.name}:${id.port}`;
}

/** The suffix of an IPv6 entry's key (see ServiceEntry.key). */
export const IPV6_KEY_SUFFIX = ' IPv6';

/** ServiceEntry.key of a ServicePort of `family`. */
export function serviceEntryKey(id: Pick<ServicePortName, 'namespace' | 'name' | 'port'>, family: IpFamily): string {
  const key = servicePortKey(id);
  return family === 'IPv6' ? key + IPV6_KEY_SUFFIX : key;
}

/** `namespace/name` of the Service an entry key belongs to. */
export function serviceOfEntryKey(key: string): string {
  const base = key.endsWith(IPV6_KEY_SUFFIX) ? key.slice(0, -IPV6_KEY_SUFFIX.length) : key;
  const colon = base.indexOf(':');
  return colon < 0 ? base : base.slice(0, colon);
}
