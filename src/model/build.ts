/*
 * Services + EndpointSlices → the desired state every dataplane renders from.
 *
 * Mirrors kube-proxy's service change trackers and EndpointSliceCaches, one per IP family as its
 * dual-stack proxier runs them: one entry per (Service port, family the Service has a cluster IP
 * of), each with only that family's addresses; Services kube-proxy would not proxy are skipped
 * (headless, ExternalName, no cluster IP, and those its informer label selector filters out);
 * endpoints come from the slices of the entry's family labelled with the Service's name, matched
 * to a Service port by port name and protocol. A family the node does not serve (no node IP of
 * it) is left out, with one line per family.
 *
 * Three steps, each also used on its own by the agent's partial syncs (src/sync/agent.ts):
 *   admitService: the node's options (--external-ip-cidrs, --nodeport-range) applied;
 *   FrontendOwners (./ownership.ts): one owner per frontend, the losers' claims left out;
 *   buildServiceEntries: the entries of one Service. A Service whose build throws is that
 *   Service's failure alone: it is skipped with a line, the others are built.
 * Pure: the same objects always give the same state, sorted, so states compare by value.
 */
import type { ClusterObjects, EndpointSliceObject, ServiceObject, ServicePortSpec } from './k8s.js';
import { selectEndpoints } from './endpoints.js';
import {
  serviceEntryKey,
  type DesiredState,
  LB_MODES,
  type Endpoint,
  type LbMode,
  type NodeInfo,
  type Scheduler,
  type ServiceEntry,
  type ServicePort,
} from './types.js';
import { componentLogger } from '../log.js';
import { IP_FAMILIES, cidrFamily, cidrHas, compareIps, familyOf, parseCidr, type IpFamily } from './ip.js';
import { FrontendOwners, addressFrontend, describeConflict, nodePortFrontend } from './ownership.js';
import { compareEntries } from './sorted-entries.js';

/** Services with either label are not kube-proxy's to handle (its informers' label selector). */
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const SCHEDULER_ANNOTATION = 'vipr.io/scheduler';
export const LB_MODE_ANNOTATION = 'vipr.io/lb-mode';

const SCHEDULERS: readonly Scheduler[] = ['random', 'rr', 'sh', 'maglev', 'lc'];

export type BuildWarningSink = (message: string) => void;

let modelLog: ReturnType<typeof componentLogger> | undefined;
function log(): ReturnType<typeof componentLogger> {
  modelLog ??= componentLogger('model');
  return modelLog;
}
const logWarning: BuildWarningSink = (message) => log().warn(message);

/** What the node's options hold every Service to. */
export interface BuildOptions {
  /**
   * Node ports a Service may use (--nodeport-range), for manifests: the API server enforces its
   * own range and its allocations are trusted as they are (null), as kube-proxy trusts them.
   */
  nodePortRange: readonly [number, number] | null;
  /** --external-ip-cidrs (both families): externalIPs outside these CIDRs are not programmed; [] = any. */
  externalIPCIDRs: readonly string[];
  /**
   * The families this node serves: those it has a node IP of (src/cli/run.ts). A Service's
   * addresses of another family are not programmed, as kube-proxy runs no proxier for it.
   */
  families: readonly IpFamily[];
}

export const DEFAULT_BUILD_OPTIONS: BuildOptions = { nodePortRange: null, externalIPCIDRs: [], families: IP_FAMILIES };

/**
 * The families a node with `nodeIps` serves: those it has an address of (kube-proxy runs no
 * proxier for a family the node has no IP of); both when no address is known (a manifest source
 * without --node-ip: nothing says which family the node lacks).
 */
export function servedFamilies(nodeIps: readonly string[]): IpFamily[] {
  const families = IP_FAMILIES.filter((f) => nodeIps.some((ip) => familyOf(ip) === f));
  return families.length === 0 ? [...IP_FAMILIES] : families;
}

/**
 * Says once per family, for as long as it lives, that the node does not serve that family: the
 * agent keeps one across syncs, buildDesiredState one per build. Not per Service, not per sync.
 */
export class UnservedFamilies {
  private readonly said = new Set<IpFamily>();

  note(family: IpFamily, service: string, warn: BuildWarningSink): void {
    if (this.said.has(family)) return;
    this.said.add(family);
    warn(
      `${family}: this node has no ${family} node IP (give one with --node-ip), so ${family} Service addresses are not programmed ` +
        `(the first skipped: Service ${service}'s; this is said once)`,
    );
  }
}

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

