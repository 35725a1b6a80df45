/*
 * The lab's Kubernetes objects: the default manifests `up` writes (a TCP ClusterIP service and a
 * UDP one, each with an EndpointSlice listing the lab's backends; a multi-node lab adds a NodePort
 * and a LoadBalancer service), and a summary of whatever services a manifests directory holds, for
 * `status`.
 */
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadManifestDir, type ManifestLoad } from '../sources/manifest.js';
import type { NodePlan } from './topology.js';

export const NGINX_SERVICE = { namespace: 'default', name: 'nginx-service', clusterIP: '10.0.0.213', port: 80, targetPort: 80 };
export const ECHO_UDP_SERVICE = { namespace: 'default', name: 'echo-udp', clusterIP: '10.0.0.53', port: 53, targetPort: 5353 };
/** Multi-node labs only: every pod behind a NodePort on every node. */
export const WEB_NODEPORT_SERVICE = {
  namespace: 'default',
  name: 'web-nodeport',
  clusterIP: '10.0.0.80',
  port: 80,
  targetPort: 80,
  nodePort: 30080,
};
/**
 * Multi-node labs only: a LoadBalancer IP (routed by the external host to node1) with
 * externalTrafficPolicy Local, so the client address survives and only local pods serve.
 */
export const WEB_LB_SERVICE = {
  namespace: 'default',
  name: 'web-lb',
  clusterIP: '10.0.0.81',
  port: 80,
  targetPort: 80,
  nodePort: 30081,
  loadBalancerIP: '10.250.0.10',
  healthCheckNodePort: 32000,
};

interface ServiceShape {
  namespace: string;
  name: string;
  clusterIP: string;
  port: number;
  targetPort: number;
}

type Manifest = Record<string, unknown>;

function service(svc: ServiceShape, protocol: 'TCP' | 'UDP', selector: Record<string, string>): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: svc.namespace, name: svc.name },
    spec: {
      type: 'ClusterIP',
      clusterIP: svc.clusterIP,
      clusterIPs: [svc.clusterIP],
      selector,
      ports: [{ protocol, port: svc.port, targetPort: svc.targetPort }],
    },
  };
}

/** One slice listing every pod of `nodes`, each with its node's name (Local policies use it). */
function endpointSlice(svc: ServiceShape, protocol: 'TCP' | 'UDP', nodes: readonly NodePlan[]): Manifest {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      namespace: svc.namespace,
      name: `${svc.name}-lab`,
      labels: {
        'kubernetes.io/service-name': svc.name,
        'endpointslice.kubernetes.io/managed-by': 'vipr-lab',
      },
    },
    addressType: 'IPv4',
    ports: [{ name: '', protocol, port: svc.targetPort }],
    endpoints: nodes.flatMap((node) =>
      node.backends.map((be) => ({
        addresses: [be.ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: node.nodeName,
        targetRef: { kind: 'Pod', namespace: svc.namespace, name: be.name },
      })),
    ),
  };
}

function nodePortService(): Manifest {
  const svc = WEB_NODEPORT_SERVICE;
  const manifest = service(svc, 'TCP', { app: 'web' });
  const spec = manifest.spec as Record<string, unknown>;
  spec.type = 'NodePort';
  spec.ports = [{ protocol: 'TCP', port: svc.port, targetPort: svc.targetPort, nodePort: svc.nodePort }];
  return manifest;
}

function loadBalancerService(): Manifest {
  const svc = WEB_LB_SERVICE;
  const manifest = service(svc, 'TCP', { app: 'web' });
  const spec = manifest.spec as Record<string, unknown>;
  spec.type = 'LoadBalancer';
  spec.ports = [{ protocol: 'TCP', port: svc.port, targetPort: svc.targetPort, nodePort: svc.nodePort }];
  spec.externalTrafficPolicy = 'Local';
  spec.healthCheckNodePort = svc.healthCheckNodePort;
  // What a load balancer controller writes once it has an address for the service.
  manifest.status = { loadBalancer: { ingress: [{ ip: svc.loadBalancerIP }] } };
  return manifest;
}

/**
 * The default manifests as file name → YAML text (multi-document: Service, then its slice), with
 * endpoints on every given node. With one node: nginx-service and echo-udp, as the lab always had;
 * with several, web-nodeport and web-lb too.
 */
