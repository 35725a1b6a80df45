/*
 * The lab's Kubernetes objects: the default manifests `up` writes (a TCP ClusterIP service and a
 * UDP one, each with an EndpointSlice listing the lab's backends; a multi-node lab adds a NodePort
 * and a LoadBalancer service), and a summary of whatever services a manifests directory holds, for
 * `status`. In a dual-stack lab every Service is RequireDualStack with a cluster IP of each family
 * (IPv4 first, as a cluster whose primary family is IPv4 assigns them) and has one EndpointSlice
 * per family (addressType IPv4 and IPv6), as the EndpointSlice controller writes them; an
 * IPv6-only lab's Services are SingleStack IPv6.
 */
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadManifestDir, type ManifestLoad } from '../sources/manifest.js';
import { joinHostPort, type IpFamily } from '../model/ip.js';
import { addressOfFamily, type NodePlan } from './topology.js';

export const NGINX_SERVICE = {
  namespace: 'default',
  name: 'nginx-service',
  clusterIP: '10.0.0.213',
  clusterIP6: 'fd00:10:96::213',
  port: 80,
  targetPort: 80,
};
export const ECHO_UDP_SERVICE = {
  namespace: 'default',
  name: 'echo-udp',
  clusterIP: '10.0.0.53',
  clusterIP6: 'fd00:10:96::53',
  port: 53,
  targetPort: 5353,
};
/** Multi-node labs only: every pod behind a NodePort on every node. */
export const WEB_NODEPORT_SERVICE = {
  namespace: 'default',
  name: 'web-nodeport',
  clusterIP: '10.0.0.80',
  clusterIP6: 'fd00:10:96::80',
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
  clusterIP6: 'fd00:10:96::81',
  port: 80,
  targetPort: 80,
  nodePort: 30081,
  loadBalancerIP: '10.250.0.10',
  loadBalancerIP6: 'fd00:10:250::10',
  healthCheckNodePort: 32000,
};

interface ServiceShape {
  namespace: string;
  name: string;
  clusterIP: string;
  clusterIP6: string;
  port: number;
  targetPort: number;
}

type Manifest = Record<string, unknown>;

/** The Service's cluster IPs in the lab's families (IPv4 first). */
function clusterIPs(svc: ServiceShape, families: readonly IpFamily[]): string[] {
  return families.map((f) => (f === 'IPv4' ? svc.clusterIP : svc.clusterIP6));
}

function service(svc: ServiceShape, protocol: 'TCP' | 'UDP', selector: Record<string, string>, families: readonly IpFamily[]): Manifest {
  const ips = clusterIPs(svc, families);
  // The IPv4 lab's Services are written as they always were (the API server would add
  // ipFamilies [IPv4] and SingleStack; the sources read the same either way).
  const familyFields =
    families.length === 1 && families[0] === 'IPv4'
      ? {}
      : { ipFamilies: [...families], ipFamilyPolicy: families.length === 2 ? 'RequireDualStack' : 'SingleStack' };
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { namespace: svc.namespace, name: svc.name },
    spec: {
      type: 'ClusterIP',
      clusterIP: ips[0],
      clusterIPs: ips,
      ...familyFields,
      selector,
      ports: [{ protocol, port: svc.port, targetPort: svc.targetPort }],
    },
  };
}

/**
 * One slice of addressType `family` listing every pod of `nodes`, each with its node's name (Local
 * policies use it). The IPv4 slice keeps the name it always had; the IPv6 one is `<svc>-lab-ipv6`.
 */
function endpointSlice(svc: ServiceShape, protocol: 'TCP' | 'UDP', nodes: readonly NodePlan[], family: IpFamily): Manifest {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      namespace: svc.namespace,
      name: family === 'IPv4' ? `${svc.name}-lab` : `${svc.name}-lab-ipv6`,
      labels: {
        'kubernetes.io/service-name': svc.name,
        'endpointslice.kubernetes.io/managed-by': 'vipr-lab',
      },
    },
    addressType: family,
    ports: [{ name: '', protocol, port: svc.targetPort }],
    endpoints: nodes.flatMap((node) =>
      node.backends.map((be) => ({
        addresses: [addressOfFamily(be.ips, family) as string],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: node.nodeName,
        targetRef: { kind: 'Pod', namespace: svc.namespace, name: be.name },
      })),
    ),
  };
}

