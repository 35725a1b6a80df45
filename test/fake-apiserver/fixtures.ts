/* Raw (wire-format) objects for tests against the fake API server. */
import type { KubeObject } from '../../src/lab/fake-apiserver/server.js';

export function rawService(
  name: string,
  options: { namespace?: string; clusterIP?: string; port?: number; labels?: Record<string, string> } = {},
): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: options.namespace ?? 'default', labels: options.labels ?? {} },
    spec: {
      type: 'ClusterIP',
      clusterIP: options.clusterIP ?? '10.96.0.10',
      clusterIPs: [options.clusterIP ?? '10.96.0.10'],
      ipFamilies: ['IPv4'],
      ports: [{ name: 'http', protocol: 'TCP', port: options.port ?? 80, targetPort: 8080 }],
      sessionAffinity: 'None',
      internalTrafficPolicy: 'Cluster',
    },
  };
}

export function rawEndpointSlice(
  name: string,
  service: string,
  ips: string[],
  options: { namespace?: string; labels?: Record<string, string>; ready?: boolean } = {},
): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace: options.namespace ?? 'default',
      labels: { 'kubernetes.io/service-name': service, ...(options.labels ?? {}) },
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: ips.map((ip) => ({
      addresses: [ip],
      conditions: { ready: options.ready ?? true, serving: options.ready ?? true, terminating: false },
      nodeName: 'node-a',
    })),
  };
}

export function rawNode(
  name: string,
  options: { internalIPs?: string[]; externalIPs?: string[]; zone?: string } = {},
): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      labels: {
        'kubernetes.io/hostname': name,
        ...(options.zone ? { 'topology.kubernetes.io/zone': options.zone } : {}),
      },
    },
    status: {
      addresses: [
        ...(options.internalIPs ?? []).map((address) => ({ type: 'InternalIP', address })),
        ...(options.externalIPs ?? []).map((address) => ({ type: 'ExternalIP', address })),
        { type: 'Hostname', address: name },
      ],
    },
  };
}