export function defaultManifests(nodes: NodePlan | readonly NodePlan[]): Map<string, string> {
  const all: readonly NodePlan[] = Array.isArray(nodes) ? nodes : [nodes as NodePlan];
  const files = new Map<string, string>();
  const render = (docs: Manifest[]): string => docs.map((d) => stringify(d)).join('---\n');
  files.set(
    'nginx-service.yaml',
    render([service(NGINX_SERVICE, 'TCP', { app: 'web' }), endpointSlice(NGINX_SERVICE, 'TCP', all)]),
  );
  files.set(
    'echo-udp.yaml',
    render([service(ECHO_UDP_SERVICE, 'UDP', { app: 'echo' }), endpointSlice(ECHO_UDP_SERVICE, 'UDP', all)]),
  );
  if (all.length > 1) {
    files.set('web-nodeport.yaml', render([nodePortService(), endpointSlice(WEB_NODEPORT_SERVICE, 'TCP', all)]));
    files.set('web-lb.yaml', render([loadBalancerService(), endpointSlice(WEB_LB_SERVICE, 'TCP', all)]));
  }
  return files;
}

export async function writeDefaultManifests(dir: string, nodes: NodePlan | readonly NodePlan[]): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  for (const [file, text] of defaultManifests(nodes)) {
    const path = join(dir, file);
    await writeFile(path, text);
    written.push(path);
  }
  return written;
}

export interface ServicePortSummary {
  name: string;
  protocol: string;
  port: number;
  targetPort: number | string;
  /** 0 when the service has none. */
  nodePort: number;
  /** `ip:port` of each ready endpoint from the service's EndpointSlices. */
  endpoints: string[];
  /** The node of each of `endpoints` (`nodeName`, null when the slice has none), in the same order. */
  endpointNodes: (string | null)[];
}

export interface ServiceSummary {
  namespace: string;
  name: string;
  type: string;
  clusterIP: string | null;
  externalIPs: string[];
  loadBalancerIPs: string[];
  externalTrafficPolicy: string;
  /** 0 when the service has none. */
  healthCheckNodePort: number;
  ports: ServicePortSummary[];
}

export interface ManifestDirSummary {
  services: ServiceSummary[];
  /** Files or documents that could not be read, one line each. */
  problems: string[];
}

/**
 * The Services of a manifests directory with their ready endpoints, read by the agent's own
 * manifest source, so `status` shows exactly what the agent would load and the problems it would
 * report.
 */
export async function summarizeManifestDir(dir: string): Promise<ManifestDirSummary> {
  let load: ManifestLoad;
  try {
    load = await loadManifestDir(dir);
  } catch (err) {
    return { services: [], problems: [err instanceof Error ? err.message : String(err)] };
  }
  const slices = [...load.objects.endpointSlices.values()].filter((s) => s.addressType === 'IPv4');
  const services = [...load.objects.services.values()].map((svc): ServiceSummary => {
    const own = slices.filter((s) => s.namespace === svc.namespace && s.serviceName === svc.name);
    const ports = svc.ports.map((p): ServicePortSummary => {
      const ready = own.flatMap((slice) =>
        slice.ports
          .filter((sp) => sp.name === p.name && sp.protocol === p.protocol)
          .flatMap((sp) =>
            slice.endpoints
              // As kube-proxy: a missing `ready` condition counts as ready.
              .filter((ep) => ep.conditions.ready !== false)
              .flatMap((ep) =>
                ep.addresses[0] === undefined ? [] : [{ at: `${ep.addresses[0]}:${sp.port}`, node: ep.nodeName ?? null }],
              ),
          ),
      );
      return {
        name: p.name,
        protocol: p.protocol,
        port: p.port,
        targetPort: p.targetPort,
        nodePort: p.nodePort,
        endpoints: ready.map((e) => e.at),
        endpointNodes: ready.map((e) => e.node),
      };
    });
    return {
      namespace: svc.namespace,
      name: svc.name,
      type: svc.type,
      clusterIP: svc.clusterIP,
      externalIPs: svc.externalIPs,
      loadBalancerIPs: svc.loadBalancerIPs,
      externalTrafficPolicy: svc.externalTrafficPolicy,
      healthCheckNodePort: svc.healthCheckNodePort,
      ports,
    };
  });
  services.sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  return { services, problems: load.problems.map((p) => String(p).split('\n')[0] ?? '') };
}