function nodePortService(families: readonly IpFamily[]): Manifest {
  const svc = WEB_NODEPORT_SERVICE;
  const manifest = service(svc, 'TCP', { app: 'web' }, families);
  const spec = manifest.spec as Record<string, unknown>;
  spec.type = 'NodePort';
  spec.ports = [{ protocol: 'TCP', port: svc.port, targetPort: svc.targetPort, nodePort: svc.nodePort }];
  return manifest;
}

function loadBalancerService(families: readonly IpFamily[]): Manifest {
  const svc = WEB_LB_SERVICE;
  const manifest = service(svc, 'TCP', { app: 'web' }, families);
  const spec = manifest.spec as Record<string, unknown>;
  spec.type = 'LoadBalancer';
  spec.ports = [{ protocol: 'TCP', port: svc.port, targetPort: svc.targetPort, nodePort: svc.nodePort }];
  spec.externalTrafficPolicy = 'Local';
  spec.healthCheckNodePort = svc.healthCheckNodePort;
  // What a load balancer controller writes once it has an address (one per family) for the service.
  const ingress = families.map((f) => ({ ip: f === 'IPv4' ? svc.loadBalancerIP : svc.loadBalancerIP6 }));
  manifest.status = { loadBalancer: { ingress } };
  return manifest;
}

/** The families the lab's pods have addresses of (those of the first node's gateways), IPv4 first. */
function familiesOfNodes(nodes: readonly NodePlan[]): IpFamily[] {
  const gateways = nodes[0]?.podGateways ?? [];
  return (['IPv4', 'IPv6'] as const).filter((f) => addressOfFamily(gateways, f) !== null);
}

/**
 * The default manifests as file name → YAML text (multi-document: Service, then its slice per
 * family), with endpoints on every given node, in the families the nodes' pods have addresses of.
 * With one node: nginx-service and echo-udp, as the lab always had; with several, web-nodeport and
 * web-lb too.
 */
export function defaultManifests(nodes: NodePlan | readonly NodePlan[]): Map<string, string> {
  const all: readonly NodePlan[] = Array.isArray(nodes) ? nodes : [nodes as NodePlan];
  const families = familiesOfNodes(all);
  const files = new Map<string, string>();
  const render = (docs: Manifest[]): string => docs.map((d) => stringify(d)).join('---\n');
  const slices = (svc: ServiceShape, protocol: 'TCP' | 'UDP'): Manifest[] => families.map((f) => endpointSlice(svc, protocol, all, f));
  files.set('nginx-service.yaml', render([service(NGINX_SERVICE, 'TCP', { app: 'web' }, families), ...slices(NGINX_SERVICE, 'TCP')]));
  files.set('echo-udp.yaml', render([service(ECHO_UDP_SERVICE, 'UDP', { app: 'echo' }, families), ...slices(ECHO_UDP_SERVICE, 'UDP')]));
  if (all.length > 1) {
    files.set('web-nodeport.yaml', render([nodePortService(families), ...slices(WEB_NODEPORT_SERVICE, 'TCP')]));
    files.set('web-lb.yaml', render([loadBalancerService(families), ...slices(WEB_LB_SERVICE, 'TCP')]));
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
  /** `ip:port` (`[ip]:port` for IPv6) of each ready endpoint from the service's EndpointSlices, IPv4 ones first. */
  endpoints: string[];
  /** The node of each of `endpoints` (`nodeName`, null when the slice has none), in the same order. */
  endpointNodes: (string | null)[];
}

export interface ServiceSummary {
  namespace: string;
  name: string;
  type: string;
  /** The first of clusterIPs (the primary family's), null for a headless Service. */
  clusterIP: string | null;
  /** Every cluster IP, in spec order. */
  clusterIPs: string[];
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
  // IPv4 slices first, then IPv6 ones (FQDN slices name no address a proxy could use).
  const all = [...load.objects.endpointSlices.values()];
  const slices = [...all.filter((s) => s.addressType === 'IPv4'), ...all.filter((s) => s.addressType === 'IPv6')];
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
                ep.addresses[0] === undefined ? [] : [{ at: joinHostPort(ep.addresses[0], sp.port), node: ep.nodeName ?? null }],
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
      clusterIP: svc.clusterIPs[0] ?? null,
      clusterIPs: svc.clusterIPs,
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
