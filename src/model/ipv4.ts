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

/**
 * Ranges no Service frontend or endpoint may use, each with the reason a message gives: the API
 * server's ValidateNonSpecialIP (unspecified, loopback, link-local unicast and multicast) widened
 * to what a node must never hand to a Service: all of 0.0.0.0/8 (0.0.0.0 reads as "every local
 * address" to the kernel and to vipr's NodePort lookup), the whole multicast block, broadcast.
 */
const SPECIAL_IPV4_RANGES: ReadonlyArray<readonly [Ipv4Cidr, string]> = [
  [parseIpv4Cidr('0.0.0.0/8'), 'in 0.0.0.0/8 ("this network"; 0.0.0.0 means every local address)'],
  [parseIpv4Cidr('127.0.0.0/8'), 'in the loopback range 127.0.0.0/8'],
  [parseIpv4Cidr('169.254.0.0/16'), 'in the link-local range 169.254.0.0/16 (cloud metadata services live there)'],
  [parseIpv4Cidr('224.0.0.0/4'), 'in the multicast range 224.0.0.0/4'],
  [parseIpv4Cidr('255.255.255.255/32'), 'the broadcast address'],
];

/** Why `ip` (a valid IPv4 address) may not be a Service address or endpoint, or null when it may. */
export function specialIpv4(ip: string): string | null {
  for (const [cidr, why] of SPECIAL_IPV4_RANGES) if (cidrContains(cidr, ip)) return why;
  return null;
}
