/*
 * Defaults for the model's object types in unit tests: a ClusterIP Service (as a source parses
 * it) and a ServicePort (as the model builds it), each changed only where a test says.
 */
import type { ServiceObject } from '../../src/model/k8s.js';
import type { ServicePort } from '../../src/model/types.js';

export function serviceObject(overrides: Partial<ServiceObject> = {}): ServiceObject {
  return {
    namespace: 'default',
    name: 'web',
    labels: {},
    annotations: {},
    creationTimestamp: null,
    type: 'ClusterIP',
    clusterIPs: ['10.0.0.10'],
    ipFamilies: ['IPv4'],
    ipFamilyPolicy: 'SingleStack',
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 0 }],
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    affinityTimeoutSeconds: 0,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: 0,
    ...overrides,
  };
}

export function servicePortOf(overrides: Partial<ServicePort> = {}): ServicePort {
  return {
    id: { namespace: 'default', name: 'web', port: '', protocol: 'TCP' },
    family: 'IPv4',
    type: 'ClusterIP',
    clusterIP: '10.0.0.10',
    port: 80,
    targetPort: 80,
    nodePort: 0,
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    affinityTimeoutSeconds: 0,
    externalTrafficPolicy: 'Cluster',
    internalTrafficPolicy: 'Cluster',
    healthCheckNodePort: 0,
    scheduler: null,
    ...overrides,
  };
}
