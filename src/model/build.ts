/*
 * Services + EndpointSlices → the desired state every dataplane renders from.
 *
 * Mirrors kube-proxy's service change tracker and EndpointSliceCache: one entry per Service port;
 * Services kube-proxy would not proxy are skipped (headless, ExternalName, no IPv4 cluster IP, and
 * those its informer label selector filters out); endpoints come from the IPv4 slices labelled
 * with the Service's name, matched to a Service port by port name and protocol.
 * Pure: the same objects always give the same state, sorted, so states compare by value.
 */
import type { ClusterObjects, EndpointSliceObject, ServiceObject, ServicePortSpec } from './k8s.js';
import { selectEndpoints } from './endpoints.js';
import {
  servicePortKey,
  type DesiredState,
  type Endpoint,
  type NodeInfo,
  type Scheduler,
  type ServiceEntry,
  type ServicePort,
} from './types.js';
import { componentLogger } from '../log.js';

/** Services with either label are not kube-proxy's to handle (its informers' label selector). */
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const SCHEDULER_ANNOTATION = 'vipr.io/scheduler';

const SCHEDULERS: readonly Scheduler[] = ['random', 'rr', 'sh', 'maglev', 'lc'];

export type BuildWarningSink = (message: string) => void;

let modelLog: ReturnType<typeof componentLogger> | undefined;
const logWarning: BuildWarningSink = (message) => {
  modelLog ??= componentLogger('model');
  modelLog.warn(message);
};

function selectedByProxy(labels: Record<string, string>): boolean {
  return !(SERVICE_PROXY_NAME_LABEL in labels) && !(HEADLESS_LABEL in labels);
}

function schedulerOf(svc: ServiceObject, warn: BuildWarningSink): Scheduler | null {
  const value = svc.annotations[SCHEDULER_ANNOTATION];
  if (value === undefined) return null;
  if ((SCHEDULERS as readonly string[]).includes(value)) return value as Scheduler;
  warn(
    `Service ${svc.namespace}/${svc.name}: annotation ${SCHEDULER_ANNOTATION} ${JSON.stringify(value)} ` +
      `is not a scheduler; use one of ${SCHEDULERS.join(', ')} (using the node default meanwhile)`,
  );
  return null;
}

function toServicePort(svc: ServiceObject, port: ServicePortSpec, clusterIP: string, scheduler: Scheduler | null): ServicePort {
  // svc.type is not ExternalName here (filtered by the caller).
  const type = svc.type === 'ExternalName' ? 'ClusterIP' : svc.type;
  const typeIsExternal = type === 'NodePort' || type === 'LoadBalancer';
  // kube-proxy's ExternalPolicyLocal: the policy only means something for traffic that can
  // arrive from outside (NodePort / LoadBalancer types, or externalIPs).
  const externalPolicyLocal =
    svc.externalTrafficPolicy === 'Local' && (typeIsExternal || svc.externalIPs.length > 0);
  // kube-proxy's NeedsHealthCheck: LoadBalancer with externalTrafficPolicy Local.
  const needsHealthCheck = type === 'LoadBalancer' && externalPolicyLocal;
  return {
    id: { namespace: svc.namespace, name: svc.name, port: port.name, protocol: port.protocol },
    type,
    clusterIP,
    port: port.port,
    targetPort: port.targetPort,
    nodePort: port.nodePort,
    externalIPs: [...svc.externalIPs],
    loadBalancerIPs: [...svc.loadBalancerIPs],
    loadBalancerSourceRanges: [...svc.loadBalancerSourceRanges],
    affinityTimeoutSeconds: svc.affinityTimeoutSeconds,
    externalTrafficPolicy: externalPolicyLocal ? 'Local' : 'Cluster',
    internalTrafficPolicy: svc.internalTrafficPolicy,
    healthCheckNodePort: needsHealthCheck ? svc.healthCheckNodePort : 0,
    scheduler,
  };
}

