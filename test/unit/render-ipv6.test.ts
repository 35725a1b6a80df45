/*
 * The IPv6 side of the fallback modes, as kube-proxy's IPv6 proxiers write it: golden files for a
 * dual-stack fixture (ip6tables-restore, table ip6 kube-proxy, IPVS with KUBE-6- ipsets), the
 * text applied with the real ip6tables-restore (both backends), nft and ipset in a network
 * namespace the test makes, read back into `vipr list -n` as ipvsadm prints IPv6.
 *
 * The goldens (test/golden/{iptables/ipv6.rules, nftables/ipv6.nft, ipvs/ipv6-*}) are what
 * kube-proxy's IPv6 proxiers write, checked against their code (pkg/proxy/iptables, nftables,
 * ipvs): same chain names as IPv4 (hashed from the ServicePortName, endpoints as
 * net.JoinHostPort's `[ip]:port`), `! -d ::1/128` on the NodePort tail call, no localhost
 * NodePorts and so no KUBE-FIREWALL localnet rule, `ip6`/`ipv6_addr`/`ip6 daddr != ::1` in
 * nftables, ipsets renamed KUBE-6- (cut to 31 characters) with family inet6. Deliberate
 * differences, the same as the IPv4 goldens': services in DesiredState order (kube-proxy walks a
 * Go map), and the IPVS objects as restore inputs (kube-proxy makes them one netlink call at a
 * time).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderIptables } from '../../src/render/iptables.js';
import { renderNftables } from '../../src/render/nftables.js';
import { IPVS_IPSETS, ipsetName, renderIpvs } from '../../src/render/ipvs.js';
import { render } from '../../src/render/index.js';
import { servicePortEndpointChainName } from '../../src/render/hash.js';
import type { RenderOptions } from '../../src/render/options.js';
import { resolveOptions } from '../../src/render/options.js';
import { iptablesListing } from '../../src/modes/iptables-save.js';
import { nftListing } from '../../src/modes/nft-listing.js';
import { ipvsListing, parseIpvsadmSave, ipvsadmChanges } from '../../src/modes/ipvsadm.js';
import { parseLinkAddresses } from '../../src/modes/ipvs.js';
import { parseCidrList, renderOptionsFromCli } from '../../src/modes/cli.js';
import { formatListing } from '../../src/model/listing.js';
import { NftTableWriter } from '../../src/render/nftables-transaction.js';
import { desiredState, dualStackState, endpoint, DUAL_STACK_NODE } from '../fixtures/render/state.js';
import { selectEndpoints } from '../../src/model/endpoints.js';
import { golden, inNetns } from '../fixtures/render/tools.js';

const OPTIONS: RenderOptions = {
  clusterCIDRs: ['10.244.0.0/16', 'fd00:10:244::/56'],
  masqueradeAll: false,
  nodeIPs: ['192.168.60.11', 'fd00:192:168:60::11'],
  nodePortAddresses: [],
  ipvsScheduler: 'rr',
  serviceCIDRs: ['10.0.0.0/24', 'fd00:10:96::/112'],
};

const state = dualStackState();
const ipv4Only = desiredState(state.services.filter((e) => e.service.family === 'IPv4'), state.node);
const v6rules = renderIptables(state, OPTIONS, { family: 'IPv6' });
const v6nft = renderNftables(state, OPTIONS, 'IPv6');
const v6ipvs = renderIpvs(state, OPTIONS, 'IPv6');

/** Every IPv4 address-looking token in a text (an IPv6 ruleset must have none). */
const ipv4Tokens = (text: string): string[] => text.match(/\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b/g) ?? [];

