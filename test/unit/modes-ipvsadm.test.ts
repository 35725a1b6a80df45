/*
 * The IPVS mode's incremental changes, as a pure function from `ipvsadm -Sn` text and the
 * renderer's -A/-a lines to the `ipvsadm -R` commands (this kernel has no IPVS to apply them),
 * and the one-line refusal of `--mode ipvs` on such a kernel.
 */
import { ipvsadmChanges, ipvsListing, parseIpvsadmSave } from '../../src/modes/ipvsadm.js';
import { detectIpvs, parseLinkAddresses } from '../../src/modes/ipvs.js';
import { renderIpvs } from '../../src/render/ipvs.js';
import type { RenderOptions } from '../../src/render/options.js';
import { DataplaneError } from '../../src/errors.js';
import { desiredState, endpoint, entry, servicePort } from '../fixtures/render/state.js';

/** As `ipvsadm -Sn` prints it. */
const CURRENT = `-A -t 10.0.0.213:80 -s rr
-a -t 10.0.0.213:80 -r 10.244.0.11:80 -m -w 1
-a -t 10.0.0.213:80 -r 10.244.0.12:80 -m -w 1
-a -t 10.0.0.213:80 -r 10.244.0.13:80 -m -w 1
-A -u 10.0.0.53:53 -s rr -p 300
-a -u 10.0.0.53:53 -r 10.244.0.11:5353 -m -w 1
-A -t 10.0.0.99:443 -s wlc
-a -t 10.0.0.99:443 -r 10.244.0.20:443 -m -w 1
-A -t 192.168.50.1:22 -s wlc
-a -t 192.168.50.1:22 -r 192.168.50.2:22 -g -w 1
`;

describe('parseIpvsadmSave', () => {
  test('virtual servers with scheduler, persistence and real servers', () => {
    const parsed = parseIpvsadmSave(CURRENT);
    expect(parsed).toHaveLength(4);
    expect(parsed[1]).toEqual({
      protocol: '-u', address: '10.0.0.53', port: 53, scheduler: 'rr', persistentSeconds: 300,
      realServers: [{ address: '10.244.0.11', port: 5353, method: '-m', weight: 1 }],
    });
    expect(parsed[3]?.realServers[0]?.method).toBe('-g');
  });

  test('-p without a timeout is ipvsadm default 300 s; fwmark services are skipped', () => {
    const parsed = parseIpvsadmSave('-A -t 10.0.0.1:80 -s sh -p\n-A -f 7 -s rr\n-a -f 7 -r 10.1.1.1:0 -g -w 1\n');
    expect(parsed).toEqual([{ protocol: '-t', address: '10.0.0.1', port: 80, scheduler: 'sh', persistentSeconds: 300, realServers: [] }]);
  });

  test('ipvsListing reads like ipvsadm -Ln', () => {
    const listing = ipvsListing(CURRENT, 'ipvs');
    expect(listing.services[0]).toMatchObject({ protocol: 'TCP', address: '10.0.0.213', port: 80, scheduler: 'rr', persistentSeconds: 0 });
    expect(listing.services[0]?.backends.map((b) => `${b.address}:${b.port} ${b.forward}`)).toEqual(['10.244.0.11:80 Masq', '10.244.0.12:80 Masq', '10.244.0.13:80 Masq']);
    expect(listing.services[3]?.backends[0]?.forward).toBe('Route');
  });
});

