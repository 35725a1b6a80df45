/*
 * Crafting and checking Ethernet/IPv6 frames with ICMPv6 for BPF_PROG_TEST_RUN fixtures: TCP/UDP
 * segments, ICMPv6 errors quoting them, echo requests. As packets.ts for IPv4, every checksum is
 * computed here from scratch (RFC 1071 over the RFC 8200 pseudo-header), independently of the
 * programs' incremental updates, so a wrong update shows as a mismatch.
 */
import { formatIpv6, parseIpv6 } from '../../src/model/ip.js';
import { ETH_P_IPV6, TCP_SYN, checksum, ethernet } from './packets.js';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;

export const ICMPV6_DEST_UNREACH = 1;
export const ICMPV6_PKT_TOOBIG = 2;
export const ICMPV6_TIME_EXCEED = 3;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_PORT_UNREACH = 4;

/** The IPv6 minimum MTU (RFC 8200): an ICMPv6 error never exceeds it (RFC 4443 section 2.4 (c)). */
export const IPV6_MIN_MTU = 1280;

const ETH = 14;
const IP6 = 40;

/** The pseudo-header's sum (RFC 8200 section 8.1), not folded. */
function pseudoSum(src: Buffer, dst: Buffer, nexthdr: number, len: number): number {
  const ph = Buffer.alloc(40);
  src.copy(ph, 0);
  dst.copy(ph, 16);
  ph.writeUInt32BE(len, 32);
  ph[39] = nexthdr;
  let s = 0;
  for (let i = 0; i < 40; i += 2) s += ph.readUInt16BE(i);
  return s;
}

/** An upper-layer checksum over the pseudo-header and `l4` (its checksum field zero or not: verify by === 0). */
export function checksum6(src: Buffer, dst: Buffer, nexthdr: number, l4: Buffer): number {
  return checksum(l4, pseudoSum(src, dst, nexthdr, l4.length));
}

export interface Ipv6Packet {
  src: string;
  dst: string;
  proto: 'tcp' | 'udp' | 'icmp6';
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  payload?: Buffer;
  hopLimit?: number;
}

function ipv6Header(src: Buffer, dst: Buffer, nexthdr: number, payloadLen: number, hopLimit = 64): Buffer {
  const h = Buffer.alloc(IP6);
  h.writeUInt32BE(0x60000000, 0);
  h.writeUInt16BE(payloadLen, 4);
  h[6] = nexthdr;
  h[7] = hopLimit;
  src.copy(h, 8);
  dst.copy(h, 24);
  return h;
}

/** A complete Ethernet/IPv6 frame with a valid L4 checksum (ICMPv6: an echo request). */
export function ipv6Frame(p: Ipv6Packet): Buffer {
  const src = parseIpv6(p.src);
  const dst = parseIpv6(p.dst);
  const payload = p.payload ?? Buffer.alloc(0);
  let l4: Buffer;
  let nexthdr: number;
  if (p.proto === 'tcp') {
    nexthdr = IPPROTO_TCP;
    l4 = Buffer.alloc(20);
    l4.writeUInt16BE(p.sport ?? 40000, 0);
    l4.writeUInt16BE(p.dport ?? 80, 2);
    l4.writeUInt32BE(1000, 4);
    l4[12] = 5 << 4;
    l4[13] = p.tcpFlags ?? TCP_SYN;
    l4.writeUInt16BE(64240, 14);
    l4 = Buffer.concat([l4, payload]);
    l4.writeUInt16BE(checksum6(src, dst, nexthdr, l4), 16);
  } else if (p.proto === 'udp') {
    nexthdr = IPPROTO_UDP;
    l4 = Buffer.alloc(8);
    l4.writeUInt16BE(p.sport ?? 40000, 0);
    l4.writeUInt16BE(p.dport ?? 53, 2);
    l4.writeUInt16BE(8 + payload.length, 4);
    l4 = Buffer.concat([l4, payload]);
    l4.writeUInt16BE(checksum6(src, dst, nexthdr, l4) || 0xffff, 6);
  } else {
    nexthdr = IPPROTO_ICMPV6;
    l4 = Buffer.concat([Buffer.from([ICMPV6_ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 1]), payload]);
    l4.writeUInt16BE(checksum6(src, dst, nexthdr, l4), 2);
  }
  return ethernet(ETH_P_IPV6, Buffer.concat([ipv6Header(src, dst, nexthdr, l4.length, p.hopLimit), l4]));
}

