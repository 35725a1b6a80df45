/*
 * The lab's Kubernetes objects: the default manifests `up` writes (a TCP ClusterIP service and a
 * UDP one, each with an EndpointSlice listing the lab's backends), and a summary of whatever
 * services a manifests directory holds, for `status`.
 */
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadManifestDir, type ManifestLoad } from '../sources/manifest.js';
import type { NodePlan } from './topology.js';

export const NGINX_SERVICE = { namespace: 'default', name: 'nginx-service', clusterIP: '10.0.0.213', port: 80, targetPort: 80 };
export const ECHO_UDP_SERVICE = { namespace: 'default', name: 'echo-udp', clusterIP: '10.0.0.53', port: 53, targetPort: 5353 };

type Manifest = Record<string, unknown>;

function service(
  svc: typeof NGINX_SERVICE,
  protocol: 'TCP' | 'UDP',
  selector: Record<string, string>,
): Manifest {
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

function endpointSlice(svc: typeof NGINX_SERVICE, protocol: 'TCP' | 'UDP', node: NodePlan): Manifest {
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
    endpoints: node.backends.map((be) => ({
      addresses: [be.ip],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: node.nodeName,
      targetRef: { kind: 'Pod', namespace: svc.namespace, name: be.name },
    })),
  };
}

/** The default manifests as file name → YAML text (multi-document: Service, then its slice). */
export function defaultManifests(node: NodePlan): Map<string, string> {
  const files = new Map<string, string>();
  const render = (docs: Manifest[]): string => docs.map((d) => stringify(d)).join('---\n');
  files.set(
    'nginx-service.yaml',
    render([service(NGINX_SERVICE, 'TCP', { app: 'web' }), endpointSlice(NGINX_SERVICE, 'TCP', node)]),
  );
  files.set(
    'echo-udp.yaml',
    render([service(ECHO_UDP_SERVICE, 'UDP', { app: 'echo' }), endpointSlice(ECHO_UDP_SERVICE, 'UDP', node)]),
  );
  return files;
}

export async function writeDefaultManifests(dir: string, node: NodePlan): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const written: string[] = [];
  for (const [file, text] of defaultManifests(node)) {
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
  /** `ip:port` of each ready endpoint from the service's EndpointSlices. */
  endpoints: string[];
}

export interface ServiceSummary {
  namespace: string;
  name: string;
  type: string;
  clusterIP: string | null;
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
      const endpoints = own.flatMap((slice) =>
        slice.ports
          .filter((sp) => sp.name === p.name && sp.protocol === p.protocol)
          .flatMap((sp) =>
            slice.endpoints
              // As kube-proxy: a missing `ready` condition counts as ready.
              .filter((ep) => ep.conditions.ready !== false)
              .flatMap((ep) => (ep.addresses[0] === undefined ? [] : [`${ep.addresses[0]}:${sp.port}`])),
          ),
      );
      return { name: p.name, protocol: p.protocol, port: p.port, targetPort: p.targetPort, endpoints };
    });
    return { namespace: svc.namespace, name: svc.name, type: svc.type, clusterIP: svc.clusterIP, ports };
  });
  services.sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  return { services, problems: load.problems.map((p) => String(p).split('\n')[0] ?? '') };
}
