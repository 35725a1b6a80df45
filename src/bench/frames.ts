/*
 * Ethernet + IPv4 + TCP/UDP frames for BPF_PROG_TEST_RUN in the bench (the XDP path costs), with
 * complete checksums, and the few fields read back from what the program wrote. Pure.
 */
export interface Ipv4Flow {
  proto: 'tcp' | 'udp';
  saddr: string;
  sport: number;
  daddr: string;
  dport: number;
  /** TCP: a SYN (a connection attempt) or an ACK (a packet of an established flow). */
  syn?: boolean;
  /** TCP: the flag byte itself, over `syn` (e.g. 0x12, a SYN-ACK). */
  tcpFlags?: number;
}

export interface EthAddrs {
  src: string;
  dst: string;
}

function mac(text: string): Buffer {
  const parts = text.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-f]{1,2}$/i.test(p))) throw new RangeError(`'${text}' is not a MAC address`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

function ipv4(text: string): Buffer {
  const parts = text.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new RangeError(`'${text}' is not an IPv4 address`);
  return Buffer.from(parts);
}

function sum16(buf: Buffer, sum = 0): number {
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2 === 1) sum += (buf[buf.length - 1] as number) << 8;
  return sum;
}

function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const UDP_PAYLOAD = Buffer.from('vipr north-south!!');

export function ipv4Frame(eth: EthAddrs, f: Ipv4Flow): Buffer {
  const l4 = f.proto === 'udp' ? Buffer.alloc(8 + UDP_PAYLOAD.length) : Buffer.alloc(20);
  l4.writeUInt16BE(f.sport, 0);
  l4.writeUInt16BE(f.dport, 2);
  if (f.proto === 'udp') {
    l4.writeUInt16BE(l4.length, 4);
    UDP_PAYLOAD.copy(l4, 8);
  } else {
    l4.writeUInt32BE(0x12345678, 4);
    if (!f.syn) l4.writeUInt32BE(1, 8);
    l4[12] = 5 << 4;
    l4[13] = f.tcpFlags ?? (f.syn ? 0x02 : 0x10);
    l4.writeUInt16BE(64240, 14);
  }
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + l4.length, 2);
  ip.writeUInt16BE(0x4000, 6);
  ip[8] = 64;
  ip[9] = f.proto === 'udp' ? 17 : 6;
  ipv4(f.saddr).copy(ip, 12);
  ipv4(f.daddr).copy(ip, 16);
  ip.writeUInt16BE(fold(sum16(ip)), 10);
  const pseudo = Buffer.concat([ip.subarray(12, 20), Buffer.from([0, ip[9] as number, l4.length >> 8, l4.length & 255])]);
  let check = fold(sum16(l4, sum16(pseudo)));
  if (f.proto === 'udp' && check === 0) check = 0xffff;
  l4.writeUInt16BE(check, f.proto === 'udp' ? 6 : 16);
  return Buffer.concat([mac(eth.dst), mac(eth.src), Buffer.from([0x08, 0x00]), ip, l4]);
}

/** The addresses and ports of an Ethernet + IPv4 + TCP/UDP frame. */
export function parseIpv4Frame(frame: Buffer): { saddr: string; sport: number; daddr: string; dport: number } {
  if (frame.length < 14 + 20 + 4 || frame.readUInt16BE(12) !== 0x0800) throw new RangeError('not an IPv4 frame');
  const ihl = ((frame[14] as number) & 0x0f) * 4;
  const l4 = 14 + ihl;
  const addr = (at: number): string => [...frame.subarray(at, at + 4)].join('.');
  return { saddr: addr(26), daddr: addr(30), sport: frame.readUInt16BE(l4), dport: frame.readUInt16BE(l4 + 2) };
}