describe('ip6tables-restore text (kube-proxy v1.33 IPv6 proxier)', () => {
  test('golden', () => {
    expect(v6rules).toBe(golden('iptables/ipv6.rules', v6rules));
  });

  test('only the IPv6 ServicePorts, no IPv4 address anywhere', () => {
    expect(ipv4Tokens(v6rules)).toEqual([]);
    expect(v6rules).toContain('-d fd00:10:96::213 --dport 80');
    expect(v6rules).not.toContain('10.0.0.213');
  });

  test('endpoints are net.JoinHostPort: [ip]:port in the SEP hash, the comment and DNAT', () => {
    const sep = servicePortEndpointChainName('default/nginx-service:http', 'tcp', '[fd00:10:244:1::11]:80');
    expect(v6rules).toContain(`:${sep} - [0:0]\n`);
    expect(v6rules).toContain(`-A ${sep} -m comment --comment default/nginx-service:http -m tcp -p tcp -j DNAT --to-destination [fd00:10:244:1::11]:80\n`);
    expect(v6rules).toContain(`"default/nginx-service:http -> [fd00:10:244:1::11]:80"`);
    expect(v6rules).toContain(`-A ${sep} -m comment --comment default/nginx-service:http -s fd00:10:244:1::11 -j KUBE-MARK-MASQ\n`);
  });

  test('no localhost NodePorts: the NodePort tail call excludes ::1/128, no KUBE-FIREWALL localnet rule', () => {
    expect(v6rules).toContain(
      '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS\n',
    );
    expect(v6rules).not.toContain('KUBE-FIREWALL');
    expect(v6rules).not.toContain('127.0.0.0/8');
    // The IPv4 side of the same options keeps its localhost NodePorts and the mitigation.
    const v4 = renderIptables(state, OPTIONS, { family: 'IPv4' });
    expect(v4).toContain('-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8');
    expect(resolveOptions({ ...OPTIONS, nfacct: true }, 'IPv6').localhostNodePorts).toBe(false);
  });

  test('the family\'s own local detector and source ranges', () => {
    expect(v6rules).toContain('-d fd00:10:96::213 --dport 80 ! -s fd00:10:244::/56 -j KUBE-MARK-MASQ\n');
    // fd00:192:168::/48 admits the node's IPv6 address: the LB IP may come back as source.
    const fw = v6rules.split('\n').filter((l) => l.startsWith('-A KUBE-FW-'));
    expect(fw.map((l) => / -s (\S+) /.exec(l)?.[1])).toEqual(['2001:db8:100::/48', 'fd00:192:168::/48', '2001:db8:50::50', undefined]);
  });

  test('--nodeport-addresses of the other family leaves this one matching every address; ::1 is never a NodePort address', () => {
    const onlyV4 = renderIptables(state, { ...OPTIONS, nodePortAddresses: ['192.168.60.0/24'] }, { family: 'IPv6' });
    expect(onlyV4).toContain('--dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS');
    const narrowed = renderIptables(
      state,
      { ...OPTIONS, nodeIPs: [...OPTIONS.nodeIPs, '::1'], nodePortAddresses: ['::/0'.replace('::/0', 'fd00:192:168:60::/64'), '::1/128'] },
      { family: 'IPv6' },
    );
    expect(narrowed).toContain('-d fd00:192:168:60::11 -j KUBE-NODEPORTS\n');
    expect(narrowed).not.toContain('-d ::1 -j KUBE-NODEPORTS');
  });

  test('the IPv4 rendering of a dual-stack state is the IPv4-only state\'s, byte for byte', () => {
    expect(renderIptables(state, OPTIONS)).toBe(renderIptables(ipv4Only, OPTIONS));
    expect(renderNftables(state, OPTIONS)).toBe(renderNftables(ipv4Only, OPTIONS));
    expect(renderIpvs(state, OPTIONS)).toEqual(renderIpvs(ipv4Only, OPTIONS));
  });
});

describe('table ip6 kube-proxy (kube-proxy v1.34 nftables IPv6 proxier)', () => {
  test('golden', () => {
    expect(v6nft).toBe(golden('nftables/ipv6.nft', v6nft));
  });

  test('ip6 matches, ipv6_addr sets, [ip]:port dnat, ::1 excluded from NodePorts', () => {
    expect(ipv4Tokens(v6nft)).toEqual([]);
    expect(v6nft).toMatch(/^add table ip6 kube-proxy\ndelete table ip6 kube-proxy\n/);
    expect(v6nft).not.toMatch(/ ip kube-proxy| ip daddr| ip saddr|ipv4_addr/);
    expect(v6nft).toContain('add set ip6 kube-proxy cluster-ips { type ipv6_addr ; comment "Active ClusterIPs" ; }');
    expect(v6nft).toContain('fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports');
    expect(v6nft).toContain('meta l4proto tcp dnat to [fd00:10:244:1::11]:80');
    expect(v6nft).toContain('ip6 daddr fd00:10:96::213 ip6 saddr != fd00:10:244::/56 jump mark-for-masquerade');
    expect(v6nft).toContain('{ type ipv6_addr ; flags dynamic,timeout ; timeout 600s ; }');
    expect(v6nft).toContain('update @affinity-');
    expect(v6nft).toContain('{ ip6 saddr }');
    expect(v6nft).toContain('ip6 daddr { fd00:10:96::/112 } drop');
  });
});

