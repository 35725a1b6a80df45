/*
 * Crafting and checking Ethernet/IPv4/TCP/UDP frames for BPF_PROG_TEST_RUN fixtures. Checksums
 * are computed from scratch here (RFC 1071), independently of the kernel's incremental helpers
 * the programs use, so a wrong update shows as a mismatch.
 */

export const ETH_P_IP = 0x0800;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_ARP = 0x0806;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;

export interface Ipv4Packet {
  src: string;
  dst: string;
  proto: 'tcp' | 'udp' | 'icmp';
  sport?: number;
  dport?: number;
  tcpFlags?: number;
  payload?: Buffer;
  /** Extra IPv4 option bytes (multiple of 4). */
  ipOptions?: Buffer;
  /** Fragment flags/offset field (host order), e.g. 0x2000 for MF. */
  fragOff?: number;
  /** UDP: send with checksum 0 (none). */
  udpNoChecksum?: boolean;
  ttl?: number;
  /** IPv4 identification (default 0x1234): fragments of one datagram share it. */
  id?: number;
}

function ipBytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

export function ipString(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/** One's-complement sum of 16-bit words (not yet folded/inverted). */
function sum16(buf: Buffer, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) s += buf.readUInt16BE(i);
  if (buf.length % 2) s += (buf[buf.length - 1] as number) << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

export function checksum(buf: Buffer, initial = 0): number {
  return ~fold(sum16(buf, initial)) & 0xffff;
}

function pseudoHeaderSum(src: Buffer, dst: Buffer, proto: number, len: number): number {
  return sum16(Buffer.concat([src, dst, Buffer.from([0, proto, len >> 8, len & 0xff])]));
}

const MAC_A = Buffer.from([0x02, 0, 0, 0, 0, 0x0a]);
const MAC_B = Buffer.from([0x02, 0, 0, 0, 0, 0x0b]);

export function ethernet(ethertype: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  MAC_B.copy(h, 0);
  MAC_A.copy(h, 6);
  h.writeUInt16BE(ethertype, 12);
  return Buffer.concat([h, payload]);
}

/** A complete frame with valid IP and L4 checksums. */
export function ipv4Frame(p: Ipv4Packet): Buffer {
  const payload = p.payload ?? Buffer.alloc(0);
  const opts = p.ipOptions ?? Buffer.alloc(0);
  const src = ipBytes(p.src);
  const dst = ipBytes(p.dst);
  let l4: Buffer;
  let proto: number;
  if (p.proto === 'tcp') {
    proto = 6;
    l4 = Buffer.alloc(20);
    l4.writeUInt16BE(p.sport ?? 40000, 0);
    l4.writeUInt16BE(p.dport ?? 80, 2);
    l4.writeUInt32BE(1000, 4);
    l4.writeUInt32BE((p.tcpFlags ?? TCP_SYN) & TCP_ACK ? 2000 : 0, 8);
    l4[12] = 5 << 4;
    l4[13] = p.tcpFlags ?? TCP_SYN;
    l4.writeUInt16BE(64240, 14);
    l4 = Buffer.concat([l4, payload]);
    l4.writeUInt16BE(checksum(l4, pseudoHeaderSum(src, dst, proto, l4.length)), 16);
  } else if (p.proto === 'udp') {
    proto = 17;
    l4 = Buffer.alloc(8);
    l4.writeUInt16BE(p.sport ?? 40000, 0);
    l4.writeUInt16BE(p.dport ?? 53, 2);
    l4.writeUInt16BE(8 + payload.length, 4);
    l4 = Buffer.concat([l4, payload]);
    if (!p.udpNoChecksum) {
      let c = checksum(l4, pseudoHeaderSum(src, dst, proto, l4.length));
      if (c === 0) c = 0xffff;
      l4.writeUInt16BE(c, 6);
    }
  } else {
    proto = 1;
    l4 = Buffer.concat([Buffer.from([8, 0, 0, 0, 0, 1, 0, 1]), payload]);
    l4.writeUInt16BE(checksum(l4), 2);
  }
  const ihl = 5 + opts.length / 4;
  const ip = Buffer.alloc(20);
  ip[0] = 0x40 | ihl;
  ip.writeUInt16BE(ihl * 4 + l4.length, 2);
  ip.writeUInt16BE(p.id ?? 0x1234, 4);
  ip.writeUInt16BE(p.fragOff ?? 0x4000, 6);
  ip[8] = p.ttl ?? 64;
  ip[9] = proto;
  src.copy(ip, 12);
  dst.copy(ip, 16);
  const header = Buffer.concat([ip, opts]);
  header.writeUInt16BE(checksum(header), 10);
  return ethernet(ETH_P_IP, Buffer.concat([header, l4]));
}

export interface ParsedFrame {
  src: string;
  dst: string;
  proto: number;
  sport: number;
  dport: number;
  ipChecksumOk: boolean;
  l4ChecksumOk: boolean;
  /** UDP sent without checksum. */
  l4ChecksumAbsent: boolean;
}

/** Parses an IPv4 TCP/UDP frame and verifies both checksums from scratch. */
export function parseFrame(f: Buffer): ParsedFrame {
  const ihl = ((f[14] as number) & 0x0f) * 4;
  const ip = f.subarray(14, 14 + ihl);
  const totLen = f.readUInt16BE(16);
  const l4 = f.subarray(14 + ihl, 14 + totLen);
  const proto = f[23] as number;
  const src = f.subarray(26, 30);
  const dst = f.subarray(30, 34);
  const absent = proto === 17 && l4.readUInt16BE(6) === 0;
  const l4ok = absent || fold(sum16(l4, pseudoHeaderSum(src, dst, proto, l4.length))) === 0xffff;
  return {
    src: ipString(f, 26),
    dst: ipString(f, 30),
    proto,
    sport: l4.readUInt16BE(0),
    dport: l4.readUInt16BE(2),
    ipChecksumOk: fold(sum16(ip)) === 0xffff,
    l4ChecksumOk: l4ok,
    l4ChecksumAbsent: absent,
  };
}

export interface ParsedIcmp {
  src: string;
  dst: string;
  type: number;
  code: number;
  ipChecksumOk: boolean;
  icmpChecksumOk: boolean;
  /** What the ICMP error quotes: the offending packet's IP header and 8 bytes of its payload. */
  quote: Buffer;
}

export function parseIcmp(f: Buffer): ParsedIcmp {
  const ihl = ((f[14] as number) & 0x0f) * 4;
  const totLen = f.readUInt16BE(16);
  const icmp = f.subarray(14 + ihl, 14 + totLen);
  return {
    src: ipString(f, 26),
    dst: ipString(f, 30),
    type: icmp[0] as number,
    code: icmp[1] as number,
    ipChecksumOk: fold(sum16(f.subarray(14, 14 + ihl))) === 0xffff && f[23] === 1,
    icmpChecksumOk: fold(sum16(icmp)) === 0xffff,
    quote: Buffer.from(icmp.subarray(8)),
  };
}

/**
 * The fragments of an IPv4 frame (no options) as a sender's stack cuts it for `mtu`: the same id,
 * offsets in 8-byte units, MF on all but the last, each IP header checksum recomputed.
 */
export function fragmentFrame(frame: Buffer, mtu: number): Buffer[] {
  const header = frame.subarray(14, 34);
  const data = frame.subarray(34, 14 + frame.readUInt16BE(16));
  const chunk = Math.floor((mtu - 20) / 8) * 8;
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += chunk) {
    const part = data.subarray(off, off + chunk);
    const ip = Buffer.from(header);
    ip.writeUInt16BE(20 + part.length, 2);
    ip.writeUInt16BE((off + chunk < data.length ? 0x2000 : 0) | (off / 8), 6);
    ip.writeUInt16BE(0, 10);
    ip.writeUInt16BE(checksum(ip), 10);
    out.push(Buffer.concat([frame.subarray(0, 14), ip, part]));
  }
  return out;
}

