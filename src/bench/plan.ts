/*
 * What a benchmark run measures, as plain data: the dataplane modes, the service counts, the
 * measured services and where they sit, the durations. Pure, so the CLI and the tests agree on
 * it without root.
 *
 * The services of a run with N services: N Services `default/svc-NNNNNN` (sorted by name, which is
 * the order vipr's iptables renderer writes KUBE-SERVICES in), each with the lab's K backends.
 * The fillers have one TCP port; the measured Services have two named ports, `dns` (UDP) and
 * `web` (TCP), so the TCP port sorts last of the two: the `last` Service's TCP rule is the last
 * service rule iptables walks, its UDP rule the one before. A second measured Service sits at
 * index ⌊(N-1)/2⌋ (`middle`). Backends run the bench's echo responder on TCP 9000 / UDP 9053.
 *
 * With IPv6 measured too (`--families ipv4,ipv6`, the default) every Service is dual-stack: an
 * IPv6 cluster IP (fd00:10:100::<index+1>) beside the IPv4 one and an EndpointSlice per family,
 * so the IPv6 Service placed last is last among N IPv6 Services (in ip6tables' KUBE-SERVICES as
 * in the BPF maps), and the control-plane figures are those of N dual-stack Services.
 */
import { canonicalIp, joinHostPort, type IpFamily } from '../model/ip.js';

/**
 * `bpf` is the agent as it runs by default: socket LB for the node's processes (the lab's client
 * runs in the node's cgroup) and TC for the rest; `bpf-tc` is the same agent with
 * `--socket-lb off`, every packet through TC, so the two can be compared side by side.
 */
export type BenchMode = 'direct' | 'bpf' | 'bpf-tc' | 'iptables' | 'iptables-nft' | 'nftables' | 'ipvs';
/** The dataplanes compared (everything but the `direct` floor). */
export type DataplaneMode = Exclude<BenchMode, 'direct'>;
export const DATAPLANE_MODES: readonly DataplaneMode[] = ['bpf', 'bpf-tc', 'iptables', 'iptables-nft', 'nftables', 'ipvs'];

export type Placement = 'last' | 'middle';
export type TrafficMetric = 'rr' | 'crr' | 'udp';
export type ControlMetric = 'sync_all' | 'sync_one' | 'rss' | 'heap' | 'churn';
export type Metric = TrafficMetric | ControlMetric;
export const TRAFFIC_METRICS: readonly TrafficMetric[] = ['rr', 'crr', 'udp'];
export const CONTROL_METRICS: readonly ControlMetric[] = ['sync_all', 'sync_one', 'rss', 'heap', 'churn'];

export const RESPONDER_TCP_PORT = 9000;
export const RESPONDER_UDP_PORT = 9053;
export const SERVICE_TCP_PORT = 80;
export const SERVICE_UDP_PORT = 53;
export const BENCH_NAMESPACE = 'default';
/** Service VIPs: 10.100.0.1 up (10.101.134.160 at 100,000); nothing routes them, so any /15 outside the lab's nets does. */
const VIP_BASE = (10 << 24) | (100 << 16);
export const MAX_SERVICES = 100_000;
/**
 * Services per manifest file: the manifest source reads files of at most 64 MiB, and 10,000
 * Services with their EndpointSlices are ~7 MB of JSON.
 */
export const SERVICES_PER_MANIFEST_FILE = 10_000;
/**
 * The churn metric runs at service counts up to this one (kube-proxy's network programming SLI
 * is stated for clusters of this size); above it the fake API server's initial list alone would
 * dominate the cell's time.
 */
export const CHURN_MAX_SERVICES = 10_000;

/** Lab name suffix of each mode (lab names are at most 24 characters). */
const LAB_TAG: Record<BenchMode, string> = {
  direct: 'direct',
  bpf: 'bpf',
  'bpf-tc': 'bpftc',
  iptables: 'ipt',
  'iptables-nft': 'iptnft',
  nftables: 'nft',
  ipvs: 'ipvs',
};

export function labNameFor(prefix: string, mode: BenchMode): string {
  return `${prefix}-${LAB_TAG[mode]}`;
}

export interface Durations {
  rrMs: number;
  crrMs: number;
  udpMs: number;
  /** Discarded at the start of every traffic run. */
  warmupMs: number;
  /** sync_one is timed this many times per round (change, then revert: 2 syncs each). */
  changeRepeats: number;
  /** churn: endpoint changes per second, for this long. */
  churnPerSecond: number;
  churnMs: number;
}