describe('incremental nftables per family', () => {
  test("a change to a Service's IPv6 port rewrites it in table ip6 only, keyed by its IPv6 entry", () => {
    const v4 = new NftTableWriter(OPTIONS, undefined, 'IPv4');
    const v6 = new NftTableWriter(OPTIONS, undefined, 'IPv6');
    for (const w of [v4, v6]) w.plan({ state, full: true, changed: null, installed: null, now: 0 }).commit();
    // One more IPv6 endpoint for nginx-service; its IPv4 port is unchanged.
    const services = state.services.map((e) => {
      if (e.key !== 'default/nginx-service:http IPv6') return e;
      const endpoints = [...e.endpoints, endpoint('fd00:10:244:2::14', 80, 'node-b', DUAL_STACK_NODE)];
      return { ...e, endpoints, selection: selectEndpoints(endpoints, e.service, DUAL_STACK_NODE) };
    });
    const next = { ...state, services };
    const changed = new Set(['default/nginx-service']);
    const plan4 = v4.plan({ state: next, full: false, changed, installed: null, now: 1 });
    const plan6 = v6.plan({ state: next, full: false, changed, installed: null, now: 1 });
    expect(plan4.transactions).toEqual([]);
    expect(plan6.changed).toEqual(['default/nginx-service:http IPv6']);
    expect(plan6.transactions.join('')).toContain('add rule ip6 kube-proxy endpoint-');
    expect(plan6.transactions.join('')).toContain('dnat to [fd00:10:244:2::14]:80');
    expect(plan6.transactions.join('')).not.toMatch(/ ip kube-proxy /);
  });
});

describe('IPVS for IPv6 (kube-proxy IPVS IPv6 proxier)', () => {
  test('golden', () => {
    for (const [path, text] of [
      ['ipvs/ipv6-ipvsadm.rules', v6ipvs.ipvsadm],
      ['ipvs/ipv6-ipset.restore', v6ipvs.ipset],
      ['ipvs/ipv6-ip6tables.rules', v6ipvs.iptables],
      ['ipvs/dual-stack-render.txt', render('ipvs', state, OPTIONS)],
    ] as const) {
      expect(text).toBe(golden(path, text));
    }
  });

  test('ipsets are KUBE-6-…, cut to 31 characters, family inet6; bitmap sets keep their range', () => {
    expect(ipsetName('KUBE-CLUSTER-IP', 'IPv6')).toBe('KUBE-6-CLUSTER-IP');
    expect(ipsetName('KUBE-LOAD-BALANCER-SOURCE-CIDR', 'IPv6')).toBe('KUBE-6-LOAD-BALANCER-SOURCE-CID');
    expect(ipsetName('KUBE-NODE-PORT-LOCAL-SCTP-HASH', 'IPv6')).toBe('KUBE-6-NODE-PORT-LOCAL-SCTP-HAS');
    expect(ipsetName('KUBE-CLUSTER-IP', 'IPv4')).toBe('KUBE-CLUSTER-IP');
    for (const set of IPVS_IPSETS) expect(ipsetName(set.name, 'IPv6').length).toBeLessThanOrEqual(31);
    expect(v6ipvs.ipset).toContain('create KUBE-6-CLUSTER-IP hash:ip,port family inet6 hashsize 1024 maxelem 65536 comment -exist\n');
    expect(v6ipvs.ipset).toContain('create KUBE-6-NODE-PORT-TCP bitmap:port range 0-65535 comment -exist\n');
    expect(v6ipvs.ipset).toContain('add KUBE-6-CLUSTER-IP fd00:10:96::213,tcp:80\n');
    expect(v6ipvs.ipset).toContain('add KUBE-6-LOAD-BALANCER-SOURCE-CID 2001:db8:50::50,tcp:443,2001:db8:100::/48\n');
    expect(v6ipvs.ipset).toContain('add KUBE-6-LOOP-BACK fd00:10:244:1::11,tcp:80,fd00:10:244:1::11\n');
    expect(v6ipvs.iptables).toContain('-m set --match-set KUBE-6-CLUSTER-IP dst,dst ! -s fd00:10:244::/56 -j KUBE-MARK-MASQ');
    expect(v6ipvs.iptables).not.toMatch(/--match-set KUBE-(?!6-)/);
  });

  test('virtual and real servers as ipvsadm writes IPv6; kube-ipvs0 addresses as /128', () => {
    expect(v6ipvs.ipvsadm).toContain('-A -t [fd00:10:96::213]:80 -s rr\n');
    expect(v6ipvs.ipvsadm).toContain('-a -t [fd00:10:96::213]:80 -r [fd00:10:244:1::11]:80 -m -w 1\n');
    expect(v6ipvs.ipvsadm).toContain('-A -t [fd00:192:168:60::11]:30080 -s rr\n');
    expect(v6ipvs.ipvsadm).toContain('-A -u [fd00:10:96::53]:53 -s rr\n');
    expect(render('ipvs', state, OPTIONS)).toContain('\nfd00:10:96::213/128\n');
    // ipvsadm -Sn as it prints IPv6 reads back into the same servers: nothing to change.
    expect(ipvsadmChanges(parseIpvsadmSave(v6ipvs.ipvsadm), parseIpvsadmSave(v6ipvs.ipvsadm))).toEqual([]);
    expect(parseLinkAddresses('5: kube-ipvs0    inet6 fd00:10:96::213/128 scope global \\       valid_lft forever\n5: kube-ipvs0    inet6 fe80::1/64 scope link')).toEqual(['fd00:10:96::213']);
  });
});