/**
 * Reassembles fragments (any order) into one frame, as the receiver's stack would: the headers
 * must agree on addresses, id and protocol; the first fragment's header, MF cleared, fronts it.
 */
export function reassemble(frags: Buffer[]): Buffer {
  const sorted = [...frags].sort((a, b) => (a.readUInt16BE(20) & 0x1fff) - (b.readUInt16BE(20) & 0x1fff));
  const first = sorted[0] as Buffer;
  for (const f of sorted) {
    if (!f.subarray(26, 34).equals(first.subarray(26, 34)) || f.readUInt16BE(18) !== first.readUInt16BE(18) || f[23] !== first[23]) {
      throw new Error('fragments of different datagrams');
    }
  }
  const data = Buffer.concat(sorted.map((f) => f.subarray(34, 14 + f.readUInt16BE(16))));
  const ip = Buffer.from(first.subarray(14, 34));
  ip.writeUInt16BE(20 + data.length, 2);
  ip.writeUInt16BE(0, 6);
  ip.writeUInt16BE(0, 10);
  ip.writeUInt16BE(checksum(ip), 10);
  return Buffer.concat([first.subarray(0, 14), ip, data]);
}

export interface IcmpError {
  src: string;
  dst: string;
  type: number;
  code: number;
  /** Destination unreachable, fragmentation needed (code 4): the next hop's MTU. */
  mtu?: number;
  /** The frame of the packet the error is about: its IP packet is quoted. */
  about: Buffer;
  /** Bytes of the L4 header quoted; default all of the packet, as Linux quotes up to 576 bytes. */
  quoteL4?: number;
}

