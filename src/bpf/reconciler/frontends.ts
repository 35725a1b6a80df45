/*
 * Pure: the desired state's Service ports expanded into the frontends the BPF datapath matches
 * (address, port, protocol, scope), each with its backends and its slot layout. No map is read or
 * written here; the reconciler (./reconciler.ts) diffs these against what it has written.
 *
 * Both families go through the same code: an entry's addresses are all of its family (the model
 * splits a dual-stack Service in two), IPv6 ones in canonical text, and the reconciler picks the
 * family's maps by the address. Frontend ids carry the address as ipvsadm writes it (`[v6]:port`),
 * so the two families' frontends never share an id, NodePort's `0.0.0.0` and `::` included.
 */
import type { DesiredState, Endpoint, LbMode, Scheduler, ServiceEntry } from '../../model/types.js';
import { serviceOfEntryKey } from '../../model/types.js';
import {
  BE_F_LOCAL, BE_F_TERMINATING, IPPROTO_TCP, IPPROTO_UDP, NODEPORT_VIP, NODEPORT_VIP6, SCOPE_EXTERNAL, SCOPE_INTERNAL,
  SVC_F_AFFINITY, SVC_F_DSR, SVC_F_EXTERNAL, SVC_F_LOCAL, SVC_F_REJECT, SVC_F_SOURCE_RANGES,
  type BackendT, type SourceRangeT, type SvcKeyT,
} from '../layouts.js';
import { maglevTable, maglevTableSize } from '../../model/maglev.js';
import { formatIpv6, joinHostPort, normalizeCidr, parseCidr } from '../../model/ip.js';
import { componentLogger } from '../../log.js';

const log = componentLogger('bpf-sync');

/** The most slots one frontend can have: the datapath's backend_count is 16 bits. */
const MAX_SLOTS = 0xffff;

/** One frontend as the datapath sees it. */
export interface Frontend {
  /** ServiceEntry.key it came from (`ns/name:port`, ` IPv6` appended for IPv6). */
  service: string;
  key: SvcKeyT;
  flags: number;
  affinityTimeout: number;
  scheduler: Scheduler;
  /** The backends, one per endpoint. */
  backends: BackendT[];
  /** loadBalancerSourceRanges (of the frontend's family), normalised `a.b.c.d/n` or `fd00::/n`. */
  sourceRanges: string[];
}

const PROTO: Record<string, number | undefined> = { TCP: IPPROTO_TCP, UDP: IPPROTO_UDP };

/** `namespace/name` of a service port key (`namespace/name:port` or `namespace/name`). */
export function serviceOfKey(key: string): string {
  return serviceOfEntryKey(key);
}

/** Whether an address (or CIDR) of a frontend, backend or range is IPv6: it picks the family's maps. */
export function isIpv6(addr: string): boolean {
  return addr.includes(':');
}

/** `vip:port/proto/scope`, `[vip]:port/proto/scope` for IPv6. */
export function frontendId(k: SvcKeyT): string {
  return `${joinHostPort(k.vip, k.port)}/${k.proto}/${k.scope}`;
}

export function frontendKey(fid: string): SvcKeyT {
  const [hostPort, proto, scope] = fid.split('/') as [string, string, string];
  const colon = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, colon);
  const vip = host.startsWith('[') ? host.slice(1, -1) : host;
  return { vip, port: Number(hostPort.slice(colon + 1)), proto: Number(proto), scope: Number(scope) };
}

export function backendKey(b: BackendT): string {
  return `${joinHostPort(b.addr, b.port)}/${b.proto}`;
}

function toBackend(e: Endpoint, proto: number): BackendT {
  return {
    addr: e.ip,
    port: e.port,
    proto,
    flags: (e.terminating ? BE_F_TERMINATING : 0) | (e.isLocal ? BE_F_LOCAL : 0),
  };
}

/** The LPM key of a source range, either family (the family's map is the caller's choice, by isIpv6). */
export function rangeKey(svcId: number, cidr: string): SourceRangeT {
  const { family, network, prefix } = parseCidr(cidr);
  const addr = family === 'IPv6' ? formatIpv6(network) : [...network].join('.');
  return { prefixlen: 32 + prefix, svc_id: svcId, addr };
}

export function rangeOf(k: SourceRangeT): string {
  return `${k.addr}/${k.prefixlen - 32}`;
}

/**
 * The frontends of the desired state, as kube-proxy would serve them:
 *  - the cluster IP, for internal traffic (internalTrafficPolicy picks the endpoints);
 *  - NodePort (on every node address), external IPs and LoadBalancer IPs, for external traffic
 *    (externalTrafficPolicy picks the endpoints; Cluster SNATs flows to other nodes' backends).
 *    With externalTrafficPolicy Local, each also gets an internal-scope entry with the cluster
 *    endpoints, so pods reaching them are not limited to this node's endpoints (kube-proxy does
 *    the same for traffic from the cluster CIDR).
 * A service without any endpoint rejects (ICMP port unreachable); one whose policy leaves it
 * no endpoint on this node drops, as kube-proxy's rules do.
 */
