/*
 * The lab's Kubernetes objects: the default manifests `up` writes (a TCP ClusterIP service and a
 * UDP one, each with an EndpointSlice listing the lab's backends), and a summary of whatever
 * services a manifests directory holds, for `status`. The summary is a lenient read meant for
 * display only: the agent's source (src/sources/) is what validates manifests for real.
 */
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
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

function asRecord(v: unknown): Record<string, unknown> | null {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

function asArray(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function str(v: unknown, fallback: string): string {
  return typeof v === 'string' ? v : fallback;
}

interface SliceSummary {
  namespace: string;
  serviceName: string;
  ports: { name: string; protocol: string; port: number }[];
  addresses: string[];
}

function sliceSummary(obj: Record<string, unknown>): SliceSummary | null {
  const meta = asRecord(obj.metadata) ?? {};
  const labels = asRecord(meta.labels) ?? {};
  const serviceName = labels['kubernetes.io/service-name'];
  if (typeof serviceName !== 'string') return null;
  const addresses: string[] = [];
  for (const ep of asArray(obj.endpoints)) {
    const e = asRecord(ep);
    if (!e) continue;
    // As kube-proxy: a missing `ready` condition counts as ready.
    if (asRecord(e.conditions)?.ready === false) continue;
    const first = asArray(e.addresses)[0];
    if (typeof first === 'string') addresses.push(first);
  }
  return {
    namespace: str(meta.namespace, 'default'),
    serviceName,
    ports: asArray(obj.ports).flatMap((p) => {
      const r = asRecord(p);
      return r && typeof r.port === 'number' ? [{ name: str(r.name, ''), protocol: str(r.protocol, 'TCP'), port: r.port }] : [];
    }),
    addresses,
  };
}

/** Reads every .yaml/.yml/.json file of `dir` (not recursive) and summarises its Services. */
export async function summarizeManifestDir(dir: string): Promise<ManifestDirSummary> {
  const problems: string[] = [];
  let files: string[];
  try {
    files = (await readdir(dir)).filter((f) => /\.(ya?ml|json)$/.test(f)).sort();
  } catch (err) {
    return { services: [], problems: [`${dir}: ${(err as Error).message}`] };
  }
  const services: { obj: Record<string, unknown> }[] = [];
  const slices: SliceSummary[] = [];
  for (const file of files) {
    const path = join(dir, file);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      problems.push(`${path}: ${(err as Error).message}`);
      continue;
    }
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length > 0) {
        problems.push(`${path}: ${doc.errors[0]?.message.split('\n')[0] ?? 'YAML error'}`);
        continue;
      }
      const obj = asRecord(doc.toJS());
      if (!obj) continue;
      // A `kind: List` (kubectl get -o yaml) holds its objects in items.
      const objects: Record<string, unknown>[] =
        obj.kind === 'List'
          ? asArray(obj.items)
              .map(asRecord)
              .filter((i): i is Record<string, unknown> => i !== null)
          : [obj];
      for (const o of objects) {
        if (o.kind === 'Service') services.push({ obj: o });
        else if (o.kind === 'EndpointSlice') {
          const s = sliceSummary(o);
          if (s) slices.push(s);
        }
      }
    }
  }
  const summaries = services.map(({ obj }) => {
    const meta = asRecord(obj.metadata) ?? {};
    const spec = asRecord(obj.spec) ?? {};
    const namespace = str(meta.namespace, 'default');
    const name = str(meta.name, '?');
    const own = slices.filter((s) => s.namespace === namespace && s.serviceName === name);
    const ports = asArray(spec.ports).flatMap((p): ServicePortSummary[] => {
      const r = asRecord(p);
      if (!r || typeof r.port !== 'number') return [];
      const portName = str(r.name, '');
      const protocol = str(r.protocol, 'TCP');
      const endpoints = own.flatMap((s) =>
        s.ports
          .filter((sp) => sp.name === portName && sp.protocol === protocol)
          .flatMap((sp) => s.addresses.map((a) => `${a}:${sp.port}`)),
      );
      const targetPort = typeof r.targetPort === 'number' || typeof r.targetPort === 'string' ? r.targetPort : r.port;
      return [{ name: portName, protocol, port: r.port, targetPort, endpoints }];
    });
    const clusterIP = typeof spec.clusterIP === 'string' && spec.clusterIP !== 'None' ? spec.clusterIP : null;
    return { namespace, name, type: str(spec.type, 'ClusterIP'), clusterIP, ports };
  });
  summaries.sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  return { services: summaries, problems };
}
