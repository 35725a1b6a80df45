/*
 * Kubernetes objects as vipr reads them: the validated subset of v1 Service and
 * discovery.k8s.io/v1 EndpointSlice that service proxying depends on. Sources (manifest files,
 * the API server) parse raw objects into these once, at the edge; nothing past a source sees
 * unvalidated data. Legacy v1 Endpoints are converted to EndpointSliceObject by the source.
 */
import type { IpFamily, Protocol, TrafficPolicy, ServiceType } from './types.js';

/** spec.ipFamilyPolicy; null when the object does not say (manifests; the API server always does). */
export type IpFamilyPolicy = 'SingleStack' | 'PreferDualStack' | 'RequireDualStack';

export interface ServicePortSpec {
  name: string;
  protocol: Protocol;
  port: number;
  targetPort: number | string;
  nodePort: number;
}

export interface ServiceObject {
  namespace: string;
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /**
   * metadata.creationTimestamp in ms since the epoch; null when the object has none (manifests
   * usually omit it). Decides which Service owns a contested frontend (src/model/ownership.ts).
   */
  creationTimestamp: number | null;
  type: ServiceType | 'ExternalName';
  /**
   * spec.clusterIPs as kube-proxy reads them: canonical text, in spec order (the first is the
   * primary family's, spec.clusterIP), at most one per family; [] for headless (`None`) or unset.
   */
  clusterIPs: string[];
  /** spec.ipFamilies, or the families of clusterIPs when the object does not list them. */
  ipFamilies: IpFamily[];
  ipFamilyPolicy: IpFamilyPolicy | null;
  ports: ServicePortSpec[];
  /** Both families, canonical text; each family's entry takes its own (src/model/build.ts). */
  externalIPs: string[];
  /** status.loadBalancer.ingress[].ip of both families, canonical text. */
  loadBalancerIPs: string[];
  /** CIDRs of both families, normalised (host bits cleared, IPv6 per RFC 5952). */
  loadBalancerSourceRanges: string[];
  /** 0 = sessionAffinity None; otherwise ClientIP with this timeout (default 10800). */
  affinityTimeoutSeconds: number;
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  healthCheckNodePort: number;
}

export interface EndpointSlicePort {
  /** '' when unnamed. */
  name: string;
  protocol: Protocol;
  port: number;
}

export interface EndpointConditions {
  ready: boolean | null;
  serving: boolean | null;
  terminating: boolean | null;
}

export interface SliceEndpoint {
  addresses: string[];
  conditions: EndpointConditions;
  nodeName: string | null;
  zone: string | null;
  /** hints.forZones[].name; null when no hints. */
  zoneHints: string[] | null;
}

export interface EndpointSliceObject {
  namespace: string;
  name: string;
  /** The `kubernetes.io/service-name` label; slices without it are ignored (kube-proxy). */
  serviceName: string | null;
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  ports: EndpointSlicePort[];
  endpoints: SliceEndpoint[];
}

/** Every object a source currently knows, keyed `namespace/name`. */
export interface ClusterObjects {
  services: Map<string, ServiceObject>;
  endpointSlices: Map<string, EndpointSliceObject>;
}

export function objectKey(o: { namespace: string; name: string }): string {
  return `${o.namespace}/${o.name}`;
}
