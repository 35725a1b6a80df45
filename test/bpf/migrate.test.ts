/*
 * Pinned state carried across map layouts and sizes (src/bpf/migrate.ts), at the level of the
 * maps: an object of the previous layout (dist/bpf-test/tc_lb_previous.bpf.o, one conntrack LRU)
 * holds flows, the current object is loaded over its pin dir, and every flow ends in the map of
 * its kind with both its entries; what the old programs write after the first copy arrives too;
 * the old pin goes; a grown conntrack map keeps every entry; a shrink below what it holds is
 * refused with nothing changed. The counters of vipr_stats_v1 (a map made here as the agents before
 * b715cb1 pinned it) continue in vipr_stats_v2, CPU by CPU, and its pin goes; a v1 pin an earlier
 * upgrade left next to a v2 that counts already just goes. test/e2e/upgrade.test.ts does the same
 * with live traffic.
 */
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { LoadedDatapath, cleanupDatapath } from '../../src/bpf/datapath.js';
import { BpfMap } from '../../src/bpf/map.js';
import * as libbpf from '../../src/bpf/libbpf.js';
import {
  CT_F_SEEN_REPLY, CT_F_SNAT, CT_FORWARD, CT_REPLY, CtKey, CtValue, IPPROTO_TCP, IPPROTO_UDP, MAPS, STAT_NAMES,
  type CtKeyT, type CtValueT, type StatName,
} from '../../src/bpf/layouts.js';
import { ctSizes } from '../../src/bpf/conntrack.js';
import { ConfigError } from '../../src/errors.js';
import { REPO_ROOT } from '../helpers/lab.js';

const PREVIOUS = join(REPO_ROOT, 'dist', 'bpf-test', 'tc_lb_previous.bpf.o');
const CURRENT = join(REPO_ROOT, 'bpf', 'tc_lb.bpf.o');
const pinDir = `/sys/fs/bpf/vipr-test-migrate-${process.pid}`;
const statsPinDir = `/sys/fs/bpf/vipr-test-migrate-stats-${process.pid}`;
const stalePinDir = `/sys/fs/bpf/vipr-test-migrate-stale-${process.pid}`;

const SYN = 0x02;
const ACK = 0x10;

function value(over: Partial<CtValueT>): CtValueT {
  return {
    created_ns: 1n, last_seen_ns: 2n, nat_addr: '0.0.0.0', nat_port: 0, flags: 0, tcp_flags: 0,
    snat_addr: '0.0.0.0', snat_port: 0, svc_id: 7, backend_id: 3, ...over,
  };
}

/** A flow's two entries as the datapath writes them: client → VIP:80, backend 10.244.0.3:8080. */
function flow(client: string, sport: number, proto: number, fwdFlags: number, replied: boolean, snat?: { addr: string; port: number }): Array<[CtKeyT, CtValueT]> {
  const fwd: CtKeyT = { saddr: client, daddr: '10.0.0.10', sport, dport: 80, proto, dir: CT_FORWARD };
  const rep: CtKeyT = {
    saddr: '10.244.0.3', daddr: snat?.addr ?? client, sport: 8080, dport: snat?.port ?? sport, proto, dir: CT_REPLY,
  };
  const flags = snat ? CT_F_SNAT : 0;
  return [
    [fwd, value({ nat_addr: '10.244.0.3', nat_port: 8080, tcp_flags: fwdFlags, flags, ...(snat ? { snat_addr: snat.addr, snat_port: snat.port } : {}) })],
    [rep, value({ nat_addr: '10.0.0.10', nat_port: 80, flags: flags | (replied ? CT_F_SEEN_REPLY : 0), tcp_flags: replied ? SYN | ACK : 0, ...(snat ? { snat_addr: client, snat_port: sport } : {}) })],
  ];
}

const ESTABLISHED = flow('10.244.0.9', 40001, IPPROTO_TCP, SYN | ACK, true);
const ESTABLISHED_SNAT = flow('192.168.60.1', 40002, IPPROTO_TCP, SYN | ACK, true, { addr: '192.168.60.11', port: 33000 });
const HALF_OPEN = flow('10.244.0.9', 40003, IPPROTO_TCP, SYN, false);
const UDP = flow('10.244.0.9', 40004, IPPROTO_UDP, 0, true);
const ORPHAN_REPLY = flow('10.244.0.9', 40005, IPPROTO_TCP, SYN | ACK, true)[1] as [CtKeyT, CtValueT];