function lbModeOf(svc: ServiceObject, warn: BuildWarningSink): LbMode | null {
  const value = svc.annotations[LB_MODE_ANNOTATION];
  if (value === undefined) return null;
  if ((LB_MODES as readonly string[]).includes(value)) return value as LbMode;
  warn(
    `Service ${svc.namespace}/${svc.name}: annotation ${LB_MODE_ANNOTATION} ${JSON.stringify(value)} ` +
      `is not an lb mode; use one of ${LB_MODES.join(', ')} (using the node's --lb-mode meanwhile)`,
  );
  return null;
}

/** Keeps the addresses of `families`; the list itself when all are (the usual single-family case). */
function ofFamilies(ips: string[], families: readonly IpFamily[]): string[] {
  if (ips.length === 0 || families.length === 2) return ips;
  const kept = ips.filter((ip) => families.includes(familyOf(ip) as IpFamily));
  return kept.length === ips.length ? ips : kept;
}

function cidrsOfFamilies(cidrs: string[], families: readonly IpFamily[]): string[] {
  if (cidrs.length === 0 || families.length === 2) return cidrs;
  const kept = cidrs.filter((c) => families.includes(cidrFamily(c) as IpFamily));
  return kept.length === cidrs.length ? cidrs : kept;
}

/**
 * The Service as this node proxies it, or null when it does not (headless, ExternalName, no
 * cluster IP of a family the node serves, another service proxy's): cluster IPs of a family the
 * node does not serve are dropped (`unserved` says so once per family); external and load-balancer
 * IPs and source ranges of a family the Service has no cluster IP of are dropped (kube-proxy's
 * per-family proxiers never see them); externalIPs outside --external-ip-cidrs and node ports
 * outside --nodeport-range are dropped, each with a line; the rest of the Service stays.
 */
export function admitService(
  svc: ServiceObject,
  opts: BuildOptions,
  warn: BuildWarningSink,
  unserved: UnservedFamilies = new UnservedFamilies(),
): ServiceObject | null {
  if (svc.type === 'ExternalName' || svc.clusterIPs.length === 0 || !selectedByProxy(svc.labels)) return null;
  const subject = `Service ${svc.namespace}/${svc.name}`;
  let clusterIPs = svc.clusterIPs;
  let families: IpFamily[] = clusterIPs.map((ip) => familyOf(ip) as IpFamily);
  if (families.some((f) => !opts.families.includes(f))) {
    for (const f of families) if (!opts.families.includes(f)) unserved.note(f, `${svc.namespace}/${svc.name}`, warn);
    clusterIPs = clusterIPs.filter((_, i) => opts.families.includes(families[i] as IpFamily));
    families = families.filter((f) => opts.families.includes(f));
    if (clusterIPs.length === 0) return null;
  }
  let externalIPs = ofFamilies(svc.externalIPs, families);
  const loadBalancerIPs = ofFamilies(svc.loadBalancerIPs, families);
  const loadBalancerSourceRanges = cidrsOfFamilies(svc.loadBalancerSourceRanges, families);
  if (opts.externalIPCIDRs.length > 0 && externalIPs.length > 0) {
    const cidrs = opts.externalIPCIDRs.map((c) => parseCidr(c));
    const before = externalIPs;
    externalIPs = externalIPs.filter((ip) => {
      if (cidrs.some((c) => cidrHas(c, ip))) return true;
      warn(`${subject}: spec.externalIPs ${ip} is outside --external-ip-cidrs ${opts.externalIPCIDRs.join(',')}; address not programmed`);
      return false;
    });
    if (externalIPs.length === before.length) externalIPs = before;
  }
  const range = opts.nodePortRange;
  let ports = svc.ports;
  if (range !== null && ports.some((p) => p.nodePort > 0 && (p.nodePort < range[0] || p.nodePort > range[1]))) {
    ports = ports.map((p, i) => {
      if (p.nodePort === 0 || (p.nodePort >= range[0] && p.nodePort <= range[1])) return p;
      warn(`${subject}: spec.ports[${i}].nodePort ${p.nodePort} is outside --nodeport-range ${range[0]}-${range[1]}; that node port is not programmed (pick one in the range)`);
      return { ...p, nodePort: 0 };
    });
  }
  const unchanged =
    clusterIPs === svc.clusterIPs &&
    externalIPs === svc.externalIPs &&
    loadBalancerIPs === svc.loadBalancerIPs &&
    loadBalancerSourceRanges === svc.loadBalancerSourceRanges &&
    ports === svc.ports;
  if (unchanged) return svc;
  const ipFamilies = clusterIPs === svc.clusterIPs ? svc.ipFamilies : families;
  return { ...svc, clusterIPs, ipFamilies, externalIPs, loadBalancerIPs, loadBalancerSourceRanges, ports };
}

/** One family's share of an admitted Service's addresses. */
interface FamilyAddresses {
  family: IpFamily;
  clusterIP: string;
  externalIPs: string[];
  loadBalancerIPs: string[];
  loadBalancerSourceRanges: string[];
}