describe('ipvsadmChanges', () => {
  const current = parseIpvsadmSave(CURRENT);

  test('nothing to do when the kernel already matches', () => {
    expect(ipvsadmChanges(current, parseIpvsadmSave(CURRENT))).toEqual([]);
  });

  test('from nothing: every service, then its real servers', () => {
    const desired = parseIpvsadmSave('-A -t 10.0.0.1:80 -s rr -p 60\n-a -t 10.0.0.1:80 -r 10.244.0.1:8080 -m -w 1\n');
    expect(ipvsadmChanges([], desired)).toEqual(['-A -t 10.0.0.1:80 -s rr -p 60', '-a -t 10.0.0.1:80 -r 10.244.0.1:8080 -m -w 1']);
  });

  test('per service adds and edits before removals, stale services last; only owned addresses are removed', () => {
    const desired = parseIpvsadmSave(`-A -t 10.0.0.213:80 -s lc
-a -t 10.0.0.213:80 -r 10.244.0.11:80 -m -w 1
-a -t 10.0.0.213:80 -r 10.244.0.12:80 -m -w 2
-a -t 10.0.0.213:80 -r 10.244.0.14:80 -m -w 1
-A -u 10.0.0.53:53 -s rr -p 300
-a -u 10.0.0.53:53 -r 10.244.0.11:5353 -m -w 1
-A -t 10.0.0.214:80 -s rr
-a -t 10.0.0.214:80 -r 10.244.0.11:80 -m -w 1
`);
    const owned = new Set(['10.0.0.213', '10.0.0.53', '10.0.0.214', '10.0.0.99']);
    expect(ipvsadmChanges(current, desired, owned)).toEqual([
      '-E -t 10.0.0.213:80 -s lc',
      '-A -t 10.0.0.214:80 -s rr',
      '-e -t 10.0.0.213:80 -r 10.244.0.12:80 -m -w 2',
      '-a -t 10.0.0.213:80 -r 10.244.0.14:80 -m -w 1',
      '-d -t 10.0.0.213:80 -r 10.244.0.13:80',
      '-a -t 10.0.0.214:80 -r 10.244.0.11:80 -m -w 1',
      // 192.168.50.1:22 is not on kube-ipvs0 or a node address: someone else's.
      '-D -t 10.0.0.99:443',
    ]);
  });

  test('turning persistence off re-creates the service with its real servers', () => {
    const desired = parseIpvsadmSave('-A -u 10.0.0.53:53 -s rr\n-a -u 10.0.0.53:53 -r 10.244.0.11:5353 -m -w 1\n');
    expect(ipvsadmChanges(current, desired, new Set(['10.0.0.53']))).toEqual([
      '-D -u 10.0.0.53:53',
      '-A -u 10.0.0.53:53 -s rr',
      '-a -u 10.0.0.53:53 -r 10.244.0.11:5353 -m -w 1',
    ]);
  });

  test('a changed persistence timeout is an edit', () => {
    const desired = parseIpvsadmSave('-A -u 10.0.0.53:53 -s rr -p 10800\n-a -u 10.0.0.53:53 -r 10.244.0.11:5353 -m -w 1\n');
    expect(ipvsadmChanges(current, desired, new Set(['10.0.0.53']))).toEqual(['-E -u 10.0.0.53:53 -s rr -p 10800']);
  });

  test('between two renderings: one backend replaced on the VIP and on the NodePort', () => {
    const opts: RenderOptions = { clusterCIDRs: [], masqueradeAll: false, nodeIPs: ['172.30.0.1'], nodePortAddresses: [], ipvsScheduler: 'rr' };
    const svc = servicePort('default', 'web', { portName: '', type: 'NodePort', clusterIP: '10.0.0.213', port: 80, nodePort: 30080 });
    const before = renderIpvs(desiredState([entry(svc, [endpoint('10.244.0.11', 80), endpoint('10.244.0.12', 80)])]), opts);
    const after = renderIpvs(desiredState([entry(svc, [endpoint('10.244.0.12', 80), endpoint('10.244.0.13', 80)])]), opts);
    const changes = ipvsadmChanges(parseIpvsadmSave(before.ipvsadm), parseIpvsadmSave(after.ipvsadm), new Set([...before.addresses, '172.30.0.1']));
    expect(changes).toEqual([
      '-a -t 10.0.0.213:80 -r 10.244.0.13:80 -m -w 1',
      '-d -t 10.0.0.213:80 -r 10.244.0.11:80',
      '-a -t 172.30.0.1:30080 -r 10.244.0.13:80 -m -w 1',
      '-d -t 172.30.0.1:30080 -r 10.244.0.11:80',
    ]);
  });
});

describe('IPVS on this machine', () => {
  test('kube-ipvs0 addresses are read from ip -o addr', () => {
    const out = '5: kube-ipvs0    inet 10.0.0.213/32 scope global kube-ipvs0\\       valid_lft forever preferred_lft forever\n5: kube-ipvs0    inet 10.0.0.53/32 scope global kube-ipvs0\n';
    expect(parseLinkAddresses(out)).toEqual(['10.0.0.213', '10.0.0.53']);
  });

  test('a kernel without IPVS is refused in one line naming the fix', async () => {
    const err = await detectIpvs('/proc/net/vipr-test-no-such-ip_vs').then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(DataplaneError);
    const message = (err as Error).message;
    expect(message).not.toContain('\n');
    expect(message).toMatch(/^--mode ipvs: this kernel has no IPVS \(\/proc\/net\/vipr-test-no-such-ip_vs missing, 'modprobe ip_vs' /);
    expect(message).toMatch(/; use --mode bpf, iptables or nftables, or a kernel with CONFIG_IP_VS$/);
  });
});
