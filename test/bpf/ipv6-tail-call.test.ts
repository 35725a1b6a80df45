/*
 * The entry programs reach IPv6 by a tail call through a pinned prog array per object
 * (vipr_tc_ipv6_progs_v1, vipr_xdp_ipv6_progs_v1) that the loader fills: an IPv6 frame whose
 * program is missing passes untouched and counted, a second load of the same pin dir (a restart
 * or an upgrade) finds the first object's programs there until it puts in its own, and cleanup
 * removes the pins. Through the real programs (BPF_PROG_TEST_RUN).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DatapathFixture, TC_ACT_OK, XDP_PASS, type SvcDef } from './fixture.js';
import { ETH_P_ARP, ethernet, expandIpv6, ipv4Frame, parseFrame, parseFrame6 } from './packets.js';
import { ipv6Frame } from './icmp6-packets.js';
import { IPV6_PROGRAMS, LoadedDatapath, cleanupDatapath } from '../../src/bpf/datapath.js';
import { IPPROTO_TCP, SCOPE_EXTERNAL } from '../../src/bpf/layouts.js';
import * as libbpf from '../../src/bpf/libbpf.js';

const SVC_F_EXTERNAL = 4;
const BE_F_LOCAL = 2;
const CLIENT = 'fd00:172:30::2';
const NODE6 = 'fd00:192:168:60::11';
const WEB6 = { id: 2001, vip: 'fd00:10:96::213', port: 80, targetPort: 8080, backend: 'fd00:10:244:1::11' };
/* A NodePort (vip ::) with a local backend: XDP DNATs it and hands it to the stack. */
const NODEPORT6 = { id: 2002, vip: '::', port: 30080, targetPort: 80, backend: 'fd00:10:244:1::31' };
const WEB4: SvcDef = { name: 'web4', vip: '10.0.0.213', port: 80, targetPort: 8080, backends: ['10.244.0.11'] };

const pinDir = `/sys/fs/bpf/vipr-test-ipv6-tail-${process.pid}`;
let fx: DatapathFixture;
let nextBackendId = 7001;

function addService6(s: typeof WEB6, flags: number): void {
  const m = fx.dp.maps;
  const id = nextBackendId++;
  m.backends6.update({ id }, { addr: s.backend, port: s.targetPort, proto: IPPROTO_TCP, flags: BE_F_LOCAL });
  m.backendConns.update({ id }, { active: 0 });
  m.slots.update({ svc_id: s.id, slot: 0 }, { id });
  m.sched.update(s.id, { rr_next: 0 });
  m.services6.update(
    { vip: s.vip, port: s.port, proto: IPPROTO_TCP, scope: SCOPE_EXTERNAL },
    { svc_id: s.id, backend_count: 1, flags, affinity_timeout: 0, scheduler: 0 },
  );
}

/** The prog array's slots as the kernel holds them: program ids, null for an empty slot. */
function slotIds(kind: keyof typeof IPV6_PROGRAMS): Array<number | null> {
  const fd = libbpf.objGet(join(pinDir, IPV6_PROGRAMS[kind].map));
  try {
    return IPV6_PROGRAMS[kind].slots.map(([, slot]) => {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(slot);
      const value = Buffer.alloc(4);
      return libbpf.mapLookup(fd, key, value, IPV6_PROGRAMS[kind].map) ? value.readUInt32LE(0) : null;
    });
  } finally {
    libbpf.closeFd(fd);
  }
}

/** Empties the pinned prog array, as a kernel does when its last user reference goes. */
function emptySlots(kind: keyof typeof IPV6_PROGRAMS): void {
  const fd = libbpf.objGet(join(pinDir, IPV6_PROGRAMS[kind].map));
  try {
    for (const [, slot] of IPV6_PROGRAMS[kind].slots) {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(slot);
      libbpf.mapDelete(fd, key, IPV6_PROGRAMS[kind].map);
    }
  } finally {
    libbpf.closeFd(fd);
  }
}

const syn6 = (dst: string, dport: number, sport = 42000): Buffer => ipv6Frame({ src: CLIENT, dst, proto: 'tcp', sport, dport });

beforeAll(async () => {
  fx = new DatapathFixture(pinDir);
  await fx.program([WEB4]);
  fx.dp.maps.nodeIps6.update({ addr: NODE6 }, 0);
  addService6(WEB6, 0);
  addService6(NODEPORT6, SVC_F_EXTERNAL);
  fx.dp.xdpProgram();
});

afterAll(() => fx?.close());