export const FULL_DURATIONS: Durations = { rrMs: 1000, crrMs: 2000, udpMs: 1000, warmupMs: 250, changeRepeats: 5, churnPerSecond: 100, churnMs: 20_000 };
export const QUICK_DURATIONS: Durations = { rrMs: 200, crrMs: 300, udpMs: 200, warmupMs: 100, changeRepeats: 2, churnPerSecond: 20, churnMs: 1000 };

/** The families whose traffic a run measures: IPv4 always (control plane and churn are IPv4's), IPv6 beside it or not. */
export type BenchFamilies = readonly ['IPv4'] | readonly ['IPv4', 'IPv6'];
export const DEFAULT_BENCH_FAMILIES: BenchFamilies = ['IPv4', 'IPv6'];

export interface BenchPlan {
  modes: DataplaneMode[];
  /** Traffic is measured per family; with IPv6 every Service is dual-stack. */
  families: BenchFamilies;
  services: number[];
  backends: number;
  rounds: number;
  durations: Durations;
  /** Lab names are `<prefix>-<mode>`. */
  labPrefix: string;
  /** CPU the load generator and the responders are pinned to. */
  cpu: number;
  /**
   * rr, crr and udp only (`--traffic-only`): each mode's node is programmed by the agent once per
   * Service count (its rss and heap recorded), no sync_all, sync_one or churn, and rounds at the
   * same count measure the traffic again on what the agent installed. For runs where programming
   * 10,000 Services in every mode is most of the time (the VM lab, where IPVS's full sync takes
   * minutes) and the comparison wanted is the traffic.
   */
  trafficOnly?: boolean;
}

export function serviceName(index: number): string {
  return `svc-${String(index).padStart(6, '0')}`;
}

