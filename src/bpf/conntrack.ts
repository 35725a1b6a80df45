/*
 * vipr's conntrack seen from user space: flows (a forward entry with its reply entry), their
 * state, garbage collection by per-state timeouts, and flushing. The datapath only creates and
 * touches entries; ageing them out is the agent's job, as in Cilium.
 */
import type { MapLike } from '../sync/bpf-dataplane.js';
import { replyKeyOf } from '../sync/bpf-dataplane.js';
import {
  CT_F_CLOSING, CT_F_SEEN_REPLY, CT_F_SNAT, CT_FORWARD, IPPROTO_TCP,
  type BackendConnsT, type BackendIdT, type CtKeyT, type CtValueT,
} from './layouts.js';
import { protoName } from './inspect.js';

export type FlowState = 'syn' | 'established' | 'closing' | 'udp';

export interface Flow {
  protocol: 'TCP' | 'UDP' | 'SCTP';
  client: string;
  frontend: string;
  backend: string;
  /** The source the flow leaves the node with, when SNATed (remote backend, hairpin). */
  snat: string | null;
  state: FlowState;
  svcId: number;
  backendId: number;
  /** Seconds since the flow's last packet (either direction) and since it started. */
  idleSeconds: number;
  ageSeconds: number;
  forward: CtKeyT;
  reply: CtKeyT;
  hasReply: boolean;
}

/** Timeouts (seconds) after the last packet, by state: Cilium's defaults. */
export interface CtTimeouts {
  syn: number;
  established: number;
  closing: number;
  udp: number;
}

export const DEFAULT_CT_TIMEOUTS: CtTimeouts = { syn: 60, established: 21600, closing: 10, udp: 60 };

/** bpf_ktime_get_ns()'s clock (CLOCK_MONOTONIC) in nanoseconds. */
export function monotonicNs(): bigint {
  return process.hrtime.bigint();
}

type CtMap = MapLike<CtKeyT, CtValueT>;

function keyId(k: CtKeyT): string {
  return `${k.saddr}:${k.sport}>${k.daddr}:${k.dport}/${k.proto}/${k.dir}`;
}

export function readFlows(conntrack: CtMap, now: bigint = monotonicNs()): Flow[] {
  const entries = conntrack.entries();
  const byKey = new Map(entries.map(([k, v]) => [keyId(k), v]));
  const flows: Flow[] = [];
  for (const [k, v] of entries) {
    if (k.dir !== CT_FORWARD) continue;
    const rk = replyKeyOf(k, v);
    const rv = byKey.get(keyId(rk));
    const flags = v.flags | (rv?.flags ?? 0);
    const last = rv && rv.last_seen_ns > v.last_seen_ns ? rv.last_seen_ns : v.last_seen_ns;
    let state: FlowState;
    if (k.proto !== IPPROTO_TCP) state = 'udp';
    else if (flags & CT_F_CLOSING) state = 'closing';
    else if (rv && rv.flags & CT_F_SEEN_REPLY) state = 'established';
    else state = 'syn';
    flows.push({
      protocol: protoName(k.proto),
      client: `${k.saddr}:${k.sport}`,
      frontend: `${k.daddr}:${k.dport}`,
      backend: `${v.nat_addr}:${v.nat_port}`,
      snat: v.flags & CT_F_SNAT ? `${v.snat_addr}:${v.snat_port}` : null,
      state,
      svcId: v.svc_id,
      backendId: v.backend_id,
      idleSeconds: Number(now > last ? now - last : 0n) / 1e9,
      ageSeconds: Number(now > v.created_ns ? now - v.created_ns : 0n) / 1e9,
      forward: k,
      reply: rk,
      hasReply: rv !== undefined,
    });
  }
  return flows;
}

function deleteFlow(conntrack: CtMap, conns: MapLike<BackendIdT, BackendConnsT> | null, f: Flow): number {
  let n = 0;
  if (conntrack.delete(f.forward)) n++;
  if (conntrack.delete(f.reply)) n++;
  // lc counts open flows: one that never reached closing leaves the count here.
  if (conns && f.state !== 'closing') {
    const c = conns.lookup({ id: f.backendId });
    if (c && c.active > 0) conns.update({ id: f.backendId }, { active: c.active - 1 });
  }
  return n;
}

/** Deletes flows idle for longer than their state's timeout; returns the entries deleted. */
export function gcConntrack(
  conntrack: CtMap,
  conns: MapLike<BackendIdT, BackendConnsT> | null,
  timeouts: CtTimeouts = DEFAULT_CT_TIMEOUTS,
  now: bigint = monotonicNs(),
): number {
  let deleted = 0;
  const flows = readFlows(conntrack, now);
  for (const f of flows) if (f.idleSeconds > timeouts[f.state]) deleted += deleteFlow(conntrack, conns, f);
  // Reply entries whose forward entry is gone (LRU eviction, a crash between the two writes).
  const replies = new Set(flows.map((f) => keyId(f.reply)));
  for (const [k, v] of conntrack.entries()) {
    if (k.dir === CT_FORWARD || replies.has(keyId(k))) continue;
    const idle = Number(now > v.last_seen_ns ? now - v.last_seen_ns : 0n) / 1e9;
    if (idle > Math.max(timeouts.syn, timeouts.udp) && conntrack.delete(k)) deleted++;
  }
  return deleted;
}

/** Deletes every flow, or those of the given services; returns the flows deleted. */
export function flushConntrack(conntrack: CtMap, conns: MapLike<BackendIdT, BackendConnsT> | null, svcIds: Set<number> | null): number {
  let n = 0;
  for (const f of readFlows(conntrack)) {
    if (svcIds !== null && !svcIds.has(f.svcId)) continue;
    deleteFlow(conntrack, conns, f);
    n++;
  }
  return n;
}
