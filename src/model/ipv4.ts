/*
^ * The little IPv4 arithmetic vipr needs (renderers, the BPF reconciler): parse a CIDR, normalise it the way Go's
 * net.IPNet.String() prints it, and test membership. kube-proxy prints source ranges through
 * net.IPNet, so "203.0.113.5/25" must come out as "203.0.113.0/25".
 */
import { ConfigError } from '../errors.js';

export interface Ipv4Cidr {
  /** Network address as an unsigned 32-bit number. */
  network: number;
  prefix: number;
}

export function parseIpv4(ip: string): number {
  const parts = ip.trim().split('.');
  if (parts.length !== 4) throw new ConfigError(`not an IPv4 address: '${ip}'`);
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) throw new ConfigError(`not an IPv4 address: '${ip}'`);
    const octet = Number(part);
    if (octet > 255) throw new ConfigError(`not an IPv4 address: '${ip}'`);
    value = value * 256 + octet;
  }
  return value;
}

export function formatIpv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Parses `a.b.c.d/n` (or a bare address, as /32). */
export function parseIpv4Cidr(cidr: string): Ipv4Cidr {
  const [ip, prefixText] = cidr.trim().split('/');
  const prefix = prefixText === undefined ? 32 : Number(prefixText);
  if (ip === undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > 32) {
    throw new ConfigError(`not an IPv4 CIDR: '${cidr}'`);
  }
  return { network: (parseIpv4(ip) & maskOf(prefix)) >>> 0, prefix };
}

export function formatIpv4Cidr(cidr: Ipv4Cidr): string {
  return `${formatIpv4(cidr.network)}/${cidr.prefix}`;
}

/** Normalises a CIDR as Go's net.IPNet.String() does (host bits cleared). */
export function normalizeIpv4Cidr(cidr: string): string {
  return formatIpv4Cidr(parseIpv4Cidr(cidr));
}

export function cidrContains(cidr: Ipv4Cidr, ip: string): boolean {
  return ((parseIpv4(ip) & maskOf(cidr.prefix)) >>> 0) === cidr.network;
}

export function isLoopback(ip: string): boolean {
  return ip.trim().startsWith('127.');
}

/** The netmask of a prefix length, as a dotted quad. */
export function formatMask(prefix: number): string {
  return formatIpv4(maskOf(prefix));
}
