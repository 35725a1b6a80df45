/*
 * IPVS virtual servers as `ipvsadm -Sn` prints them and `ipvsadm -R` reads them, and the
 * incremental change between what the kernel has and what the renderer wants, as kube-proxy's
 * IPVS proxier makes it one object at a time: add or edit virtual servers (-A/-E) and real
 * servers (-a/-e) first, so nothing desired is ever missing, then remove what is no longer
 * wanted (-d real servers, -D virtual servers). Pure: text in, commands out.
 */
import type { ListedService, Listing } from '../model/listing.js';
import { joinHostPort } from '../model/ip.js';
import { splitRuleLine } from './iptables-save.js';

export type IpvsProtocolFlag = '-t' | '-u' | '--sctp-service';

export interface IpvsRealServer {
  address: string;
  port: number;
  /** -m (masquerading), -g (gatewaying), -i (ipip). */
  method: '-m' | '-g' | '-i';
  weight: number;
}

export interface IpvsVirtualServer {
  protocol: IpvsProtocolFlag;
  address: string;
  port: number;
  scheduler: string;
  /** -p N; 0 = not persistent. */
  persistentSeconds: number;
  realServers: IpvsRealServer[];
}

const PROTOCOL_FLAGS: Record<string, IpvsProtocolFlag> = {
  '-t': '-t', '--tcp-service': '-t', '-u': '-u', '--udp-service': '-u', '--sctp-service': '--sctp-service',
};

const METHOD_FLAGS: Record<string, IpvsRealServer['method']> = {
  '-m': '-m', '--masquerading': '-m', '-g': '-g', '--gatewaying': '-g', '-i': '-i', '--ipip': '-i',
};

/** `10.0.0.1:80` or, as ipvsadm writes IPv6, `[fd00::1]:80`. */
function splitAddress(text: string): { address: string; port: number } | null {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(text) ?? /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(text);
  return m ? { address: (m[1] as string).toLowerCase(), port: Number(m[2]) } : null;
}

export function virtualServerId(vs: Pick<IpvsVirtualServer, 'protocol' | 'address' | 'port'>): string {
  return `${vs.protocol} ${joinHostPort(vs.address, vs.port)}`;
}

/**
 * Parses `ipvsadm -Sn` (or `ipvsadm -R` input made of -A/-a lines). Options vipr does not set
 * (netmasks, flags, fwmark services) are ignored; fwmark services are skipped entirely.
 */
export function parseIpvsadmSave(text: string): IpvsVirtualServer[] {
  const byId = new Map<string, IpvsVirtualServer>();
  for (const raw of text.split('\n')) {
    const args = splitRuleLine(raw.trim());
    const command = args[0];
    if (command !== '-A' && command !== '-a' && command !== '--add-service' && command !== '--add-server') continue;
    let protocol: IpvsProtocolFlag | null = null;
    let service: { address: string; port: number } | null = null;
    let real: { address: string; port: number } | null = null;
    let scheduler = 'wlc';
    let persistent = 0;
    let method: IpvsRealServer['method'] = '-g';
    let weight = 1;
    for (let i = 1; i < args.length; i++) {
      const a = args[i] as string;
      const next = args[i + 1];
      const proto = PROTOCOL_FLAGS[a];
      if (proto !== undefined && next !== undefined) {
        protocol = proto;
        service = splitAddress(next);
        i++;
      } else if ((a === '-s' || a === '--scheduler') && next !== undefined) {
        scheduler = next;
        i++;
      } else if (a === '-p' || a === '--persistent') {
        // The timeout is optional (ipvsadm's default is 300 s).
        if (next !== undefined && /^\d+$/.test(next)) {
          persistent = Number(next);
          i++;
        } else {
          persistent = 300;
        }
      } else if ((a === '-r' || a === '--real-server') && next !== undefined) {
        real = splitAddress(next);
        i++;
      } else if (METHOD_FLAGS[a] !== undefined) {
        method = METHOD_FLAGS[a] as IpvsRealServer['method'];
      } else if ((a === '-w' || a === '--weight') && next !== undefined) {
        weight = Number(next);
        i++;
      }
    }
    if (protocol === null || service === null) continue;
    const id = virtualServerId({ protocol, ...service });
    if (command === '-A' || command === '--add-service') {
      byId.set(id, { protocol, ...service, scheduler, persistentSeconds: persistent, realServers: byId.get(id)?.realServers ?? [] });
    } else if (real !== null) {
      let vs = byId.get(id);
      if (vs === undefined) {
        vs = { protocol, ...service, scheduler: 'wlc', persistentSeconds: 0, realServers: [] };
        byId.set(id, vs);
      }
      vs.realServers.push({ ...real, method, weight });
    }
  }
  return [...byId.values()];
}