function familyAddresses(svc: ServiceObject): FamilyAddresses[] {
  if (svc.clusterIPs.length === 1) {
    // Admitted: every address is of the one cluster IP's family.
    const clusterIP = svc.clusterIPs[0] as string;
    const family = familyOf(clusterIP) as IpFamily;
    return [{ family, clusterIP, externalIPs: svc.externalIPs, loadBalancerIPs: svc.loadBalancerIPs, loadBalancerSourceRanges: svc.loadBalancerSourceRanges }];
  }
  return svc.clusterIPs.map((clusterIP) => {
    const family = familyOf(clusterIP) as IpFamily;
    return {
      family,
      clusterIP,
      externalIPs: svc.externalIPs.filter((ip) => familyOf(ip) === family),
      loadBalancerIPs: svc.loadBalancerIPs.filter((ip) => familyOf(ip) === family),
      loadBalancerSourceRanges: svc.loadBalancerSourceRanges.filter((c) => cidrFamily(c) === family),
    };
  });
}

function toServicePort(
  svc: ServiceObject,
  port: ServicePortSpec,
  addrs: FamilyAddresses,
  scheduler: Scheduler | null,
  lbMode: LbMode | null,
  owners: FrontendOwners,
): ServicePort {
  // svc.type is not ExternalName here (filtered by the caller).
  const type = svc.type === 'ExternalName' ? 'ClusterIP' : svc.type;
  const typeIsExternal = type === 'NodePort' || type === 'LoadBalancer';
  // kube-proxy's ExternalPolicyLocal: the policy only means something for traffic that can
  // arrive from outside (NodePort / LoadBalancer types, or externalIPs).
  const externalPolicyLocal =
    svc.externalTrafficPolicy === 'Local' && (typeIsExternal || svc.externalIPs.length > 0);
  // kube-proxy's NeedsHealthCheck: LoadBalancer with externalTrafficPolicy Local.
  const needsHealthCheck = type === 'LoadBalancer' && externalPolicyLocal;
  const name = `${svc.namespace}/${svc.name}`;
  const nodePort = port.nodePort > 0 && owners.owns(name, 'nodePort', nodePortFrontend(port.nodePort, port.protocol)) ? port.nodePort : 0;
  return {
    id: { namespace: svc.namespace, name: svc.name, port: port.name, protocol: port.protocol },
    family: addrs.family,
    type,
    clusterIP: addrs.clusterIP,
    port: port.port,
    targetPort: port.targetPort,
    nodePort,
    externalIPs: addrs.externalIPs.filter((ip) => owners.owns(name, 'externalIPs', addressFrontend(ip, port.port, port.protocol))),
    loadBalancerIPs: addrs.loadBalancerIPs.filter((ip) => owners.owns(name, 'loadBalancerIP', addressFrontend(ip, port.port, port.protocol))),
    loadBalancerSourceRanges: [...addrs.loadBalancerSourceRanges],
    affinityTimeoutSeconds: svc.affinityTimeoutSeconds,
    externalTrafficPolicy: externalPolicyLocal ? 'Local' : 'Cluster',
    internalTrafficPolicy: svc.internalTrafficPolicy,
    healthCheckNodePort: needsHealthCheck ? svc.healthCheckNodePort : 0,
    scheduler,
    // Only when annotated: states built before lb modes existed compare equal to today's.
    ...(lbMode === null ? {} : { lbMode }),
  };
}

function ipv4ToNumber(ip: string): number {
  return ip.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
}

/**
 * By IP numerically (IPv4 before IPv6), then port. Two IPv4 addresses, the hot case of a large
 * build, compare as numbers without a Buffer each.
 */