export function bpfFrontends(
  state: DesiredState,
  defaultScheduler: Scheduler,
  defaultLbMode: LbMode = 'snat',
): { frontends: Frontend[]; skipped: string[] } {
  const frontends: Frontend[] = [];
  const skipped: string[] = [];
  for (const entry of state.services) {
    try {
      const own: Frontend[] = [];
      expandEntry(entry, defaultScheduler, defaultLbMode, own, skipped);
      frontends.push(...own);
    } catch (err) {
      skipped.push(`${entry.key}: cannot be expanded into frontends (${(err as Error).message}); not programmed`);
    }
  }
  // Two Services claiming one frontend: the model gave each frontend one owner
  // (src/model/ownership.ts), so this only guards the maps against a state built without it.
  const seen = new Set<string>();
  const unique = frontends.filter((f) => {
    const id = frontendId(f.key);
    if (seen.has(id)) {
      skipped.push(`${f.service}: ${joinHostPort(f.key.vip, f.key.port)} is already used by another Service`);
      return false;
    }
    seen.add(id);
    return true;
  });
  return { frontends: unique, skipped };
}

/**
 * Whether external frontends of `entry` send remote backends' replies straight to the client
 * (bpf/lib/dsr.h): its `vipr.io/lb-mode`, else the node's --lb-mode; `hybrid` is DSR for TCP only.
 * IPv4 only: IPv6 frontends stay on SNAT.
 */
export function usesDsr(entry: ServiceEntry, defaultLbMode: LbMode): boolean {
  const mode = entry.service.lbMode ?? defaultLbMode;
  if (entry.service.family !== 'IPv4') return false;
  return mode === 'dsr' || (mode === 'hybrid' && entry.service.id.protocol === 'TCP');
}

function expandEntry(entry: ServiceEntry, defaultScheduler: Scheduler, defaultLbMode: LbMode, frontends: Frontend[], skipped: string[]): void {
  const svc = entry.service;
  const proto = PROTO[svc.id.protocol];
  if (proto === undefined) {
    skipped.push(`${entry.key}: protocol ${svc.id.protocol} is not handled by the BPF dataplane`);
    return;
  }
  const sel = entry.selection;
  const reject = sel.hasAnyEndpoints ? 0 : SVC_F_REJECT;
  const affinity = svc.affinityTimeoutSeconds > 0 ? SVC_F_AFFINITY : 0;
  const base = { service: entry.key, affinityTimeout: svc.affinityTimeoutSeconds, scheduler: svc.scheduler ?? defaultScheduler };
  const add = (vip: string, port: number, scope: number, flags: number, eps: Endpoint[], ranges: string[] = []): void => {
    frontends.push({
      ...base,
      key: { vip, port, proto, scope },
      flags: flags | affinity | reject | (ranges.length > 0 ? SVC_F_SOURCE_RANGES : 0),
      backends: eps.map((e) => toBackend(e, proto)),
      sourceRanges: ranges,
    });
  };
  const itpLocal = svc.internalTrafficPolicy === 'Local';
  add(svc.clusterIP, svc.port, SCOPE_EXTERNAL, itpLocal ? SVC_F_LOCAL : 0, itpLocal ? sel.localEndpoints : sel.clusterEndpoints);

  const etpLocal = svc.externalTrafficPolicy === 'Local';
  const externalEps = etpLocal ? sel.localEndpoints : sel.clusterEndpoints;
  // Local policy has no remote backends to return directly from.
  const dsr = !etpLocal && usesDsr(entry, defaultLbMode) ? SVC_F_DSR : 0;
  const external = (vip: string, port: number, ranges: string[] = []): void => {
    add(vip, port, SCOPE_EXTERNAL, SVC_F_EXTERNAL | dsr | (etpLocal ? SVC_F_LOCAL : 0), externalEps, ranges);
    if (etpLocal) add(vip, port, SCOPE_INTERNAL, 0, sel.clusterEndpoints, ranges);
  };
  if (svc.nodePort > 0) external(svc.family === 'IPv6' ? NODEPORT_VIP6 : NODEPORT_VIP, svc.nodePort);
  for (const ip of svc.externalIPs) external(ip, svc.port);
  const ranges = svc.loadBalancerSourceRanges.map((c) => normalizeCidr(c));
  for (const ip of svc.loadBalancerIPs) external(ip, svc.port, ranges);
}

/**
 * The slots of a frontend and the scheduler that reads them: one slot per backend, or the Maglev
 * table. Values index `backends`. A Maglev table keeps its current size while that still fits
 * the backends (at least 100 slots each, at most 8 times the size it would get new, never above
 * the node's cap): slot positions depend on the size, so a new size would move almost every
 * flow. More backends than the largest table can hold fall back to `random`, with a line; more
 * than the datapath can count fail this frontend alone (thrown, caught by the caller).
 */
export function slotLayout(f: Frontend, currentMaglevSize: number | null, maxSize: number): { slots: number[]; scheduler: Scheduler } {
  if (f.backends.length > MAX_SLOTS) {
    throw new RangeError(`${f.backends.length} endpoints exceed the ${MAX_SLOTS} a BPF frontend can hold`);
  }
  if (f.scheduler !== 'maglev') return { slots: f.backends.map((_, i) => i), scheduler: f.scheduler };
  const fresh = maglevTableSize(f.backends.length, maxSize);
  if (fresh === null) {
    log.warn(
      { svc: f.service },
      `${f.service}: ${f.backends.length} endpoints do not fit a Maglev table of at most ${maxSize} slots (--maglev-table-size); using the random scheduler`,
    );
    return { slots: f.backends.map((_, i) => i), scheduler: 'random' };
  }
  const keep = currentMaglevSize !== null && currentMaglevSize >= 100 * f.backends.length && currentMaglevSize <= 8 * fresh && currentMaglevSize <= maxSize;
  return { slots: maglevTable(f.backends.map((b) => `${b.addr}:${b.port}`), keep ? currentMaglevSize : fresh), scheduler: 'maglev' };
}

