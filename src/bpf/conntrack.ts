/*
 * vipr's conntrack seen from user space: flows (a forward entry with its reply entry, in one of the
 * three conntrack maps), their state, the maps' sizes, and flushing. The datapath creates,
 * promotes and touches entries; the GC iterator (src/bpf/ct-gc.ts) ages them out in the kernel.
 */
import { totalmem } from 'node:os';
import type { MapLike } from './map.js';
import {
  CT_F_CLOSING, CT_F_SNAT, CT_FORWARD, CT_REPLY, CT_ROLES, CT_SIZE_KIND, CtKey, CtValue,
  type BackendConnsT, type BackendIdT, type CtKeyT, type CtRole, type CtValueT,
} from './layouts.js';
import { protoName } from './inspect.js';
import { joinHostPort, type IpFamily } from '../model/ip.js';

export type FlowState = 'syn' | 'established' | 'closing' | 'udp';

export interface Flow {
  protocol: 'TCP' | 'UDP' | 'SCTP';
  client: string;
  frontend: string;
  backend: string;
  /** The source the flow leaves the node with, when SNATed (remote backend, hairpin). */
  snat: string | null;
  state: FlowState;
  /** The map holding the flow: established TCP, half-open TCP, or UDP, of the flow's family. */
  table: CtRole;
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
export type CtMaps = Record<CtRole, CtMap>;

function keyId(k: CtKeyT): string {
  return `${k.saddr}:${k.sport}>${k.daddr}:${k.dport}/${k.proto}/${k.dir}`;
}

function flowState(table: CtRole, flags: number): FlowState {
  const kind = CT_SIZE_OF[table];
  if (kind === 'udp') return 'udp';
  if (flags & CT_F_CLOSING) return 'closing';
  return kind === 'tcp' ? 'established' : 'syn';
}

function readTable(table: CtRole, conntrack: CtMap, now: bigint, flows: Flow[]): void {
  const entries = conntrack.entries();
  const byKey = new Map(entries.map(([k, v]) => [keyId(k), v]));
  for (const [k, v] of entries) {
    if (k.dir !== CT_FORWARD) continue;
    const rk = replyKeyOf(k, v);
    const rv = byKey.get(keyId(rk));
    const last = rv && rv.last_seen_ns > v.last_seen_ns ? rv.last_seen_ns : v.last_seen_ns;
    flows.push({
      protocol: protoName(k.proto),
      client: joinHostPort(k.saddr, k.sport),
      frontend: joinHostPort(k.daddr, k.dport),
      backend: joinHostPort(v.nat_addr, v.nat_port),
      snat: v.flags & CT_F_SNAT ? joinHostPort(v.snat_addr, v.snat_port) : null,
      state: flowState(table, v.flags | (rv?.flags ?? 0)),
      table,
      svcId: v.svc_id,
      backendId: v.backend_id,
      idleSeconds: Number(now > last ? now - last : 0n) / 1e9,
      ageSeconds: Number(now > v.created_ns ? now - v.created_ns : 0n) / 1e9,
      forward: k,
      reply: rk,
      hasReply: rv !== undefined,
    });
  }
}

/** Every flow of the conntrack maps, both families (a full read: for the CLI, not for the agent's loop). */
export function readFlows(maps: CtMaps, now: bigint = monotonicNs()): Flow[] {
  const flows: Flow[] = [];
  for (const table of CT_ROLES) readTable(table, maps[table], now, flows);
  return flows;
}

/** Deletes every flow, or those of the given services; returns the flows deleted. */
export function flushConntrack(maps: CtMaps, conns: MapLike<BackendIdT, BackendConnsT> | null, svcIds: Set<number> | null): number {
  let n = 0;
  for (const f of readFlows(maps)) {
    if (svcIds !== null && !svcIds.has(f.svcId)) continue;
    maps[f.table].delete(f.forward);
    maps[f.table].delete(f.reply);
    // lc counts open flows: one that never reached closing leaves the count here.
    if (conns && f.state !== 'closing') {
      const c = conns.lookup({ id: f.backendId });
      if (c && c.active > 0) conns.update({ id: f.backendId }, { active: c.active - 1 });
    }
    n++;
  }
  return n;
}

/**
 * Entries of each conntrack map (max_entries): `--ct-max-tcp` and `--ct-max-udp`, or sized to the
 * node. IPv6's maps get the same sizes as IPv4's (as Cilium's CT map sizes apply to both) when
 * the node serves both families; a family it does not serve gets UNSERVED_CT_SIZES (ctSizesByFamily).
 */
export interface CtSizes {
  /** vipr_ct_tcp_v1: established TCP flows, two entries each. */
  tcp: number;
  /** vipr_ct_tcp_syn_v1: half-open TCP flows; a quarter of `tcp`. */
  tcpSyn: number;
  /** vipr_ct_udp_v1. */
  udp: number;
}

/* Cilium's bounds (pkg/maps/mapsize): defaults at full ratio, the floors of dynamic sizing, limits. */
const CT_TCP_DEFAULT = 524288;
const CT_UDP_DEFAULT = 262144;
const CT_TCP_AUTO_MIN = 131072;
const CT_UDP_AUTO_MIN = 65536;
export const CT_LIMIT_MIN = 1024;
export const CT_LIMIT_MAX = 1 << 24;
/** --bpf-map-dynamic-size-ratio's default: the share of the node's memory conntrack may take. */
export const CT_DYNAMIC_SIZE_RATIO = 0.0025;
/** Bytes one entry costs the kernel: key, value and the hash table's element header. */
export const CT_ENTRY_BYTES = CtKey.size + CtValue.size + 48;

/** The half-open map's size for an established-TCP size. */
export function synMapSize(tcp: number): number {
  return Math.max(CT_LIMIT_MIN, Math.floor(tcp / 4));
}

/**
 * Cilium's dynamic sizing: CT_DYNAMIC_SIZE_RATIO of the node's memory, shared between the maps in
 * the proportion of their defaults, each at least its floor and at most CT_LIMIT_MAX. An explicit
 * size replaces the computed one for that map.
 */
export function ctSizes(explicit: { tcp?: number; udp?: number } = {}, memoryBytes: number = totalmem()): CtSizes {
  const budget = memoryBytes * CT_DYNAMIC_SIZE_RATIO;
  const defaultBytes = (CT_TCP_DEFAULT + synMapSize(CT_TCP_DEFAULT) + CT_UDP_DEFAULT) * CT_ENTRY_BYTES;
  const scaled = (def: number, min: number): number => Math.min(CT_LIMIT_MAX, Math.max(min, Math.floor((def * budget) / defaultBytes)));
  const tcp = explicit.tcp ?? scaled(CT_TCP_DEFAULT, CT_TCP_AUTO_MIN);
  const udp = explicit.udp ?? scaled(CT_UDP_DEFAULT, CT_UDP_AUTO_MIN);
  return { tcp, tcpSyn: synMapSize(tcp), udp };
}

/**
 * The maps of a family the node does not serve (no --node-ip of it): no Service of that family is
 * programmed, so no flow of it is ever tracked, and full-size maps would only hold memory (IPv6's
 * three took 107 MB on this 23 GB machine). The smallest size the flags allow; an agent restarted
 * serving the family grows them, its flows carried over (src/bpf/migrate.ts).
 */
export const UNSERVED_CT_SIZES: CtSizes = { tcp: CT_LIMIT_MIN, tcpSyn: CT_LIMIT_MIN, udp: CT_LIMIT_MIN };

/** Each family's conntrack sizes: `sizes` for a family the node serves, UNSERVED_CT_SIZES for the other. */
export function ctSizesByFamily(sizes: CtSizes, served: readonly IpFamily[]): Record<IpFamily, CtSizes> {
  return { IPv4: served.includes('IPv4') ? sizes : UNSERVED_CT_SIZES, IPv6: served.includes('IPv6') ? sizes : UNSERVED_CT_SIZES };
}

/** The pinned map name of each conntrack role, as CtSizes names them. */
export const CT_SIZE_OF: Record<CtRole, keyof CtSizes> = CT_SIZE_KIND;

/** An address that stands for none: snat_addr of a flow that is not SNATed, either family. */
function isUnset(addr: string): boolean {
  return addr === '0.0.0.0' || addr === '::';
}

/** The reply entry that belongs to a forward entry. */
export function replyKeyOf(k: CtKeyT, v: CtValueT): CtKeyT {
  const snat = !isUnset(v.snat_addr);
  return {
    saddr: v.nat_addr,
    daddr: snat ? v.snat_addr : k.saddr,
    sport: v.nat_port,
    dport: snat ? v.snat_port : k.sport,
    proto: k.proto,
    dir: CT_REPLY,
  };
}