describe('vipr render prints both families, IPv4 first, each labelled', () => {
  test.each(['iptables', 'nftables', 'ipvs'] as const)('%s', (mode) => {
    const text = render(mode, state, OPTIONS);
    const v4 = text.indexOf("# IPv4: kube-proxy's IPv4 proxier");
    const v6 = text.indexOf("# IPv6: kube-proxy's IPv6 proxier");
    expect(v4).toBe(0);
    expect(v6).toBeGreaterThan(v4);
    expect(text.slice(v6)).toContain('fd00:10:96::213');
    expect(text.slice(0, v6)).not.toContain('fd00:10:96::213');
    // An IPv4-only cluster prints what it always did: no labels.
    expect(render(mode, ipv4Only, { ...OPTIONS, nodeIPs: ['192.168.60.11'] })).not.toContain('# IPv4:');
  });
});

describe('--cluster-cidr and --nodeport-addresses take both families', () => {
  test("kube-proxy's comma form, either flag repeated", () => {
    const opts = renderOptionsFromCli({
      'cluster-cidr': '10.244.0.0/16,fd00:10:244::/56',
      'nodeport-addresses': ['192.168.60.0/24,fd00:192:168:60::/64', '127.0.0.1/32'],
      'node-ip': ['192.168.60.11', 'FD00:192:168:60:0:0:0:11'],
    });
    expect(opts.clusterCIDRs).toEqual(['10.244.0.0/16', 'fd00:10:244::/56']);
    expect(opts.nodePortAddresses).toEqual(['192.168.60.0/24', 'fd00:192:168:60::/64', '127.0.0.1/32']);
    expect(opts.nodeIPs).toEqual(['192.168.60.11', 'fd00:192:168:60::11']);
    expect(resolveOptions(opts, 'IPv6').clusterCIDR).toBe('fd00:10:244::/56');
    expect(resolveOptions(opts, 'IPv4').clusterCIDR).toBe('10.244.0.0/16');
  });

  test.each([
    ['cluster-cidr', '10.244.0.0/16,fd00:10:244::/129', /^--cluster-cidr fd00:10:244::\/129: not a CIDR/],
    ['cluster-cidr', '10.244.0.0/16,10.245.0.0/16', /^--cluster-cidr 10.244.0.0\/16,10.245.0.0\/16: two IPv4 CIDRs .*at most one per family$/],
    ['cluster-cidr', '10.244.0.0/16,', /^--cluster-cidr 10.244.0.0\/16,: empty CIDR/],
    ['nodeport-addresses', 'fd00::zz/64', /^--nodeport-addresses fd00::zz\/64: not a CIDR/],
  ])('--%s %s: one line naming it', (flag, value, message) => {
    const values = flag === 'cluster-cidr' ? { 'cluster-cidr': value } : { 'nodeport-addresses': [value] };
    let error: Error | null = null;
    try {
      renderOptionsFromCli(values);
    } catch (err) {
      error = err as Error;
    }
    expect(error?.message).toMatch(message);
    expect(error?.message).not.toContain('\n');
    expect(() => parseCidrList('x', ['fd00::/64,10.0.0.0/8'])).not.toThrow();
  });
});

