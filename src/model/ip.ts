/*
 * Addresses of both families, as every layer past the sources handles them: a family, a canonical
 * text form (IPv6 as RFC 5952 prints it, which is also how Go's net.IP.String() and so kube-proxy
 * print it: "fd00:10:96::213", never "FD00:0010:0096:0:0:0:0:0213"), 16 raw bytes, CIDRs and
 * membership. Sources canonicalise once at the edge, so two spellings of one address are one
 * frontend. IPv4-only arithmetic stays in ./ipv4.ts.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { ConfigError } from '../errors.js';
import { parseIpv4 } from './ipv4.js';

export type IpFamily = 'IPv4' | 'IPv6';

export const IP_FAMILIES: readonly IpFamily[] = ['IPv4', 'IPv6'];

/**
 * The family of `ip`, or null when it is neither. A zoned IPv6 address (`fe80::1%eth0`, which
 * node:net accepts) is not an address a Service, endpoint or node option can use: null.
 */
export function familyOf(ip: string): IpFamily | null {
  if (isIPv4(ip)) return 'IPv4';
  if (isIPv6(ip) && !ip.includes('%')) return 'IPv6';
  return null;
}

/** The family of `ip`, throwing a ConfigError when it is neither. */
export function familyOfOrThrow(ip: string): IpFamily {
  const family = familyOf(ip);
  if (family === null) throw new ConfigError(`not an IP address: '${ip}'`);
  return family;
}

/** The 16 bytes of an IPv6 address (network order); an embedded IPv4 tail ("::ffff:1.2.3.4") too. */
export function parseIpv6(ip: string): Buffer {
  const text = ip.trim();
  if (familyOf(text) !== 'IPv6') throw new ConfigError(`not an IPv6 address: '${ip}'`);
  const out = Buffer.alloc(16);
  let head = text;
  let tailV4: number | null = null;
  const lastColon = text.lastIndexOf(':');
  if (text.indexOf('.', lastColon) > 0) {
    tailV4 = parseIpv4(text.slice(lastColon + 1));
    head = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [left, right] = head.includes('::') ? head.split('::') : [head, undefined];
  const groups = (s: string | undefined): number[] => (s === undefined || s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const l = groups(left);
  const r = groups(right);
  const all = right === undefined ? l : [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  all.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  if (tailV4 !== null) out.writeUInt32BE(tailV4, 12);
  return out;
}

/**
 * RFC 5952: lowercase, no leading zeros, the longest run (first of equals, ≥ 2 groups) of zero
 * groups as "::", and an IPv4-mapped address with its IPv4 tail dotted (section 5).
 */
export function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `::ffff:${[...bytes.subarray(12, 16)].join('.')}`;
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]): string => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** The canonical text of an address of either family (IPv4 as given, trimmed; IPv6 per RFC 5952). */
export function canonicalIp(ip: string): string {
  const text = ip.trim();
  const family = familyOf(text);
  if (family === 'IPv4') return text;
  if (family === 'IPv6') return formatIpv6(parseIpv6(text));
  throw new ConfigError(`not an IP address: '${ip}'`);
}

/** `ip:port`, or `[ip]:port` for IPv6, as ipvsadm, curl and Go's net.JoinHostPort write them. */
export function joinHostPort(ip: string, port: number | string): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** An address of either family as raw bytes: 4 for IPv4, 16 for IPv6. */
export function ipBytes(ip: string): Buffer {
  const family = familyOfOrThrow(ip.trim());
  if (family === 'IPv6') return parseIpv6(ip);
  const out = Buffer.alloc(4);
  out.writeUInt32BE(parseIpv4(ip));
  return out;
}

export interface Cidr {
  family: IpFamily;
  /** The network address's bytes (4 or 16), host bits cleared. */
  network: Buffer;
  prefix: number;
}

function maskBytes(bytes: Buffer, prefix: number): Buffer {
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = (out[i] ?? 0) & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

/** Parses `addr/n` of either family (a bare address is a /32 or /128). */
export function parseCidr(cidr: string): Cidr {
  const [ip, prefixText, extra] = cidr.trim().split('/');
  const family = ip === undefined ? null : familyOf(ip);
  const max = family === 'IPv6' ? 128 : 32;
  const prefix = prefixText === undefined ? max : /^\d{1,3}$/.test(prefixText) ? Number(prefixText) : NaN;
  if (family === null || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > max) {
    throw new ConfigError(`not a CIDR: '${cidr}' (write it as 10.0.0.0/8 or fd00::/8)`);
  }
  return { family, network: maskBytes(ipBytes(ip as string), prefix), prefix };
}

/** A CIDR as Go's net.IPNet.String() prints it (host bits cleared, IPv6 per RFC 5952). */
export function formatCidr(cidr: Cidr): string {
  const ip = cidr.family === 'IPv6' ? formatIpv6(cidr.network) : [...cidr.network].join('.');
  return `${ip}/${cidr.prefix}`;
}

export function normalizeCidr(cidr: string): string {
  return formatCidr(parseCidr(cidr));
}

/** Whether `ip` lies in `cidr`; an address of the other family never does. */
export function cidrHas(cidr: Cidr, ip: string): boolean {
  if (familyOf(ip.trim()) !== cidr.family) return false;
  return maskBytes(ipBytes(ip), cidr.prefix).equals(cidr.network);
}

/** The family of a CIDR's text, or null when it is not one. */
export function cidrFamily(cidr: string): IpFamily | null {
  try {
    return parseCidr(cidr).family;
  } catch {
    return null;
  }
}

/**
 * IPv6 ranges no Service frontend or endpoint may use, as SPECIAL_IPV4_RANGES in ./ipv4.ts:
 * the API server's ValidateNonSpecialIP for IPv6 (unspecified, loopback, link-local, multicast)
 * and IPv4-mapped addresses (an IPv4 address in IPv6 clothing would bypass the IPv4 checks and
 * reach the IPv4 stack through a v6 socket).
 */
const SPECIAL_IPV6_RANGES: ReadonlyArray<readonly [Cidr, string]> = [
  [parseCidr('::/128'), 'the unspecified address :: (it means every local address)'],
  [parseCidr('::1/128'), 'the loopback address ::1'],
  [parseCidr('::ffff:0:0/96'), 'an IPv4-mapped address (::ffff:0:0/96; write the IPv4 address itself)'],
  [parseCidr('fe80::/10'), 'in the link-local range fe80::/10'],
  [parseCidr('ff00::/8'), 'in the multicast range ff00::/8'],
];

/** Why `ip` (a valid IPv6 address) may not be a Service address or endpoint, or null when it may. */
export function specialIpv6(ip: string): string | null {
  for (const [cidr, why] of SPECIAL_IPV6_RANGES) if (cidrHas(cidr, ip)) return why;
  return null;
}

/** Orders addresses numerically, IPv4 before IPv6 (endpoint lists, listings). */
export function compareIps(a: string, b: string): number {
  const fa = familyOf(a);
  const fb = familyOf(b);
  if (fa !== fb) return fa === 'IPv4' ? -1 : 1;
  return Buffer.compare(ipBytes(a), ipBytes(b));
}