export function serviceVip(index: number): string {
  const n = VIP_BASE + index + 1;
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** The IPv6 cluster IP of Service `index`: fd00:10:100::1 up (fd00:10:100::1:86a0 at 100,000). */
export function serviceVip6(index: number): string {
  const n = index + 1;
  return canonicalIp(`fd00:10:100::${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`);
}

/** Index of the measured Service at `placement` among N, or null when N has no such distinct place. */
export function placementIndex(services: number, placement: Placement): number | null {
  if (placement === 'last') return services - 1;
  // With fewer than 3 services the middle is one of the ends.
  return services >= 3 ? Math.floor((services - 1) / 2) : null;
}

export function placementsFor(services: number): Placement[] {
  return (['last', 'middle'] as const).filter((p) => placementIndex(services, p) !== null);
}

/** The Service whose endpoints change for sync_one: not a measured one, unless N is that small. */
export function changedServiceIndex(services: number): number {
  const measured = new Set(placementsFor(services).map((p) => placementIndex(services, p)));
  for (let i = 0; i < services; i++) if (!measured.has(i)) return i;
  return 0;
}

export interface Target {
  tcp: string;
  udp: string;
}

/**
 * Where the load generator sends traffic for a mode (direct: the first backend itself), in
 * `family` (`firstBackendIp` of that family); IPv6 as `[ip]:port`.
 */
export function targetFor(mode: BenchMode, services: number, placement: Placement, firstBackendIp: string, family: IpFamily = 'IPv4'): Target {
  if (mode === 'direct') {
    return { tcp: joinHostPort(firstBackendIp, RESPONDER_TCP_PORT), udp: joinHostPort(firstBackendIp, RESPONDER_UDP_PORT) };
  }
  const index = placementIndex(services, placement);
  if (index === null) throw new RangeError(`no ${placement} placement among ${services} services`);
  const vip = family === 'IPv4' ? serviceVip(index) : serviceVip6(index);
  return { tcp: joinHostPort(vip, SERVICE_TCP_PORT), udp: joinHostPort(vip, SERVICE_UDP_PORT) };
}

/**
 * The Services whose endpoints the churn metric changes: every one but the measured ones (their
 * traffic is measured after the churn), or none when N holds nothing else or is above
 * CHURN_MAX_SERVICES.
 */
export function churnPool(services: number): number[] {
  if (services > CHURN_MAX_SERVICES) return [];
  const measured = new Set(placementsFor(services).map((p) => placementIndex(services, p)));
  const pool: number[] = [];
  for (let i = 0; i < services; i++) if (!measured.has(i)) pool.push(i);
  return pool;
}

type Json = Record<string, unknown>;

/**
 * The manifests of a run with `services` Services, as one `kind: List` (JSON parses ten times
 * faster than YAML at 10,000 Services, and the agent reads it through the same source).
 */
export function benchManifests(services: number, backendIps: readonly string[], nodeName: string, backendIps6: readonly string[] = []): Json {
  return { apiVersion: 'v1', kind: 'List', items: benchObjects(services, backendIps, nodeName, backendIps6) };
}

/**
 * The same manifests as files of at most SERVICES_PER_MANIFEST_FILE Services each (name → `kind:
 * List`), in service order: `services-00.json`, `services-01.json`, ...
 */
export function benchManifestFiles(
  services: number,
  backendIps: readonly string[],
  nodeName: string,
  backendIps6: readonly string[] = [],
): Map<string, Json> {
  const items = benchObjects(services, backendIps, nodeName, backendIps6);
  const files = new Map<string, Json>();
  // The Service and its EndpointSlice (one per family) per Service.
  const perFile = (backendIps6.length > 0 ? 3 : 2) * SERVICES_PER_MANIFEST_FILE;
  for (let start = 0, n = 0; start < items.length; start += perFile, n++) {
    files.set(`services-${String(n).padStart(2, '0')}.json`, { apiVersion: 'v1', kind: 'List', items: items.slice(start, start + perFile) });
  }
  return files;
}

/**
 * The EndpointSlice of bench Service `index` with `backendIps` as its endpoints, of addressType
 * `family` (the IPv6 one is named `<svc>-bench-ipv6`).
 */
export function benchEndpointSlice(index: number, services: number, backendIps: readonly string[], nodeName: string, family: IpFamily = 'IPv4'): Json {
  const name = serviceName(index);
  const both = placementsFor(services).some((p) => placementIndex(services, p) === index);
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      namespace: BENCH_NAMESPACE,
      name: family === 'IPv4' ? `${name}-bench` : `${name}-bench-ipv6`,
      labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'vipr-bench' },
    },
    addressType: family,
    ports: both
      ? [
          { name: 'dns', protocol: 'UDP', port: RESPONDER_UDP_PORT },
          { name: 'web', protocol: 'TCP', port: RESPONDER_TCP_PORT },
        ]
      : [{ name: '', protocol: 'TCP', port: RESPONDER_TCP_PORT }],
    endpoints: backendIps.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName })),
  };
}

/**
 * Every Service and EndpointSlice of a run with `services` Services, each Service before its
 * slice; with `backendIps6`, every Service is dual-stack and has an IPv6 slice too.
 */
export function benchObjects(services: number, backendIps: readonly string[], nodeName: string, backendIps6: readonly string[] = []): Json[] {
  const dual = backendIps6.length > 0;
  if (!Number.isInteger(services) || services < 1 || services > MAX_SERVICES) {
    throw new RangeError(`services must be a whole number from 1 to ${MAX_SERVICES}, got ${services}`);
  }
  const measured = new Set(placementsFor(services).map((p) => placementIndex(services, p)));
  const items: Json[] = [];
  for (let i = 0; i < services; i++) {
    const name = serviceName(i);
    const both = measured.has(i);
    const ports = both
      ? [
          { name: 'dns', protocol: 'UDP', port: SERVICE_UDP_PORT, targetPort: RESPONDER_UDP_PORT },
          { name: 'web', protocol: 'TCP', port: SERVICE_TCP_PORT, targetPort: RESPONDER_TCP_PORT },
        ]
      : [{ name: '', protocol: 'TCP', port: SERVICE_TCP_PORT, targetPort: RESPONDER_TCP_PORT }];
    const families = dual ? { clusterIPs: [serviceVip(i), serviceVip6(i)], ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'RequireDualStack' } : { clusterIPs: [serviceVip(i)] };
    items.push({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { namespace: BENCH_NAMESPACE, name },
      spec: { type: 'ClusterIP', clusterIP: serviceVip(i), ...families, ports },
    });
    items.push(benchEndpointSlice(i, services, backendIps, nodeName));
    if (dual) items.push(benchEndpointSlice(i, services, backendIps6, nodeName, 'IPv6'));
  }
  return items;
}