function serviceArgs(vs: IpvsVirtualServer): string {
  return `${vs.protocol} ${joinHostPort(vs.address, vs.port)}`;
}

function serviceOptions(vs: IpvsVirtualServer): string {
  return `-s ${vs.scheduler}${vs.persistentSeconds > 0 ? ` -p ${vs.persistentSeconds}` : ''}`;
}

function realArgs(vs: IpvsVirtualServer, rs: IpvsRealServer): string {
  return `${serviceArgs(vs)} -r ${joinHostPort(rs.address, rs.port)}`;
}

/**
 * The `ipvsadm -R` lines that turn `current` into `desired`. Virtual servers of `current` whose
 * address is not in `owned` (when given) belong to someone else and are left alone, as
 * kube-proxy only removes services on addresses it bound to kube-ipvs0 or the node.
 */
export function ipvsadmChanges(
  current: readonly IpvsVirtualServer[],
  desired: readonly IpvsVirtualServer[],
  owned?: ReadonlySet<string>,
): string[] {
  const have = new Map(current.map((vs) => [virtualServerId(vs), vs]));
  const want = new Map(desired.map((vs) => [virtualServerId(vs), vs]));
  const adds: string[] = [];
  const removals: string[] = [];
  for (const [id, vs] of want) {
    const cur = have.get(id);
    if (cur === undefined) {
      adds.push(`-A ${serviceArgs(vs)} ${serviceOptions(vs)}`);
    } else if (cur.scheduler !== vs.scheduler || cur.persistentSeconds !== vs.persistentSeconds) {
      // -E without -p would keep persistence on; turning it off needs the service re-created.
      if (cur.persistentSeconds > 0 && vs.persistentSeconds === 0) {
        removals.push(`-D ${serviceArgs(vs)}`);
        adds.push(`-A ${serviceArgs(vs)} ${serviceOptions(vs)}`);
      } else {
        adds.push(`-E ${serviceArgs(vs)} ${serviceOptions(vs)}`);
      }
    }
  }
  // A service removed and re-added above starts without real servers.
  const recreated = new Set(removals.map((l) => l.slice(3)));
  // -D must run before the -A that re-creates the same service.
  const ordered: string[] = [...removals];
  ordered.push(...adds);
  for (const [id, vs] of want) {
    const cur = recreated.has(serviceArgs(vs)) ? undefined : have.get(id);
    const curReal = new Map((cur?.realServers ?? []).map((rs) => [`${rs.address}:${rs.port}`, rs]));
    for (const rs of vs.realServers) {
      const existing = curReal.get(`${rs.address}:${rs.port}`);
      if (existing === undefined) ordered.push(`-a ${realArgs(vs, rs)} ${rs.method} -w ${rs.weight}`);
      else if (existing.method !== rs.method || existing.weight !== rs.weight) ordered.push(`-e ${realArgs(vs, rs)} ${rs.method} -w ${rs.weight}`);
    }
    if (cur === undefined) continue;
    const wanted = new Set(vs.realServers.map((rs) => `${rs.address}:${rs.port}`));
    for (const rs of cur.realServers) {
      if (!wanted.has(`${rs.address}:${rs.port}`)) ordered.push(`-d ${realArgs(vs, rs)}`);
    }
  }
  for (const [id, vs] of have) {
    if (want.has(id)) continue;
    if (owned !== undefined && !owned.has(vs.address)) continue;
    ordered.push(`-D ${serviceArgs(vs)}`);
  }
  return ordered;
}

const LISTED_PROTOCOL: Record<IpvsProtocolFlag, ListedService['protocol']> = { '-t': 'TCP', '-u': 'UDP', '--sctp-service': 'SCTP' };
/** The listing has no Tunnel column value: an ipip real server is shown as routed, as -g is. */
const FORWARD: Record<IpvsRealServer['method'], ListedService['backends'][number]['forward']> = { '-m': 'Masq', '-g': 'Route', '-i': 'Route' };

/** `ipvsadm -Sn` as the table `vipr list` prints (connection counts are not in -S output). */
export function ipvsListing(save: string, source: string): Listing {
  return {
    source,
    services: parseIpvsadmSave(save).map((vs) => ({
      protocol: LISTED_PROTOCOL[vs.protocol],
      address: vs.address,
      port: vs.port,
      scheduler: vs.scheduler,
      persistentSeconds: vs.persistentSeconds,
      name: null,
      backends: vs.realServers.map((rs) => ({
        address: rs.address, port: rs.port, forward: FORWARD[rs.method], weight: rs.weight, activeConn: 0, inactConn: 0, flags: [],
      })),
    })),
  };
}