describe('applied with the real tools in a network namespace of its own', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vipr-ipv6-render-'));
    writeFileSync(join(dir, 'v6.rules'), v6rules);
    writeFileSync(join(dir, 'v4.rules'), renderIptables(state, OPTIONS));
    writeFileSync(join(dir, 'v6.nft'), v6nft);
    writeFileSync(join(dir, 'ipset.restore'), v6ipvs.ipset);
    writeFileSync(join(dir, 'ipvs-ip6tables.rules'), v6ipvs.iptables);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test.each(['legacy', 'nft'])('ip6tables-%s-restore applies it; ip6tables-save reads back into vipr list -n', (backend) => {
    const r = inNetns(`ip6tables-${backend}-restore --noflush < ${dir}/v6.rules && ip6tables-${backend}-save`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('-j DNAT --to-destination [fd00:10:244:1::11]:80');
    // ip6tables' REJECT answers with its own default: ICMPv6 port unreachable.
    expect(r.stdout).toContain('-j REJECT --reject-with icmp6-port-unreachable');
    const listing = formatListing(iptablesListing(r.stdout, `ip6tables-${backend}`, 'IPv6'), { numeric: true });
    expect(listing).toContain('\nTCP  [fd00:10:96::213]:80 random\n');
    expect(listing).toContain('\n  -> [fd00:10:244:1::11]:80');
    expect(listing).toContain('\nUDP  [fd00:10:96::53]:53 random\n');
    expect(listing).toContain('\nTCP  [::]:30080 random\n');
  });

  test.each(['legacy', 'nft'])('the family matters: iptables-%s-restore refuses the IPv6 text, ip6tables the IPv4 text', (backend) => {
    expect(inNetns(`iptables-${backend}-restore --test --noflush < ${dir}/v6.rules`).status).not.toBe(0);
    expect(inNetns(`ip6tables-${backend}-restore --test --noflush < ${dir}/v4.rules`).status).not.toBe(0);
  });

  test('nft -f applies table ip6 kube-proxy; nft -j lists it back into vipr list -n', () => {
    const r = inNetns(`nft -f ${dir}/v6.nft && nft -j list table ip6 kube-proxy`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const listing = formatListing(nftListing(r.stdout, 'table ip6 kube-proxy', 'ip6'), { numeric: true });
    expect(listing).toContain('\nTCP  [fd00:10:96::213]:80 random\n');
    for (const ep of ['[fd00:10:244:1::11]:80', '[fd00:10:244:2::12]:80', '[fd00:10:244:2::13]:80']) expect(listing).toContain(`\n  -> ${ep}`);
    expect(listing).toContain('\nTCP  [2001:db8:50::50]:443 random persistent 600\n');
    expect(listing).toContain('\nTCP  [::]:30080 random\n');
  });

  test('ipset restore makes the KUBE-6- sets; ip6tables-restore applies the IPVS glue that matches them (both backends)', () => {
    for (const backend of ['legacy', 'nft']) {
      const r = inNetns(
        `ipset restore -exist < ${dir}/ipset.restore && ip6tables-${backend}-restore --noflush < ${dir}/ipvs-ip6tables.rules && ipset list -n && ipset list KUBE-6-CLUSTER-IP`,
      );
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('KUBE-6-LOAD-BALANCER-SOURCE-CID\n');
      expect(r.stdout).toContain('Header: family inet6');
      expect(r.stdout).toContain('fd00:10:96::213,tcp:80');
    }
  });

  test('ipvsadm -Sn text with IPv6 lists as ipvsadm -Ln does', () => {
    const text = formatListing(ipvsListing(v6ipvs.ipvsadm, 'ipvs'), { numeric: true });
    expect(text).toContain('\nTCP  [fd00:10:96::213]:80 rr\n');
    expect(text).toContain('\n  -> [fd00:10:244:1::11]:80       Masq    1      0          0\n');
  });
});
