/*
 * Kubernetes objects as vipr reads them: the validated subset of v1 Service and
 * discovery.k8s.io/v1 EndpointSlice that service proxying depends on. Sources (manifest files,
 * the API server) parse raw objects into these once, at the edge; nothing past a source sees
 * unvalidated data. Legacy v1 Endpoints are converted to EndpointSliceObject by the source.
 */
import type { Protocol, TrafficPolicy, ServiceType } from './types.js';

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
  /** IPv4 cluster IP, or null for headless (`None`) / unset / IPv6-only. */
  clusterIP: string | null;
  ports: ServicePortSpec[];
  externalIPs: string[];
  loadBalancerIPs: string[];
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