export function compareEndpoints(a: Endpoint, b: Endpoint): number {
  if (!a.ip.includes(':') && !b.ip.includes(':')) return ipv4ToNumber(a.ip) - ipv4ToNumber(b.ip) || a.port - b.port;
  return compareIps(a.ip, b.ip) || a.port - b.port;
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

/** Objects as the builder reads them (the tracker's live view or a snapshot). */
export interface ObjectsView {
  services: ReadonlyMap<string, ServiceObject>;
  endpointSlices: ReadonlyMap<string, EndpointSliceObject>;
}

const byName = (a: EndpointSliceObject, b: EndpointSliceObject): number => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

/**
 * IPv4 and IPv6 slices by `namespace/serviceName`, each list in slice-name order (deterministic
 * dedup); buildServiceEntries picks each family's. Slices vipr does not proxy get a debug line.
 */
export function slicesByService(objects: ObjectsView): Map<string, EndpointSliceObject[]> {
  const out = new Map<string, EndpointSliceObject[]>();
  const debug = log().isLevelEnabled('debug');
  for (const slice of objects.endpointSlices.values()) {
    const subject = `EndpointSlice ${slice.namespace}/${slice.name}`;
    if (slice.serviceName === null) {
      if (debug) log().debug(`${subject}: no kubernetes.io/service-name label; ignored`);
      continue;
    }
    const key = `${slice.namespace}/${slice.serviceName}`;
    if (slice.addressType === 'FQDN') {
      if (debug) log().debug(`${subject}: addressType FQDN is not proxied (kube-proxy proxies IPv4 and IPv6); ignored`);
      continue;
    }
    if (debug && !objects.services.has(key)) log().debug(`${subject}: its Service ${key} is not known (yet); kept for when it is`);
    const list = out.get(key);
    if (list) list.push(slice);
    else out.set(key, [slice]);
  }
  for (const list of out.values()) if (list.length > 1) list.sort(byName);
  return out;
}

/** The slices of one family; the list itself when all are (the usual single-family case). */
function slicesOfFamily(slices: readonly EndpointSliceObject[], family: IpFamily): readonly EndpointSliceObject[] {
  return slices.every((s) => s.addressType === family) ? slices : slices.filter((s) => s.addressType === family);
}

/**
 * The entries of one admitted Service (see admitService): one per (port, family of a cluster IP),
 * with the frontends `owners` gives to other Services left out. A port whose cluster IP frontend
 * another Service owns is left out in that family: only manifests can say that (the API server
 * never allocates one address twice).
 */
export function buildServiceEntries(
  svc: ServiceObject,
  slices: readonly EndpointSliceObject[],
  node: NodeInfo,
  owners: FrontendOwners,
  warn: BuildWarningSink,
): ServiceEntry[] {
  const name = `${svc.namespace}/${svc.name}`;
  const scheduler = schedulerOf(svc, warn);
  const lbMode = lbModeOf(svc, warn);
  const out: ServiceEntry[] = [];
  for (const addrs of familyAddresses(svc)) {
    if (addrs.family === 'IPv6' && (lbMode === 'dsr' || lbMode === 'hybrid') && svc.type !== 'ClusterIP') {
      warn(
        `Service ${name}: annotation ${LB_MODE_ANNOTATION} ${JSON.stringify(lbMode)} applies to its IPv4 frontends only; ` +
          `the IPv6 ones use SNAT (vipr carries the frontend in an IPv4 option)`,
      );
    }
    // Only this family's slices (the caller hands over all of a Service's slices).
    const ofFamily = slicesOfFamily(slices, addrs.family);
    for (const port of svc.ports) {
      if (!owners.owns(name, 'clusterIP', addressFrontend(addrs.clusterIP, port.port, port.protocol))) continue;
      const service = toServicePort(svc, port, addrs, scheduler, lbMode, owners);
      const endpoints = endpointsFor(port, ofFamily, node);
      out.push({
        key: serviceEntryKey(service.id, addrs.family),
        service,
        endpoints,
        selection: selectEndpoints(endpoints, service, node),
      });
    }
  }
  return out;
}

/** One line for an error thrown while building `service`. */
export function buildFailure(service: string, err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return `Service ${service}: cannot be built (${message.split('\n')[0]?.slice(0, 200)}); skipped, the other Services are not affected`;
}


/**
 * Builds the whole desired state for `node`. Problems that do not stop a Service from working
 * (an invalid scheduler annotation, a frontend another Service owns, an address the node's
 * options exclude) go to `warn`, by default the `model` logger; a Service that cannot be built
 * at all is skipped with a line.
 */
export function buildDesiredState(
  objects: ObjectsView,
  node: NodeInfo,
  warn: BuildWarningSink = logWarning,
  options: BuildOptions = DEFAULT_BUILD_OPTIONS,
): DesiredState {
  const owners = new FrontendOwners();
  const unserved = new UnservedFamilies();
  const admitted = new Map<string, ServiceObject>();
  for (const [key, svc] of objects.services) {
    const a = admitService(svc, options, warn, unserved);
    if (a === null) continue;
    admitted.set(key, a);
    owners.set(key, a);
  }
  const slices = slicesByService(objects);
  const services: ServiceEntry[] = [];
  for (const [key, svc] of admitted) {
    for (const c of owners.conflicts(key)) warn(describeConflict(c));
    try {
      services.push(...buildServiceEntries(svc, slices.get(key) ?? [], node, owners, warn));
    } catch (err) {
      warn(buildFailure(key, err));
    }
  }
  services.sort(compareEntries);
  return { node: { name: node.name, zone: node.zone, ips: [...node.ips] }, services };
}