describe('IPv6 through the tail call', () => {
  test('with the programs in place, IPv6 is translated by TC (both directions) and XDP, and IPv4 beside it', () => {
    const inbound = fx.ingress(syn6(WEB6.vip, 80));
    expect(inbound.verdict).toBe(TC_ACT_OK);
    expect(parseFrame6(inbound.out)).toMatchObject({ dst: expandIpv6(WEB6.backend), dport: 8080, l4ChecksumOk: true });
    const reply = fx.egress(ipv6Frame({ src: WEB6.backend, dst: CLIENT, proto: 'tcp', sport: 8080, dport: 42000, tcpFlags: 0x12 }));
    expect(parseFrame6(reply.out)).toMatchObject({ src: expandIpv6(WEB6.vip), sport: 80, l4ChecksumOk: true });
    const xdp = fx.xdp(syn6(NODE6, NODEPORT6.port));
    expect(xdp.verdict).toBe(XDP_PASS);
    expect(parseFrame6(xdp.out)).toMatchObject({ dst: expandIpv6(NODEPORT6.backend), dport: 80, l4ChecksumOk: true });
    expect(parseFrame(fx.ingress(ipv4Frame({ src: '172.30.0.2', dst: WEB4.vip, proto: 'tcp', sport: 42000, dport: 80 })).out).dst).toBe('10.244.0.11');
  });

  test('an empty prog array: IPv6 passes untouched and is counted, IPv4 and ARP are not affected', () => {
    emptySlots('tc');
    emptySlots('xdp');
    expect(slotIds('tc')).toEqual([null, null]);
    const missing = fx.counter('pass_ipv6_no_program');
    const nonIp = fx.counter('pass_non_ipv4');

    const frame = syn6(WEB6.vip, 80, 42100);
    const inbound = fx.ingress(frame);
    expect(inbound).toEqual({ verdict: TC_ACT_OK, out: frame });
    const reply = ipv6Frame({ src: WEB6.backend, dst: CLIENT, proto: 'tcp', sport: 8080, dport: 42000, tcpFlags: 0x10 });
    expect(fx.egress(reply)).toEqual({ verdict: TC_ACT_OK, out: reply });
    const nodePort = syn6(NODE6, NODEPORT6.port, 42101);
    expect(fx.xdp(nodePort)).toEqual({ verdict: XDP_PASS, out: nodePort, meta: Buffer.alloc(0) });
    expect(fx.counter('pass_ipv6_no_program')).toBe(missing + 3);

    // ARP is not IPv6: counted as before, not as a missing IPv6 program.
    const arp = ethernet(ETH_P_ARP, Buffer.alloc(28));
    expect(fx.ingress(arp)).toEqual({ verdict: TC_ACT_OK, out: arp });
    expect(fx.counter('pass_non_ipv4')).toBe(nonIp + 1);
    expect(fx.counter('pass_ipv6_no_program')).toBe(missing + 3);
    // IPv4 never goes through the prog array.
    expect(parseFrame(fx.ingress(ipv4Frame({ src: '172.30.0.2', dst: WEB4.vip, proto: 'tcp', sport: 42001, dport: 80 })).out).dst).toBe('10.244.0.11');

    // Put back as the agent does before attaching: translated again.
    fx.dp.installIpv6Programs();
    expect(parseFrame6(fx.ingress(syn6(WEB6.vip, 80, 42102)).out)).toMatchObject({ dst: expandIpv6(WEB6.backend), l4ChecksumOk: true });
    expect(parseFrame6(fx.xdp(syn6(NODE6, NODEPORT6.port, 42103)).out)).toMatchObject({ dst: expandIpv6(NODEPORT6.backend), l4ChecksumOk: true });
    expect(fx.counter('pass_ipv6_no_program')).toBe(missing + 3);
  });

  test('a second load of the pin dir (restart, upgrade) finds the first object\'s programs until it puts its own in', () => {
    const first = slotIds('tc');
    const firstIds = IPV6_PROGRAMS.tc.slots.map(([name]) => libbpf.programId(fx.dp.ipv6ProgramFd(name), name));
    expect(first).toEqual(firstIds);
    const second = LoadedDatapath.load(pinDir);
    try {
      // Loaded, not yet attached: the pinned array still runs the first object's IPv6 programs.
      expect(slotIds('tc')).toEqual(firstIds);
      second.installIpv6Programs();
      const secondIds = IPV6_PROGRAMS.tc.slots.map(([name]) => libbpf.programId(second.ipv6ProgramFd(name), name));
      expect(secondIds.every((id, i) => id !== firstIds[i])).toBe(true);
      expect(slotIds('tc')).toEqual(secondIds);
      expect(parseFrame6(fx.ingress(syn6(WEB6.vip, 80, 42200)).out)).toMatchObject({ dst: expandIpv6(WEB6.backend), l4ChecksumOk: true });
    } finally {
      second.close();
    }
    // The object closed, its programs stay in the pinned array (as after an agent exits).
    expect(slotIds('tc')).toEqual(IPV6_PROGRAMS.tc.slots.map(() => expect.any(Number)));
    expect(parseFrame6(fx.ingress(syn6(WEB6.vip, 80, 42201)).out)).toMatchObject({ dst: expandIpv6(WEB6.backend), l4ChecksumOk: true });
  });
});

describe('cleanup', () => {
  test('removes both prog arrays\' pins', () => {
    const dir = `/sys/fs/bpf/vipr-test-ipv6-tail-clean-${process.pid}`;
    const other = new DatapathFixture(dir);
    other.dp.xdpProgram();
    expect(existsSync(join(dir, IPV6_PROGRAMS.tc.map))).toBe(true);
    expect(existsSync(join(dir, IPV6_PROGRAMS.xdp.map))).toBe(true);
    other.dp.close();
    const removed = cleanupDatapath(dir);
    expect(removed).toEqual(expect.arrayContaining([join(dir, IPV6_PROGRAMS.tc.map), join(dir, IPV6_PROGRAMS.xdp.map)]));
    expect(existsSync(dir)).toBe(false);
  });
});
