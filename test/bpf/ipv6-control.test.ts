/*
 * The IPv6 control plane against the kernel's maps (the real object, pinned in a directory of the
 * test's own): a dual-stack state synced by the reconciler reads back from IPv6's own maps through
 * the real codecs, `vipr list -n` prints it as ipvsadm does, `vipr conntrack` lists an IPv6 flow,
 * and the GC iterators of the IPv6 conntrack maps delete an expired flow with both its entries.
 */
import { DatapathFixture } from './fixture.js';
import { CtGc } from '../../src/bpf/ct-gc.js';
import { ctSizes, monotonicNs, readFlows } from '../../src/bpf/conntrack.js';
import { readBpfListing, readCounters } from '../../src/bpf/inspect.js';
import { CT_FORWARD, CT_REPLY, IPPROTO_TCP, IPPROTO_UDP, SCOPE_EXTERNAL, type CtRole } from '../../src/bpf/layouts.js';
import { formatListing, sortListing } from '../../src/model/listing.js';
import { NODE_IP4, NODE_IP6, nginxV4, nginxV6, stateOf } from '../helpers/dual-stack.js';

const S = 1_000_000_000n;
const T = { syn: 60, established: 600, closing: 10, udp: 60 };

let fx: DatapathFixture;
let gc: CtGc;

beforeAll(() => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-ipv6-${process.pid}`, { clusterCIDRs: ['fd00:10:244::/56'] }, ctSizes({ tcp: 4096, udp: 1024 }));
  gc = CtGc.load(fx.pinDir, T);
});

afterAll(() => {
  gc?.close();
  fx?.close();
});

test('a dual-stack state lands in both families\' kernel maps and reads back decoded', async () => {
  const result = await fx.plane.sync(stateOf([nginxV4({ scheduler: 'rr' }), nginxV6({ scheduler: 'rr' })]), true);
  expect(result.failed).toEqual([]);
  const m = fx.dp.maps;
  const v6 = m.services6.lookup({ vip: 'fd00:10:96::213', port: 80, proto: IPPROTO_TCP, scope: SCOPE_EXTERNAL });
  expect(v6).not.toBeNull();
  const backendIds = [0, 1].map((slot) => m.slots.lookup({ svc_id: v6?.svc_id ?? 0, slot })?.id ?? 0);
  expect(backendIds.map((id) => m.backends6.lookup({ id })?.addr)).toEqual(['fd00:10:244:1::2', 'fd00:10:244:1::3']);
  expect(backendIds.map((id) => m.backends.lookup({ id }))).toEqual([null, null]);
  expect(m.services.lookup({ vip: '10.0.0.213', port: 80, proto: IPPROTO_TCP, scope: SCOPE_EXTERNAL })?.backend_count).toBe(2);
  expect(m.nodeIps6.entries().map(([k]) => k.addr)).toEqual([NODE_IP6]);
  expect(m.nodeIps.entries().map(([k]) => k.addr)).toEqual([NODE_IP4]);
  expect(m.config6.lookup(0)).toEqual({ snat_addr: NODE_IP6, cluster_cidr: 'fd00:10:244::', cluster_mask: 'ffff:ffff:ffff:ff00::' });
  expect(m.sourceRanges6.entries()).toHaveLength(2);
  // The new counter is read like the others.
  expect(readCounters(m).ipv6_ext_hdr_limit).toEqual({ packets: 0, bytes: 0 });

  const text = formatListing(sortListing(readBpfListing(m, fx.pinDir)), { numeric: true });
  expect(text).toContain('\nTCP  [fd00:10:96::213]:80 rr\n  -> [fd00:10:244:1::2]:80        Masq    1      0          0\n  -> [fd00:10:244:1::3]:80');
  // NodePort :: is listed on the node's IPv6 address, 0.0.0.0 on its IPv4 one.
  expect(text).toContain(`\nTCP  [${NODE_IP6}]:30080 rr\n  -> [fd00:10:244:1::2]:80 `);
  expect(text).toContain(`\nTCP  ${NODE_IP4}:30080 rr\n`);
  expect(text.indexOf('TCP  10.0.0.213:80')).toBeLessThan(text.indexOf('TCP  [fd00:10:96::213]:80'));

  // Removing the IPv6 entry empties IPv6's maps and leaves IPv4's as they were.
  const before4 = JSON.stringify([m.services.entries(), m.backends.entries()]);
  await fx.plane.sync(stateOf([nginxV4({ scheduler: 'rr' })]), true);
  expect([m.services6.entries(), m.backends6.entries(), m.sourceRanges6.entries()]).toEqual([[], [], []]);
  expect(JSON.stringify([m.services.entries(), m.backends.entries()])).toBe(before4);
});

/** A flow's two entries in an IPv6 conntrack map, last seen `idle` seconds ago. */
function seed6(table: CtRole, sport: number, idle: number): void {
  const proto = table === 'ctUdp6' ? IPPROTO_UDP : IPPROTO_TCP;
  const last = monotonicNs() - BigInt(idle) * S;
  const base = { created_ns: last, last_seen_ns: last, tcp_flags: 0, flags: 0, snat_addr: '::', snat_port: 0, svc_id: 1, backend_id: 999 };
  fx.dp.maps[table].update(
    { saddr: 'fd00:172:30::2', daddr: 'fd00:10:96::213', sport, dport: 80, proto, dir: CT_FORWARD },
    { ...base, nat_addr: 'fd00:10:244:1::2', nat_port: 8080 },
  );
  fx.dp.maps[table].update(
    { saddr: 'fd00:10:244:1::2', daddr: 'fd00:172:30::2', sport: 8080, dport: sport, proto, dir: CT_REPLY },
    { ...base, nat_addr: 'fd00:10:96::213', nat_port: 80 },
  );
}

test('vipr conntrack lists an IPv6 flow as [addr]:port; the GC deletes an expired IPv6 flow with both entries and keeps a fresh one', async () => {
  fx.flushFlows();
  seed6('ctTcp6', 40000, 30);
  seed6('ctTcp6', 40001, T.established + 5);
  seed6('ctUdp6', 40002, T.udp + 5);
  seed6('ctUdp6', 40003, 5);
  const flows = readFlows(fx.dp.maps);
  expect(flows.find((f) => f.client === '[fd00:172:30::2]:40000')).toMatchObject({
    protocol: 'TCP', frontend: '[fd00:10:96::213]:80', backend: '[fd00:10:244:1::2]:8080', state: 'established', table: 'ctTcp6', hasReply: true,
  });

  const pass = await gc.pass();
  expect(pass).toMatchObject({ ctTcp6: { deleted: 2, kept: 2 }, ctUdp6: { deleted: 2, kept: 2 }, ctTcp: { deleted: 0 } });
  expect(readFlows(fx.dp.maps).map((f) => `${f.client} ${f.state}`).sort()).toEqual(['[fd00:172:30::2]:40000 established', '[fd00:172:30::2]:40003 udp']);
  expect(fx.dp.maps.ctTcp6.entries()).toHaveLength(2);
  expect(fx.dp.maps.ctUdp6.entries()).toHaveLength(2);
});