/** An ICMP error frame quoting `about`'s IP header and L4 bytes, with a valid checksum. */
export function icmpErrorFrame(e: IcmpError): Buffer {
  const ip = e.about.subarray(14, 14 + e.about.readUInt16BE(16));
  const ihl = ((ip[0] as number) & 0x0f) * 4;
  const quote = e.quoteL4 === undefined ? ip : ip.subarray(0, ihl + e.quoteL4);
  const icmp = Buffer.concat([Buffer.alloc(8), quote]);
  icmp[0] = e.type;
  icmp[1] = e.code;
  if (e.mtu !== undefined) icmp.writeUInt16BE(e.mtu, 6);
  icmp.writeUInt16BE(checksum(icmp), 2);
  const header = Buffer.alloc(20);
  header[0] = 0x45;
  header.writeUInt16BE(20 + icmp.length, 2);
  header.writeUInt16BE(0x4321, 4);
  header[8] = 64;
  header[9] = 1;
  ipBytes(e.src).copy(header, 12);
  ipBytes(e.dst).copy(header, 16);
  header.writeUInt16BE(checksum(header), 10);
  return ethernet(ETH_P_IP, Buffer.concat([header, icmp]));
}

/**
 * The packet an ICMP error quotes, parsed as a frame: addresses, ports, its IP checksum, and its
 * L4 checksum when the whole L4 segment is quoted (`l4Complete`).
 */
export function parseQuote(quote: Buffer): ParsedFrame & { l4Complete: boolean } {
  const complete = quote.length >= quote.readUInt16BE(2);
  const frame = ethernet(ETH_P_IP, quote);
  const ihl = ((quote[0] as number) & 0x0f) * 4;
  return {
    ...parseFrame(frame),
    ...(complete ? {} : { l4ChecksumOk: false, sport: quote.readUInt16BE(ihl), dport: quote.readUInt16BE(ihl + 2) }),
    ipChecksumOk: fold(sum16(quote.subarray(0, ihl))) === 0xffff,
    l4Complete: complete,
  };
}

/**
 * A deterministic PRNG (`rand(n)` in 0..n-1), so a fuzz failure reproduces from its seed:
 * mulberry32, whose every output bit is mixed. (A plain LCG taken modulo a small n uses only its
 * low bits, which cycle with a period of n: a fuzzer drawing a fixed number of values per packet
 * then mangles every packet the same way.)
 */
export function prng(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n: number): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

/**
 * What a fuzzer makes of a well-formed frame: half are kept intact, a quarter truncated inside L4
 * or the IP options (BPF_PROG_TEST_RUN itself refuses IPv4 frames shorter than a basic IP header,
 * so shorter ones cannot reach a program this way), a quarter get three header bytes overwritten.
 */
export function mangleFrame(frame: Buffer, rand: (n: number) => number): { frame: Buffer; intact: boolean } {
  const mode = rand(4);
  if (mode === 1) return { frame: frame.subarray(0, 34 + rand(frame.length - 34)), intact: false };
  if (mode === 2) {
    const f = Buffer.from(frame);
    for (let k = 0; k < 3; k++) f[14 + rand(f.length - 14)] = rand(256);
    return { frame: f, intact: false };
  }
  return { frame, intact: true };
}

