/*
 * The C header is the one source of truth for map layouts: every TypeScript codec must match
 * the BTF of the compiled object (member names, offsets, sizes, struct size), and every map's
 * BTF key/value types must be the structs its codecs stand for (Cilium's alignchecker).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MAPS, STAT_NAMES } from '../../src/bpf/layouts.js';
import { IPV6_PROGRAMS } from '../../src/bpf/datapath.js';
import { packageRoot, tcObjectPath } from '../../src/paths.js';

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number; bits_offset: number }>;
  vlen?: number;
}

const btf: BtfType[] = (
  JSON.parse(execFileSync('bpftool', ['btf', 'dump', 'file', tcObjectPath(), 'format', 'raw', '-j'], { encoding: 'utf8' })) as { types: BtfType[] }
).types;
const byId = new Map(btf.map((t) => [t.id, t]));

function resolve(id: number): BtfType {
  let t = byId.get(id);
  while (t && ['TYPEDEF', 'CONST', 'VOLATILE', 'RESTRICT', 'TYPE_TAG'].includes(t.kind)) t = byId.get(t.type_id ?? -1);
  if (!t) throw new Error(`BTF type ${id} not found`);
  return t;
}

function sizeOf(id: number): number {
  const t = resolve(id);
  if (t.kind === 'ARRAY') return (t.nr_elems ?? 0) * sizeOf(t.type_id ?? -1);
  if (t.size === undefined) throw new Error(`BTF type ${t.name} has no size`);
  return t.size;
}

function struct(name: string): BtfType {
  const t = btf.find((x) => x.kind === 'STRUCT' && x.name === name);
  if (!t) throw new Error(`struct ${name} not in BTF`);
  return t;
}

/** The BTF type of a map definition's key or value (`__type(key, T)` is a pointer member). */
function mapMemberType(mapName: string, member: 'key' | 'value'): BtfType {
  const datasec = btf.find((x) => x.kind === 'DATASEC' && x.name === '.maps') as unknown as { vars: Array<{ type_id: number }> };
  for (const v of datasec.vars) {
    const variable = byId.get(v.type_id);
    if (variable?.name !== mapName) continue;
    const def = resolve(variable.type_id ?? -1);
    const m = def.members?.find((x) => x.name === member);
    if (!m) throw new Error(`${mapName} has no ${member}`);
    const ptr = byId.get(m.type_id);
    return resolve(ptr?.type_id ?? -1);
  }
  throw new Error(`map ${mapName} not in .maps`);
}

const codecs = Object.values(MAPS).flatMap((m) => [m.key, m.value]);
const structCodecs = [...new Map(codecs.filter((c) => 'fields' in c).map((c) => [c.cName, c])).values()];

describe('TypeScript codecs match the BTF of bpf/tc_lb.bpf.o', () => {
  test.each(structCodecs.map((c) => [c.cName, c] as const))('struct %s', (name, codec) => {
    const s = struct(name);
    expect(codec.size).toBe(s.size);
    const fromBtf = (s.members ?? []).map((m) => ({ name: m.name, offset: m.bits_offset / 8, size: sizeOf(m.type_id) }));
    const fromTs = (codec as unknown as { fields: Array<{ name: string; offset: number; size: number }> }).fields.map((f) => ({
      name: f.name, offset: f.offset, size: f.size,
    }));
    expect(fromTs).toEqual(fromBtf);
  });

  test.each(Object.values(MAPS).map((m) => [m.name, m] as const))('map %s uses the codecs\' types', (name, spec) => {
    for (const [member, codec] of [['key', spec.key], ['value', spec.value]] as const) {
      const t = mapMemberType(name, member);
      expect(t.kind === 'STRUCT' ? t.name : 'scalar').toBe('fields' in codec ? codec.cName : 'scalar');
      expect(sizeOf(t.id)).toBe(codec.size);
    }
  });
});

describe('every map of the object has codecs', () => {
  test('the .maps section holds no vipr map MAPS does not know (IPv6 maps included)', () => {
    const datasec = btf.find((x) => x.kind === 'DATASEC' && x.name === '.maps') as unknown as { vars: Array<{ type_id: number }> };
    const declared = datasec.vars.map((v) => byId.get(v.type_id)?.name ?? '').filter((n) => n.startsWith('vipr_')).sort();
    // The IPv6 prog arrays hold program fds, no data with a layout (src/bpf/datapath.ts).
    const known = new Set([...Object.values(MAPS).map((m) => m.name), IPV6_PROGRAMS.tc.map]);
    expect(declared.filter((n) => !known.has(n))).toEqual([]);
    expect(declared).toEqual(expect.arrayContaining(['vipr_services6_v1', 'vipr_backends6_v1', 'vipr_ct6_tcp_v1', 'vipr_config6_v1']));
  });

  test('an IPv6 address field is __be32[4]: 16 bytes at a 4-byte aligned offset, read back as canonical text', () => {
    const s = struct('vipr_ct6_value');
    const nat = s.members?.find((m) => m.name === 'nat_addr');
    expect(nat && resolve(nat.type_id).kind).toBe('ARRAY');
    const key = MAPS.ctTcp6.key;
    const buf = key.encode({ saddr: 'fd00:10:244:1::2', daddr: 'fd00:10:96::213', sport: 40000, dport: 80, proto: 6, dir: 0 });
    expect(buf.subarray(0, 16).toString('hex')).toBe('fd000010024400010000000000000002');
    expect(key.decode(buf)).toEqual({ saddr: 'fd00:10:244:1::2', daddr: 'fd00:10:96::213', sport: 40000, dport: 80, proto: 6, dir: 0 });
  });
});

describe('counter names follow enum vipr_stat', () => {
  test('same names, same order', () => {
    // Enums used only as constants leave no BTF; read the header itself.
    const header = readFileSync(join(packageRoot(), 'bpf/include/vipr_types.h'), 'utf8');
    const body = /enum vipr_stat \{([\s\S]*?)\};/.exec(header)?.[1] ?? '';
    const names = [...body.matchAll(/VIPR_STAT_([A-Z0-9_]+)/g)].map((m) => (m[1] as string).toLowerCase()).filter((n) => n !== 'max');
    expect(names).toEqual([...STAT_NAMES]);
  });
});
