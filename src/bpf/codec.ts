/*
 * Fixed-layout struct codecs: the TypeScript mirror of bpf/include/vipr_types.h. Offsets follow
 * the C ABI (natural alignment), byte order is handled here and nowhere else: `ipv4`, `ipv6` and
 * `be16` fields are network order in memory and plain strings/numbers in TypeScript. An `ipv6`
 * field is C's `__be32 x[4]` (16 bytes, 4-byte aligned) and reads back as canonical text (RFC 5952);
 * a `mac` field is C's `__u8 x[6]` and reads back as `aa:bb:cc:dd:ee:ff`.
 *
 * test/bpf/btf-layout.test.ts compares every codec with the BTF of the compiled object (names,
 * offsets, sizes), so the header stays the one source of truth.
 */
import { isIPv6 } from 'node:net';
import { formatIpv6, parseIpv6 } from '../model/ip.js';

export type FieldType = 'u8' | 'u16' | 'u32' | 'i32' | 'u64' | 'be16' | 'be32' | 'ipv4' | 'ipv6' | 'mac' | 'pad';

const SIZES: Record<Exclude<FieldType, 'pad'>, number> = {
  u8: 1, u16: 2, u32: 4, i32: 4, u64: 8, be16: 2, be32: 4, ipv4: 4, ipv6: 16, mac: 6,
};

/** Alignment where it is not the size: an IPv6 address is four __be32 words, a MAC address six bytes. */
const ALIGN: Partial<Record<Exclude<FieldType, 'pad'>, number>> = { ipv6: 4, mac: 1 };

export interface FieldLayout {
  name: string;
  type: FieldType;
  offset: number;
  size: number;
}

type Value<F extends FieldType> = F extends 'u64' ? bigint : F extends 'ipv4' | 'ipv6' | 'mac' ? string : number;

/** [name, type] or [name, 'pad', bytes]: padding, or a member TypeScript never reads (named as in C). */
export type FieldSpec = readonly [string, Exclude<FieldType, 'pad'>] | readonly [string, 'pad', number];

/** The TypeScript object for a list of field specs (pad fields omitted). */
export type StructOf<S extends readonly FieldSpec[]> = {
  [E in S[number] as E[1] extends 'pad' ? never : E[0]]: Value<E[1]>;
};

export class StructCodec<T> {
  readonly fields: FieldLayout[];
  readonly size: number;

  constructor(readonly cName: string, specs: readonly FieldSpec[]) {
    let offset = 0;
    let align = 1;
    this.fields = specs.map((spec) => {
      const type = spec[1];
      const size = type === 'pad' ? (spec[2] as number) : SIZES[type];
      const fieldAlign = type === 'pad' ? 1 : (ALIGN[type] ?? size);
      offset = Math.ceil(offset / fieldAlign) * fieldAlign;
      align = Math.max(align, fieldAlign);
      const f = { name: spec[0], type, offset, size };
      offset += size;
      return f;
    });
    this.size = Math.ceil(offset / align) * align;
  }

  encode(value: T, buf: Buffer = Buffer.alloc(this.size), at = 0): Buffer {
    const v = value as Record<string, unknown>;
    for (const f of this.fields) {
      const o = at + f.offset;
      switch (f.type) {
        case 'u8': buf.writeUInt8(v[f.name] as number, o); break;
        case 'u16': buf.writeUInt16LE(v[f.name] as number, o); break;
        case 'u32': buf.writeUInt32LE(v[f.name] as number, o); break;
        case 'i32': buf.writeInt32LE(v[f.name] as number, o); break;
        case 'u64': buf.writeBigUInt64LE(v[f.name] as bigint, o); break;
        case 'be16': buf.writeUInt16BE(v[f.name] as number, o); break;
        case 'be32': buf.writeUInt32BE(v[f.name] as number, o); break;
        case 'ipv4': writeIpv4(buf, o, v[f.name] as string); break;
        case 'ipv6': writeIpv6(buf, o, v[f.name] as string); break;
        case 'mac': writeMac(buf, o, v[f.name] as string); break;
        case 'pad': buf.fill(0, o, o + f.size); break;
      }
    }
    return buf;
  }

  decode(buf: Buffer, at = 0): T {
    const out: Record<string, unknown> = {};
    for (const f of this.fields) {
      const o = at + f.offset;
      switch (f.type) {
        case 'u8': out[f.name] = buf.readUInt8(o); break;
        case 'u16': out[f.name] = buf.readUInt16LE(o); break;
        case 'u32': out[f.name] = buf.readUInt32LE(o); break;
        case 'i32': out[f.name] = buf.readInt32LE(o); break;
        case 'u64': out[f.name] = buf.readBigUInt64LE(o); break;
        case 'be16': out[f.name] = buf.readUInt16BE(o); break;
        case 'be32': out[f.name] = buf.readUInt32BE(o); break;
        case 'ipv4': out[f.name] = readIpv4(buf, o); break;
        case 'ipv6': out[f.name] = readIpv6(buf, o); break;
        case 'mac': out[f.name] = readMac(buf, o); break;
        case 'pad': break;
      }
    }
    return out as T;
  }
}

export function defineStruct<const S extends readonly FieldSpec[]>(cName: string, specs: S): StructCodec<StructOf<S>> {
  return new StructCodec<StructOf<S>>(cName, specs);
}

/** A bare scalar key/value (e.g. `__u32 svc_id`). */
export class U32Codec {
  readonly size = 4;
  readonly cName = '__u32';
  encode(value: number, buf: Buffer = Buffer.alloc(4), at = 0): Buffer {
    buf.writeUInt32LE(value, at);
    return buf;
  }
  decode(buf: Buffer, at = 0): number {
    return buf.readUInt32LE(at);
  }
}

export interface Codec<T> {
  readonly size: number;
  readonly cName: string;
  encode(value: T, buf?: Buffer, at?: number): Buffer;
  decode(buf: Buffer, at?: number): T;
}

const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIpv4(s: string): boolean {
  return IPV4_RE.test(s);
}

export function writeIpv4(buf: Buffer, at: number, ip: string): void {
  if (!isIpv4(ip)) throw new RangeError(`"${ip}" is not an IPv4 address`);
  const parts = ip.split('.');
  for (let i = 0; i < 4; i++) buf[at + i] = Number(parts[i]);
}

export function readIpv4(buf: Buffer, at: number): string {
  return `${buf[at]}.${buf[at + 1]}.${buf[at + 2]}.${buf[at + 3]}`;
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function writeMac(buf: Buffer, at: number, mac: string): void {
  if (!MAC_RE.test(mac)) throw new RangeError(`"${mac}" is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  const parts = mac.split(':');
  for (let i = 0; i < 6; i++) buf[at + i] = parseInt(parts[i] as string, 16);
}

export function readMac(buf: Buffer, at: number): string {
  return [...buf.subarray(at, at + 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

export function writeIpv6(buf: Buffer, at: number, ip: string): void {
  if (!isIPv6(ip)) throw new RangeError(`"${ip}" is not an IPv6 address`);
  parseIpv6(ip).copy(buf, at);
}

/** Canonical text (RFC 5952), so decoded keys compare equal to the model's addresses. */
export function readIpv6(buf: Buffer, at: number): string {
  return formatIpv6(buf.subarray(at, at + 16));
}
