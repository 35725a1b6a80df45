/*
 * A dual-stack desired state as the model hands it to a dataplane: the lab's `nginx-service`
 * (10.0.0.213 and fd00:10:96::213, port 80, NodePort 30080) as two entries, one per family, each
 * with only its family's addresses and endpoints. Built as a literal so the dataplane tests do not
 * depend on the sources and builder.
 */
import type { DesiredState, Endpoint, ServiceEntry, ServicePort } from '../../src/model/types.js';
import { serviceEntryKey } from '../../src/model/types.js';
import { servicePortOf } from './objects.js';

export const NODE_NAME = 'node-a';
export const NODE_IP4 = '192.168.60.11';
export const NODE_IP6 = 'fd00:192:168:60::11';

export function endpointOf(ip: string, local = false, port = 80): Endpoint {
  return { ip, port, ready: true, serving: true, terminating: false, nodeName: local ? NODE_NAME : 'node-b', zone: null, zoneHints: null, isLocal: local };
}

/** One entry with kube-proxy's selection: every endpoint reachable, the local ones for Local policies. */
export function entryOf(service: ServicePort, endpoints: Endpoint[]): ServiceEntry {
  const local = endpoints.filter((e) => e.isLocal);
  return {
    key: serviceEntryKey(service.id, service.family),
    service,
    endpoints,
    selection: { clusterEndpoints: endpoints, localEndpoints: local, allReachableEndpoints: endpoints, hasAnyEndpoints: endpoints.length > 0 },
  };
}

export const NGINX_ID = { namespace: 'default', name: 'nginx-service', port: '', protocol: 'TCP' } as const;

export function nginxV4(overrides: Partial<ServicePort> = {}, endpoints = ['10.244.1.2', '10.244.1.3']): ServiceEntry {
  const svc = servicePortOf({ id: { ...NGINX_ID }, family: 'IPv4', type: 'NodePort', clusterIP: '10.0.0.213', nodePort: 30080, ...overrides });
  return entryOf(svc, endpoints.map((ip) => endpointOf(ip)));
}

/** The IPv6 half: also a LoadBalancer IP with a source range, externalTrafficPolicy Local (one local endpoint). */
export function nginxV6(overrides: Partial<ServicePort> = {}, endpoints = ['fd00:10:244:1::2', 'fd00:10:244:1::3']): ServiceEntry {
  const svc = servicePortOf({
    id: { ...NGINX_ID },
    family: 'IPv6',
    type: 'LoadBalancer',
    clusterIP: 'fd00:10:96::213',
    nodePort: 30080,
    loadBalancerIPs: ['fd00:192:168:60::100'],
    loadBalancerSourceRanges: ['fd00:192:168:60::/64'],
    externalTrafficPolicy: 'Local',
    ...overrides,
  });
  return entryOf(svc, endpoints.map((ip, i) => endpointOf(ip, i === 0)));
}

export function stateOf(services: ServiceEntry[], ips: string[] = [NODE_IP4, NODE_IP6]): DesiredState {
  return { node: { name: NODE_NAME, zone: null, ips }, services: [...services].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)) };
}