function ipv4ToNumber(ip: string): number {
  return ip.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

/** By IP numerically, then port. */
export function compareEndpoints(a: Endpoint, b: Endpoint): number {
  return ipv4ToNumber(a.ip) - ipv4ToNumber(b.ip) || a.port - b.port;
}

/** Whether `candidate` should replace `existing` for the same ip:port seen in another slice. */
function preferOver(candidate: Endpoint, existing: Endpoint): boolean {
  // During a rollout an address can briefly sit in two slices; the live copy wins over the
  // terminating one. Between equals, kube-proxy favours the copy that says it is local.
  if (candidate.terminating !== existing.terminating) return !candidate.terminating;
  return candidate.isLocal && !existing.isLocal;
}

/** The endpoints of one Service port, deduplicated by ip:port and sorted. */
function endpointsFor(port: ServicePortSpec, slices: readonly EndpointSliceObject[], node: NodeInfo): Endpoint[] {
  const byAddress = new Map<string, Endpoint>();
  for (const slice of slices) {
    const slicePort = slice.ports.find((p) => p.name === port.name && p.protocol === port.protocol);
    if (!slicePort) continue;
    for (const e of slice.endpoints) {
      // kube-proxy uses the first address only; the others are, by API contract, the same pod.
      const ip = e.addresses[0];
      if (ip === undefined) continue;
      const ready = e.conditions.ready ?? true;
      const ep: Endpoint = {
        ip,
        port: slicePort.port,
        ready,
        serving: e.conditions.serving ?? ready,
        terminating: e.conditions.terminating ?? false,
        nodeName: e.nodeName,
        zone: e.zone,
        zoneHints: e.zoneHints === null ? null : [...e.zoneHints],
        isLocal: node.name !== '' && e.nodeName === node.name,
      };
      const id = `${ep.ip}:${ep.port}`;
      const existing = byAddress.get(id);
      if (!existing || preferOver(ep, existing)) byAddress.set(id, ep);
    }
  }
  return [...byAddress.values()].sort(compareEndpoints);
}

/** IPv4 slices by `namespace/serviceName`, each list in slice-name order (deterministic dedup). */
function slicesByService(objects: ClusterObjects, only: ReadonlySet<string> | null): Map<string, EndpointSliceObject[]> {
  const out = new Map<string, EndpointSliceObject[]>();
  const wanted = (s: EndpointSliceObject): boolean => only === null || (s.serviceName !== null && only.has(`${s.namespace}/${s.serviceName}`));
  const slices = [...objects.endpointSlices.values()].filter(wanted).sort((a, b) =>
    a.namespace === b.namespace ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.namespace < b.namespace ? -1 : 1,
  );
  for (const slice of slices) {
    if (slice.serviceName === null || slice.addressType !== 'IPv4') continue;
    const key = `${slice.namespace}/${slice.serviceName}`;
    const list = out.get(key);
    if (list) list.push(slice);
    else out.set(key, [slice]);
  }
  return out;
}

/**
 * Builds the desired state for `node`. Problems that do not stop a Service from working (an
 * invalid scheduler annotation) go to `warn`, by default the `model` logger. With `only`
 * (Service names `namespace/name`), just those Services' entries are built: the agent's partial
 * syncs, as kube-proxy updates only the services its change trackers name.
 */
export function buildDesiredState(
  objects: ClusterObjects,
  node: NodeInfo,
  warn: BuildWarningSink = logWarning,
  only: ReadonlySet<string> | null = null,
): DesiredState {
  const slices = slicesByService(objects, only);
  const services: ServiceEntry[] = [];
  const selected = only === null
    ? objects.services.values()
    : [...only].map((k) => objects.services.get(k)).filter((s): s is ServiceObject => s !== undefined);
  for (const svc of selected) {
    if (svc.type === 'ExternalName' || svc.clusterIP === null || !selectedByProxy(svc.labels)) continue;
    const clusterIP = svc.clusterIP;
    const scheduler = schedulerOf(svc, warn);
    const svcSlices = slices.get(`${svc.namespace}/${svc.name}`) ?? [];
    for (const port of svc.ports) {
      const service = toServicePort(svc, port, clusterIP, scheduler);
      const endpoints = endpointsFor(port, svcSlices, node);
      services.push({
        key: servicePortKey(service.id),
        service,
        endpoints,
        selection: selectEndpoints(endpoints, service, node),
      });
    }
  }
  services.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { node: { name: node.name, zone: node.zone, ips: [...node.ips] }, services };
}