/**
 * Offsets of the bytes NAT may change in an Ethernet/IPv4 TCP/UDP frame: addresses, ports, TTL,
 * IP and L4 checksums, and with `forwarded` the Ethernet addresses (a frame sent back out).
 */
export function natFieldOffsets(f: Buffer, forwarded = false): Set<number> {
  const ihl = ((f[14] as number) & 0x0f) * 4;
  const l4 = 14 + ihl;
  const l4Check = f[23] === 6 ? l4 + 16 : l4 + 6;
  const offsets = [22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, l4, l4 + 1, l4 + 2, l4 + 3, l4Check, l4Check + 1];
  if (forwarded) for (let i = 0; i < 12; i++) offsets.push(i);
  return new Set(offsets);
}

/** A later IPv4 fragment (offset > 0) of TCP or UDP: it has no L4 header, its ports are its first fragment's. */
export function isLaterFragment(f: Buffer): boolean {
  return f.length >= 34 && f.readUInt16BE(12) === ETH_P_IP && (f[14] as number) >> 4 === 4 &&
    (f.readUInt16BE(20) & 0x1fff) !== 0 && (f[23] === 6 || f[23] === 17);
}

/**
 * Offsets of the bytes NAT may change in a later fragment: the addresses and the IP checksum (no
 * L4 header to touch), and with `forwarded` TTL and the Ethernet addresses.
 */
export function laterFragmentNatOffsets(forwarded = false): Set<number> {
  const offsets = [24, 25, 26, 27, 28, 29, 30, 31, 32, 33];
  if (forwarded) offsets.push(22, ...Array.from({ length: 12 }, (_, i) => i));
  return new Set(offsets);
}

/** Offsets where two frames differ, and a length difference as offset -1. */
export function changedOffsets(a: Buffer, b: Buffer): number[] {
  const out: number[] = a.length === b.length ? [] : [-1];
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) out.push(i);
  return out;
}

/* IPv6 (the frames themselves: test/bpf/icmp6-packets.ts ipv6Frame). */

const IPV6_EXT_HEADERS = new Set([0, 43, 44, 51, 60]);

/**
 * `frame` (Ethernet/IPv6, no extension headers) with extension headers inserted after its IPv6
 * header, in order: hop-by-hop (0), routing (43), destination options (60) as `8 * (1 + len)`
 * bytes of PadN. The upper-layer checksum is unchanged: its pseudo-header length excludes them.
 */
export function withExtHeaders(frame: Buffer, types: number[]): Buffer {
  const ip = Buffer.from(frame.subarray(14, 54));
  const upper = ip[6] as number;
  const headers = types.map((type, i) => {
    const h = Buffer.alloc(8);
    h[0] = i + 1 < types.length ? (types[i + 1] as number) : upper;
    h[2] = 1; // PadN covering the rest
    h[3] = 4;
    if (type === 43) h.fill(0, 2); // routing type 0, segments left 0
    return h;
  });
  if (types.length > 0) ip[6] = types[0] as number;
  const rest = frame.subarray(54);
  ip.writeUInt16BE(headers.length * 8 + rest.length, 4);
  return Buffer.concat([frame.subarray(0, 14), ip, ...headers, rest]);
}

export interface ParsedFrame6 {
  src: string;
  dst: string;
  hopLimit: number;
  /** The upper-layer protocol after the extension headers. */
  proto: number;
  /** Offset of the upper-layer header; the fragment header's offset (bytes) and M flag, if any. */
  l4Off: number;
  fragOffset: number | null;
  more: boolean;
  sport: number;
  dport: number;
  /** The upper-layer checksum verified from scratch over the pseudo-header (whole datagrams only). */
  l4ChecksumOk: boolean;
  l4Checksum: number;
}

function ipv6Text(b: Buffer): string {
  const words = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(i * 2).toString(16));
  return words.join(':');
}