function pinned(name: string): BpfMap<CtKeyT, CtValueT> {
  return new BpfMap({ name, key: CtKey, value: CtValue, perCpu: false }, libbpf.objGet(join(pinDir, name)));
}

function keysOf(map: BpfMap<CtKeyT, CtValueT>): string[] {
  return map.keys().map((k) => `${k.saddr}:${k.sport}>${k.daddr}:${k.dport}/${k.proto}/${k.dir}`).sort();
}

function names(entries: Array<[CtKeyT, CtValueT]>): string[] {
  return entries.map(([k]) => `${k.saddr}:${k.sport}>${k.daddr}:${k.dport}/${k.proto}/${k.dir}`).sort();
}

afterAll(() => {
  if (existsSync(pinDir)) cleanupDatapath(pinDir);
  if (existsSync(statsPinDir)) cleanupDatapath(statsPinDir);
  if (existsSync(stalePinDir)) cleanupDatapath(stalePinDir);
});

describe('migrating pinned maps', () => {
  test('previous layout → current: each flow lands in its map with both entries, later writes follow, the old pin goes', () => {
    expect(existsSync(PREVIOUS)).toBe(true);
    // The test build of the previous layout declares IPv6's maps too (bpf/lib/maps.h has them in
    // both builds); sized as the upgrade asks, they leave only the layout change to migrate.
    const old = LoadedDatapath.load(pinDir, PREVIOUS, { ctSizes: ctSizes({ tcp: 65536, udp: 65536 }) });
    expect(old.layout).toBe('previous');
    expect(old.migration).toBeNull();
    const before = [...ESTABLISHED, ...ESTABLISHED_SNAT, ...HALF_OPEN, ...UDP, ORPHAN_REPLY];
    for (const [k, v] of before) old.maps.ctTcp.update(k, v);
    old.maps.affinity.update({ svc_id: 7, client: '10.244.0.9' }, { last_seen_ns: 5n, backend_id: 3 });
    old.close();
    expect(readdirSync(pinDir)).toContain('vipr_conntrack_v1');
    const conntrackV1 = pinned('vipr_conntrack_v1');

    const dp = LoadedDatapath.load(pinDir, CURRENT, { ctSizes: ctSizes({ tcp: 65536, udp: 65536 }) });
    try {
      expect(dp.layout).toBe('current');
      expect(dp.migration?.describe()).toEqual(['vipr_conntrack_v1 → vipr_ct_tcp_v1, vipr_ct_tcp_syn_v1, vipr_ct_udp_v1']);
      expect(keysOf(dp.maps.ctTcp)).toEqual(names([...ESTABLISHED, ...ESTABLISHED_SNAT]));
      expect(keysOf(dp.maps.ctTcpSyn)).toEqual(names([...HALF_OPEN, ORPHAN_REPLY]));
      expect(keysOf(dp.maps.ctUdp)).toEqual(names(UDP));
      const [fwdKey, fwdValue] = ESTABLISHED_SNAT[0] as [CtKeyT, CtValueT];
      expect(dp.maps.ctTcp.lookup(fwdKey)).toEqual(fwdValue);
      expect(dp.maps.affinity.lookup({ svc_id: 7, client: '10.244.0.9' })).toEqual({ last_seen_ns: 5n, backend_id: 3 });

      // The old programs run until the swap: the half-open flow completes, and a new one starts.
      const [hoFwd, hoFwdValue] = HALF_OPEN[0] as [CtKeyT, CtValueT];
      const [hoRep, hoRepValue] = HALF_OPEN[1] as [CtKeyT, CtValueT];
      conntrackV1.update(hoFwd, { ...hoFwdValue, tcp_flags: SYN | ACK });
      conntrackV1.update(hoRep, { ...hoRepValue, flags: CT_F_SEEN_REPLY });
      dp.migration?.refresh();
      expect(keysOf(dp.maps.ctTcp)).toEqual(names([...ESTABLISHED, ...ESTABLISHED_SNAT, ...HALF_OPEN]));
      expect(keysOf(dp.maps.ctTcpSyn)).toEqual(names([ORPHAN_REPLY]));

      const late = flow('10.244.0.9', 40006, IPPROTO_UDP, 0, false);
      for (const [k, v] of late) conntrackV1.update(k, v);
      // ... while the new programs already answer a key of their own: theirs stays.
      const [udpFwd, udpFwdValue] = UDP[0] as [CtKeyT, CtValueT];
      dp.maps.ctUdp.update(udpFwd, { ...udpFwdValue, last_seen_ns: 99n });
      conntrackV1.update(udpFwd, { ...udpFwdValue, last_seen_ns: 50n });
      dp.migration?.finish();
      expect(keysOf(dp.maps.ctUdp)).toEqual(names([...UDP, ...late]));
      expect(dp.maps.ctUdp.lookup(udpFwd)?.last_seen_ns).toBe(99n);
      expect(readdirSync(pinDir).filter((f) => f.includes('conntrack') || f.includes('resizing'))).toEqual([]);
    } finally {
      conntrackV1.close();
      dp.close();
    }
  });

  test('a grown conntrack map keeps every entry; a shrink below what it holds is refused, nothing changed', () => {
    const tcpName = MAPS.ctTcp.name;
    const before = libbpf.pinnedMaxEntries(join(pinDir, tcpName));
    expect(before).toBe(65536);
    const held = keysOf(pinned(tcpName));
    expect(held.length).toBeGreaterThan(0);

    const grown = LoadedDatapath.load(pinDir, CURRENT, { ctSizes: ctSizes({ tcp: 131072, udp: 65536 }) });
    try {
      // The half-open map follows (a quarter of the established one's size), and IPv6's two the same.
      expect(grown.migration?.describe()).toEqual([
        `${tcpName}: 65536 → 131072 entries`, `${MAPS.ctTcpSyn.name}: 16384 → 32768 entries`,
        `${MAPS.ctTcp6.name}: 65536 → 131072 entries`, `${MAPS.ctTcpSyn6.name}: 16384 → 32768 entries`,
      ]);
      expect(grown.ctMaxEntries.ctTcp).toBe(131072);
      expect(keysOf(grown.maps.ctTcp)).toEqual(held);
      expect(readdirSync(pinDir)).toContain('vipr_resizing_ct_tcp_v1');
      grown.migration?.finish();
    } finally {
      grown.close();
    }
    expect(libbpf.pinnedMaxEntries(join(pinDir, tcpName))).toBe(131072);
    expect(readdirSync(pinDir).filter((f) => f.includes('resizing'))).toEqual([]);

    // Shrinking a hash (nothing evicts from it) below what it holds loses flows: refused.
    let err: unknown = null;
    try {
      LoadedDatapath.load(pinDir, CURRENT, { ctSizes: ctSizes({ tcp: 2, udp: 65536 }) }).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(new RegExp(`^${tcpName} holds ${held.length} entries and cannot shrink to 2: ask for at least ${held.length}$`));
    expect(libbpf.pinnedMaxEntries(join(pinDir, tcpName))).toBe(131072);
    expect(keysOf(pinned(tcpName))).toEqual(held);
    expect(readdirSync(pinDir).filter((f) => f.includes('resizing'))).toEqual([]);
  });

  describe('the counters of vipr_stats_v1', () => {
    const BPF_MAP_TYPE_PERCPU_ARRAY = 6;
    /* vipr_stats_v1 as b715cb1's parent declared it: VIPR_STAT_MAX (23) slots of {packets, bytes}. */
    const V1_SLOTS = 23;
    const cpus = libbpf.numPossibleCpus();
    const slot = (name: StatName): number => STAT_NAMES.indexOf(name);
    const slotKey = (index: number): Buffer => {
      const key = Buffer.alloc(4);
      key.writeUInt32LE(index);
      return key;
    };

    /** One slot of a stats map, every CPU's {packets, bytes}. */
    function readSlot(fd: number, index: number): Array<[bigint, bigint]> {
      const value = Buffer.alloc(16 * cpus);
      expect(libbpf.mapLookup(fd, slotKey(index), value, 'stats')).toBe(true);
      return Array.from({ length: cpus }, (_, c) => [value.readBigUInt64LE(c * 16), value.readBigUInt64LE(c * 16 + 8)]);
    }

    /** What a program running on `cpu` adds to one slot. */
    function count(fd: number, index: number, cpu: number, packets: bigint, bytes: bigint): void {
      const value = Buffer.alloc(16 * cpus);
      expect(libbpf.mapLookup(fd, slotKey(index), value, 'stats')).toBe(true);
      value.writeBigUInt64LE(value.readBigUInt64LE(cpu * 16) + packets, cpu * 16);
      value.writeBigUInt64LE(value.readBigUInt64LE(cpu * 16 + 8) + bytes, cpu * 16 + 8);
      libbpf.mapUpdate(fd, slotKey(index), value, 0, 'stats');
    }

    /** Pins a vipr_stats_v1 in `dir` as an agent of that layout left it, its programs counting. */
    function pinStatsV1(dir: string): number {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const fd = libbpf.mapCreate(BPF_MAP_TYPE_PERCPU_ARRAY, 'vipr_stats_v1', 4, 16, V1_SLOTS);
      libbpf.objPin(fd, join(dir, 'vipr_stats_v1'));
      for (let c = 0; c < cpus; c++) count(fd, slot('packets'), c, 1000n + BigInt(c), 64000n * BigInt(c + 1));
      count(fd, slot('xdp_redirect'), cpus - 1, 7n, 700n);
      return fd;
    }

    test('continue in vipr_stats_v2 slot by slot and CPU by CPU, the old programs\' last counts too; the v1 pin goes', () => {
      expect(STAT_NAMES.indexOf('xdp_redirect')).toBe(V1_SLOTS - 1);
      const v1 = pinStatsV1(statsPinDir);
      const dp = LoadedDatapath.load(statsPinDir, CURRENT, { ctSizes: ctSizes({ tcp: 65536, udp: 65536 }) });
      try {
        expect(dp.migration?.describe()).toEqual(['vipr_stats_v1 → vipr_stats_v2']);
        const v2 = dp.maps.stats.fd;
        const packets = Array.from({ length: cpus }, (_, c): [bigint, bigint] => [1000n + BigInt(c), 64000n * BigInt(c + 1)]);
        expect(readSlot(v2, slot('packets'))).toEqual(packets);
        expect(readSlot(v2, slot('xdp_redirect'))[cpus - 1]).toEqual([7n, 700n]);
        expect(readSlot(v2, slot('pass_non_ipv4')).every(([p, b]) => p === 0n && b === 0n)).toBe(true);

        // The old programs count until the swap ...
        count(v1, slot('packets'), 0, 5n, 500n);
        dp.migration?.refresh();
        expect(readSlot(v2, slot('packets'))[0]).toEqual([1005n, 64500n]);
        // ... then the new ones count too, and the old ones' last packets arrive.
        count(v2, slot('packets'), 0, 3n, 300n);
        count(v1, slot('packets'), 0, 2n, 200n);
        count(v1, slot('xdp_redirect'), cpus - 1, 1n, 100n);
        dp.migration?.finish();
        expect(readSlot(v2, slot('packets'))).toEqual([[1010n, 65000n], ...packets.slice(1)]);
        expect(readSlot(v2, slot('xdp_redirect'))[cpus - 1]).toEqual([8n, 800n]);
        expect(readdirSync(statsPinDir)).not.toContain('vipr_stats_v1');
        expect(readdirSync(statsPinDir)).toContain('vipr_stats_v2');
      } finally {
        libbpf.closeFd(v1);
        dp.close();
      }
    });

    test('a v1 pin an earlier upgrade left next to a v2 that counts already goes, and adds nothing', () => {
      // The node as an upgrade that did not migrate counters left it: v2 counting, the v1 pin kept.
      const upgraded = LoadedDatapath.load(stalePinDir, CURRENT, { ctSizes: ctSizes({ tcp: 65536, udp: 65536 }) });
      try {
        count(upgraded.maps.stats.fd, slot('packets'), 0, 42n, 4200n);
      } finally {
        upgraded.close();
      }
      libbpf.closeFd(pinStatsV1(stalePinDir));

      const dp = LoadedDatapath.load(stalePinDir, CURRENT, { ctSizes: ctSizes({ tcp: 65536, udp: 65536 }) });
      try {
        expect(dp.migration?.describe()).toEqual(['vipr_stats_v1 retired (vipr_stats_v2 counts already)']);
        dp.migration?.refresh();
        dp.migration?.finish();
        expect(readSlot(dp.maps.stats.fd, slot('packets'))).toEqual(
          Array.from({ length: cpus }, (_, c): [bigint, bigint] => (c === 0 ? [42n, 4200n] : [0n, 0n])),
        );
        expect(readdirSync(stalePinDir)).not.toContain('vipr_stats_v1');
      } finally {
        dp.close();
      }
    });
  });
});