export interface Icmp6Error {
  src: string;
  dst: string;
  type: number;
  code: number;
  /** The message's second word: Packet Too Big's MTU, Parameter Problem's pointer. */
  word?: number;
  /** The frame of the packet the error is about: its IPv6 packet is quoted. */
  about: Buffer;
  /** Bytes of the packet quoted; default all of it that fits in 1280 bytes, as RFC 4443 says. */
  quoteLen?: number;
}

/** An ICMPv6 error frame quoting `about`'s IPv6 packet, with a valid checksum. */
export function icmp6ErrorFrame(e: Icmp6Error): Buffer {
  const packet = e.about.subarray(ETH, ETH + IP6 + e.about.readUInt16BE(ETH + 4));
  const quote = packet.subarray(0, Math.min(e.quoteLen ?? packet.length, IPV6_MIN_MTU - IP6 - 8));
  const icmp = Buffer.concat([Buffer.alloc(8), quote]);
  icmp[0] = e.type;
  icmp[1] = e.code;
  icmp.writeUInt32BE(e.word ?? 0, 4);
  const src = parseIpv6(e.src);
  const dst = parseIpv6(e.dst);
  icmp.writeUInt16BE(checksum6(src, dst, IPPROTO_ICMPV6, icmp), 2);
  return ethernet(ETH_P_IPV6, Buffer.concat([ipv6Header(src, dst, IPPROTO_ICMPV6, icmp.length), icmp]));
}

export interface ParsedIcmp6 {
  src: string;
  dst: string;
  nexthdr: number;
  hopLimit: number;
  /** The IPv6 packet's length by its header (40 + payload length). */
  ipLength: number;
  type: number;
  code: number;
  /** The second word (MTU, pointer, or unused). */
  word: number;
  /** The ICMPv6 checksum, verified over the pseudo-header from scratch. */
  checksumOk: boolean;
  /** The invoking packet as quoted. */
  quote: Buffer;
}

export function parseIcmp6(f: Buffer): ParsedIcmp6 {
  const payloadLen = f.readUInt16BE(ETH + 4);
  const src = f.subarray(ETH + 8, ETH + 24);
  const dst = f.subarray(ETH + 24, ETH + 40);
  const icmp = f.subarray(ETH + IP6, ETH + IP6 + payloadLen);
  return {
    src: formatIpv6(src),
    dst: formatIpv6(dst),
    nexthdr: f[ETH + 6] as number,
    hopLimit: f[ETH + 7] as number,
    ipLength: IP6 + payloadLen,
    type: icmp[0] as number,
    code: icmp[1] as number,
    word: icmp.readUInt32BE(4),
    checksumOk: icmp.length === f.length - ETH - IP6 && checksum6(src, dst, IPPROTO_ICMPV6, icmp) === 0,
    quote: Buffer.from(icmp.subarray(8)),
  };
}

export interface ParsedQuote6 {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** The quote holds the whole L4 segment, so its checksum could be verified. */
  l4Complete: boolean;
  l4ChecksumOk: boolean;
}

/** The IPv6 TCP/UDP packet an ICMPv6 error quotes (no extension headers). */
export function parseQuote6(quote: Buffer): ParsedQuote6 {
  const src = quote.subarray(8, 24);
  const dst = quote.subarray(24, 40);
  const l4 = quote.subarray(IP6, IP6 + quote.readUInt16BE(4));
  const complete = quote.length >= IP6 + quote.readUInt16BE(4);
  return {
    src: formatIpv6(src),
    dst: formatIpv6(dst),
    sport: l4.readUInt16BE(0),
    dport: l4.readUInt16BE(2),
    l4Complete: complete,
    l4ChecksumOk: complete && checksum6(src, dst, quote[6] as number, l4) === 0,
  };
}
