/*
 * The table `vipr list` prints in every mode, shaped like `ipvsadm -Ln` so it reads the way
 * users already read IPVS: one virtual server per line, its real servers below it.
 */
import { compareIps, familyOf, joinHostPort } from './ip.js';

export interface ListedBackend {
  address: string;
  port: number;
  /** IPVS forwarding method; vipr NATs, as IPVS's Masq. */
  forward: 'Masq' | 'Local' | 'Route';
  weight: number;
  activeConn: number;
  inactConn: number;
  /** Extra state worth showing (e.g. terminating). */
  flags: string[];
}

export interface ListedService {
  protocol: 'TCP' | 'UDP' | 'SCTP';
  address: string;
  port: number;
  scheduler: string;
  /** ClientIP affinity timeout in seconds (ipvsadm's `persistent N`); 0 = none. */
  persistentSeconds: number;
  /** `namespace/name:port` when known. */
  name: string | null;
  backends: ListedBackend[];
}

export interface Listing {
  /** What was read: `bpf (/sys/fs/bpf/vipr)`, `iptables (legacy)`, ... */
  source: string;
  services: ListedService[];
}

/** Numeric order, IPv4 before IPv6 (as ipvsadm lists); anything not an address after, by text. */
function compareAddresses(a: string, b: string): number {
  const known = (familyOf(a) !== null ? 0 : 1) - (familyOf(b) !== null ? 0 : 1);
  if (known !== 0 || familyOf(a) === null) return known || a.localeCompare(b);
  return compareIps(a, b);
}

function compareServices(a: ListedService, b: ListedService): number {
  return compareAddresses(a.address, b.address) || a.port - b.port || a.protocol.localeCompare(b.protocol);
}

/** Sorts services and their backends into ipvsadm's order (by address, then port). */
export function sortListing(l: Listing): Listing {
  return {
    source: l.source,
    services: [...l.services].sort(compareServices).map((s) => ({
      ...s,
      backends: [...s.backends].sort((a, b) => compareAddresses(a.address, b.address) || a.port - b.port),
    })),
  };
}

/**
 * ipvsadm -Ln's layout. Without `numeric`, each virtual server line also names its Service
 * (ipvsadm would resolve host names there; a Service name is what a Kubernetes user wants) and
 * each real server its state (local, terminating); with it, the columns are ipvsadm's alone.
 */
export function formatListing(l: Listing, opts: { numeric: boolean }): string {
  const lines = [
    `vipr ${l.source}: ${l.services.length} services, ${l.services.reduce((n, s) => n + s.backends.length, 0)} backends`,
    'Prot LocalAddress:Port Scheduler Flags',
    '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn',
  ];
  for (const s of sortListing(l).services) {
    let line = `${s.protocol.padEnd(4)} ${joinHostPort(s.address, s.port)} ${s.scheduler}`;
    if (s.persistentSeconds > 0) line += ` persistent ${s.persistentSeconds}`;
    if (!opts.numeric && s.name) line += `  (${s.name})`;
    lines.push(line);
    for (const b of s.backends) {
      let be =
        `  -> ${joinHostPort(b.address, b.port).padEnd(28)} ${b.forward.padEnd(7)} ${String(b.weight).padEnd(6)} ` +
        `${String(b.activeConn).padEnd(10)} ${b.inactConn}`;
      if (!opts.numeric && b.flags.length > 0) be += ` (${b.flags.join(',')})`;
      lines.push(be);
    }
  }
  return `${lines.join('\n')}\n`;
}