/** Parses an Ethernet/IPv6 frame past its extension headers; addresses as uncompressed hex words (compare with `expandIpv6`). */
export function parseFrame6(f: Buffer): ParsedFrame6 {
  const payloadLen = f.readUInt16BE(18);
  let next = f[20] as number;
  let off = 54;
  let fragOffset: number | null = null;
  let more = false;
  // Bounded as the programs' walk is, and tolerant of frames a fuzzer cut or corrupted.
  for (let n = 0; n < 16 && IPV6_EXT_HEADERS.has(next) && off + 8 <= f.length; n++) {
    if (next === 44) {
      fragOffset = f.readUInt16BE(off + 2) & 0xfff8;
      more = (f.readUInt16BE(off + 2) & 1) === 1;
      next = f[off] as number;
      off += 8;
    } else {
      const len = next === 51 ? ((f[off + 1] as number) + 2) * 4 : ((f[off + 1] as number) + 1) * 8;
      next = f[off] as number;
      off += len;
    }
  }
  const l4 = f.subarray(Math.min(off, f.length), Math.min(f.length, 54 + payloadLen));
  const src = f.subarray(22, 38);
  const dst = f.subarray(38, 54);
  const sum = fold(sum16(l4, pseudoHeader6Sum(src, dst, next, l4.length)));
  return {
    src: ipv6Text(src),
    dst: ipv6Text(dst),
    hopLimit: f[21] as number,
    proto: next,
    l4Off: off,
    fragOffset,
    more,
    sport: l4.length >= 2 ? l4.readUInt16BE(0) : 0,
    dport: l4.length >= 4 ? l4.readUInt16BE(2) : 0,
    l4ChecksumOk: sum === 0xffff,
    l4Checksum: next === 6 && l4.length >= 18 ? l4.readUInt16BE(16) : next === 17 && l4.length >= 8 ? l4.readUInt16BE(6) : 0,
  };
}

function pseudoHeader6Sum(src: Buffer, dst: Buffer, proto: number, len: number): number {
  const ph = Buffer.alloc(40);
  src.copy(ph, 0);
  dst.copy(ph, 16);
  ph.writeUInt32BE(len, 32);
  ph[39] = proto;
  return sum16(ph);
}

/** An IPv6 address as parseFrame6 prints it: eight uncompressed lowercase hex words. */
export function expandIpv6(text: string): string {
  const [head = '', tail] = text.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : Array.from({ length: 8 - h.length - t.length }, () => '0');
  return [...h, ...zeros, ...t].map((w) => parseInt(w, 16).toString(16)).join(':');
}

/**
 * The fragments of an Ethernet/IPv6 frame (no extension headers) as a sender cuts it: a fragment
 * header (id) before each piece of the upper-layer packet, offsets in 8-byte units, M on all but
 * the last. `chunk` is the piece size (a multiple of 8).
 */
export function fragmentFrame6(frame: Buffer, chunk: number, id: number): Buffer[] {
  const upper = frame[20] as number;
  const data = frame.subarray(54, 54 + frame.readUInt16BE(18));
  const out: Buffer[] = [];
  for (let off = 0; off < data.length; off += chunk) {
    const part = data.subarray(off, off + chunk);
    const fh = Buffer.alloc(8);
    fh[0] = upper;
    fh.writeUInt16BE(off | (off + chunk < data.length ? 1 : 0), 2);
    fh.writeUInt32BE(id, 4);
    const ip = Buffer.from(frame.subarray(14, 54));
    ip[6] = 44;
    ip.writeUInt16BE(8 + part.length, 4);
    out.push(Buffer.concat([frame.subarray(0, 14), ip, fh, part]));
  }
  return out;
}

/** Reassembles IPv6 fragments made by fragmentFrame6 (any order) into one frame without the fragment header. */
export function reassemble6(frags: Buffer[]): Buffer {
  const offsetOf = (f: Buffer): number => f.readUInt16BE(56) & 0xfff8;
  const sorted = [...frags].sort((a, b) => offsetOf(a) - offsetOf(b));
  const first = sorted[0] as Buffer;
  for (const f of sorted) {
    if (!f.subarray(22, 54).equals(first.subarray(22, 54)) || f.readUInt32BE(58) !== first.readUInt32BE(58)) {
      throw new Error('fragments of different datagrams');
    }
  }
  const data = Buffer.concat(sorted.map((f) => f.subarray(62, 54 + f.readUInt16BE(18))));
  const ip = Buffer.from(first.subarray(14, 54));
  ip[6] = first[54] as number;
  ip.writeUInt16BE(data.length, 4);
  return Buffer.concat([first.subarray(0, 14), ip, data]);
}
