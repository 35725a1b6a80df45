/*
 * Reads the pinned maps back into user-facing shapes: the `vipr list` table, decoded map dumps,
 * summed counters. Read-only: nothing here writes a map.
 */
import { z } from 'zod';
import type { DatapathMaps } from './datapath.js';
import { describeSocketLb, socketLbStatus } from './socket-lb.js';
import {
  BE_F_LOCAL, BE_F_TERMINATING, CT_F_CLOSING, CT_FORWARD, CT_ROLES, CT_SIZE_KIND, IPPROTO_TCP, IPPROTO_UDP, NODEPORT_VIP, NODEPORT_VIP6,
  SCHEDULERS, SCOPE_EXTERNAL,
  STAT_NAMES, SVC_F_AFFINITY, type StatName,
} from './layouts.js';
import type { Listing, ListedService } from '../model/listing.js';
import { serviceNamesPath } from '../paths.js';
import { readJsonFileIfExists, type JsonRecordKind } from '../json-file.js';

export function protoName(p: number): 'TCP' | 'UDP' | 'SCTP' {
  return p === IPPROTO_TCP ? 'TCP' : p === IPPROTO_UDP ? 'UDP' : 'SCTP';
}

/** The agent's record of svc_id → `namespace/name:port` (the maps carry no names). */
export const SERVICE_NAMES_RECORD: JsonRecordKind<Record<string, string>> = {
  what: 'service-names record',
  schema: z.record(z.string().regex(/^\d+$/, 'expected a service id'), z.string()),
  fix: 'delete it: the agent writes it again on its next sync',
};

/** svc_id → `namespace/name:port`; empty before the agent wrote any. A bad record is a JsonFileError. */
export function readServiceNames(pinDir: string): Map<number, string> {
  const raw = readJsonFileIfExists(serviceNamesPath(pinDir), SERVICE_NAMES_RECORD) ?? {};
  return new Map(Object.entries(raw).map(([id, name]) => [Number(id), name]));
}

/**
 * Connection counts per (svc_id, backend_id), IPVS style: active = established TCP not closing;
 * inactive = half-open or closing TCP, and UDP.
 */
function connectionCounts(maps: DatapathMaps): Map<string, { active: number; inactive: number }> {
  const counts = new Map<string, { active: number; inactive: number }>();
  for (const role of CT_ROLES) {
    for (const [k, v] of maps[role].entries()) {
      if (k.dir !== CT_FORWARD) continue;
      const id = `${v.svc_id}/${v.backend_id}`;
      const c = counts.get(id) ?? { active: 0, inactive: 0 };
      if (CT_SIZE_KIND[role] === 'tcp' && k.proto === IPPROTO_TCP && !(v.flags & CT_F_CLOSING)) c.active++;
      else c.inactive++;
      counts.set(id, c);
    }
  }
  return counts;
}

export function readBpfListing(maps: DatapathMaps, pinDir: string): Listing {
  const names = readServiceNames(pinDir);
  const counts = connectionCounts(maps);
  // Backend ids come from one allocator for both families: one map of them serves both.
  const backends = new Map([...maps.backends.entries(), ...maps.backends6.entries()].map(([k, v]) => [k.id, v]));
  const slots = new Map(maps.slots.entries().map(([k, v]) => [`${k.svc_id}/${k.slot}`, v.id]));
  const services: ListedService[] = [];
  const nodeIps = maps.nodeIps.entries().map(([k]) => k.addr);
  const nodeIps6 = maps.nodeIps6.entries().map(([k]) => k.addr);
  for (const [key, svc] of [...maps.services.entries(), ...maps.services6.entries()]) {
    // Internal-scope twins of externalTrafficPolicy Local frontends are an implementation detail.
    if (key.scope !== SCOPE_EXTERNAL) continue;
    const listed: ListedService = {
      protocol: protoName(key.proto),
      address: key.vip,
      port: key.port,
      scheduler: SCHEDULERS[svc.scheduler] ?? `scheduler ${svc.scheduler}`,
      persistentSeconds: svc.flags & SVC_F_AFFINITY ? svc.affinity_timeout : 0,
      name: names.get(svc.svc_id) ?? null,
      backends: [],
    };
    // Maglev fills many slots per backend: list each backend once.
    const listedIds = new Set<number>();
    for (let slot = 0; slot < svc.backend_count; slot++) {
      const id = slots.get(`${svc.svc_id}/${slot}`);
      const be = id === undefined ? undefined : backends.get(id);
      if (id === undefined || be === undefined || listedIds.has(id)) continue;
      listedIds.add(id);
      const c = counts.get(`${svc.svc_id}/${id}`) ?? { active: 0, inactive: 0 };
      const flags: string[] = [];
      if (be.flags & BE_F_TERMINATING) flags.push('terminating');
      if (be.flags & BE_F_LOCAL) flags.push('local');
      listed.backends.push({
        address: be.addr, port: be.port, forward: 'Masq', weight: 1,
        activeConn: c.active, inactConn: c.inactive, flags,
      });
    }
    // A NodePort answers on every node address of its family: list it there, as IPVS mode does.
    const nodeAddrs = key.vip === NODEPORT_VIP ? nodeIps : key.vip === NODEPORT_VIP6 ? nodeIps6 : [];
    if (nodeAddrs.length > 0) {
      for (const ip of nodeAddrs) services.push({ ...listed, address: ip });
    } else {
      services.push(listed);
    }
  }
  return { source: `bpf (${pinDir}), socket LB ${describeSocketLb(socketLbStatus(pinDir))}`, services };
}

export type Counters = Record<StatName, { packets: number; bytes: number }>;

/** The datapath counters, summed over CPUs. */
export function readCounters(maps: DatapathMaps): Counters {
  const out = {} as Counters;
  STAT_NAMES.forEach((name, i) => {
    const perCpu = maps.stats.lookupPerCpu(i) ?? [];
    out[name] = {
      packets: Number(perCpu.reduce((n, v) => n + v.packets, 0n)),
      bytes: Number(perCpu.reduce((n, v) => n + v.bytes, 0n)),
    };
  });
  return out;
}

/** JSON-safe form of a decoded value (bigints as numbers). */
export function plain(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  return v;
}

/** Every map decoded, by pinned name. */
export function dumpMaps(maps: DatapathMaps, only: string | null): Record<string, Array<{ key: unknown; value: unknown }>> {
  const out: Record<string, Array<{ key: unknown; value: unknown }>> = {};
  for (const m of Object.values(maps)) {
    if (only !== null && m.name !== only && !m.name.startsWith(`vipr_${only}_`)) continue;
    if (m.name === maps.stats.name) {
      // The stats map has spare slots for later counters: list the named ones and any other in use.
      out[m.name] = maps.stats.entriesPerCpu()
        .filter(([k, v]) => STAT_NAMES[k] !== undefined || v.some((c) => c.packets > 0n))
        .map(([k, v]) => ({ key: STAT_NAMES[k] ?? k, value: plain(v) }));
    } else if (m.spec.perCpu) {
      out[m.name] = m.entriesPerCpu().map(([k, v]) => ({ key: plain(k), value: plain(v) }));
    } else {
      out[m.name] = (m.entries() as Array<[unknown, unknown]>).map(([k, v]) => ({ key: plain(k), value: plain(v) }));
    }
  }
  return out;
}
