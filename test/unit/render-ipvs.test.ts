import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { render, RENDER_MODES } from '../../src/render/index.js';
import { IPVS_IPSETS, ipvsIptablesJumpRules, renderIpvs } from '../../src/render/ipvs.js';
import type { RenderOptions } from '../../src/render/options.js';
import { goldenState } from '../fixtures/render/state.js';
import { golden, inNetns } from '../fixtures/render/tools.js';

const GOLDEN_OPTIONS: RenderOptions = {
  clusterCIDRs: ['10.244.0.0/16'],
  masqueradeAll: false,
  nodeIPs: ['192.168.0.10', '192.168.1.10'],
  nodePortAddresses: [],
  ipvsScheduler: 'rr',
};

describe('renderIpvs', () => {
  const ipvs = renderIpvs(goldenState(), GOLDEN_OPTIONS);

  test.each([
    ['ipvs/ipvsadm.rules', ipvs.ipvsadm],
    ['ipvs/ipset.restore', ipvs.ipset],
    ['ipvs/iptables.rules', ipvs.iptables],
    ['ipvs/kube-ipvs0.addresses', `${ipvs.addresses.join('\n')}\n`],
  ])('golden %s', (path, text) => {
    expect(text).toBe(golden(path, text));
  });

  test('virtual servers: VIPs, NodePorts on every node IP, persistence, local endpoints for ETP=Local', () => {
    const lines = ipvs.ipvsadm.trim().split('\n');
    expect(lines).toContain('-A -t 10.96.0.10:80 -s rr');
    expect(lines).toContain('-A -u 10.96.0.53:53 -s rr');
    // ClientIP affinity becomes IPVS persistence, on the cluster IP and the NodePorts.
    expect(lines).toContain('-A -t 10.96.1.20:8443 -s rr -p 600');
    expect(lines).toContain('-A -t 192.168.0.10:30443 -s rr -p 600');
    expect(lines).toContain('-A -t 192.168.1.10:30443 -s rr -p 600');
    // shop/api has externalTrafficPolicy Local: the LB IP and NodePorts get the local endpoint
    // only, the cluster IP gets both.
    const realServers = (vs: string): string[] =>
      lines.filter((l) => l.startsWith(`-a ${vs} `)).map((l) => l.split(' ')[4] ?? '');
    expect(realServers('-t 10.96.1.40:80')).toEqual(['10.244.2.40:8080', '10.244.3.41:8080']);
    expect(realServers('-t 203.0.113.60:80')).toEqual(['10.244.2.40:8080']);
    expect(realServers('-t 192.168.1.10:32080')).toEqual(['10.244.2.40:8080']);
    // A service without endpoints still gets its virtual server (kube-proxy creates it first).
    expect(lines).toContain('-A -t 10.96.1.50:80 -s rr');
    expect(realServers('-t 10.96.1.50:80')).toEqual([]);
    expect(lines.filter((l) => l.startsWith('-a ')).every((l) => l.endsWith(' -m -w 1'))).toBe(true);
  });

  test('the scheduler comes from the options', () => {
    expect(renderIpvs(goldenState(), { ...GOLDEN_OPTIONS, ipvsScheduler: 'sh' }).ipvsadm).toContain('-A -t 10.96.0.10:80 -s sh');
  });

  test('ipsets: every kube-proxy set is created; entries in kube-proxy formats', () => {
    for (const set of IPVS_IPSETS) expect(ipvs.ipset).toContain(`create ${set.name} ${set.type} `);
    expect(ipvs.ipset).toContain('add KUBE-CLUSTER-IP 10.96.0.53,udp:53\n');
    expect(ipvs.ipset).toContain('add KUBE-LOAD-BALANCER-SOURCE-CIDR 203.0.113.50,tcp:443,198.51.100.0/24\n');
    // 192.168.0.0/16 admits the node, so the LB IP itself is allowed as a source.
    expect(ipvs.ipset).toContain('add KUBE-LOAD-BALANCER-SOURCE-IP 203.0.113.50,tcp:443,203.0.113.50\n');
    expect(ipvs.ipset).toContain('add KUBE-NODE-PORT-LOCAL-TCP 32080\n');
    expect(ipvs.ipset).toContain('add KUBE-LOOP-BACK 10.244.2.7,tcp:8080,10.244.2.7\n');
    expect(ipvs.ipset).toContain('add KUBE-HEALTH-CHECK-NODE-PORT 32500\n');
  });

  test('kube-ipvs0 gets every cluster, external and load balancer IP once', () => {
    expect(ipvs.addresses).toEqual([
      '10.96.0.10',
      '10.96.0.53',
      '10.96.1.40',
      '203.0.113.60',
      '10.96.1.20',
      '10.96.1.30',
      '192.0.2.7',
      '203.0.113.50',
      '10.96.1.50',
    ]);
  });

  test('iptables glue: masquerade off-cluster traffic to VIPs; src,dst without a cluster CIDR', () => {
    expect(ipvs.iptables).toContain(
      '-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ\n',
    );
    const noCidr = renderIpvs(goldenState(), { ...GOLDEN_OPTIONS, clusterCIDRs: [] }).iptables;
    expect(noCidr).toContain('--match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ\n');
    expect(ipvsIptablesJumpRules().map((r) => `${r.table}:${r.chain}->${r.target}`)).toEqual([
      'nat:OUTPUT->KUBE-SERVICES',
      'nat:PREROUTING->KUBE-SERVICES',
      'nat:POSTROUTING->KUBE-POSTROUTING',
      'filter:FORWARD->KUBE-FORWARD',
      'filter:INPUT->KUBE-NODE-PORT',
      'filter:INPUT->KUBE-PROXY-FIREWALL',
      'filter:FORWARD->KUBE-PROXY-FIREWALL',
    ]);
  });

  describe('the real ipset and iptables-restore accept it (in a private netns)', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'vipr-render-'));
      writeFileSync(join(dir, 'ipset'), ipvs.ipset);
      writeFileSync(join(dir, 'iptables'), ipvs.iptables);
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    test('ipset restore creates the sets with their entries, twice in a row', () => {
      const r = inNetns(`ipset restore < ${dir}/ipset && ipset restore < ${dir}/ipset && ipset list KUBE-CLUSTER-IP`);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toContain('10.96.1.20,tcp:8443');
      expect(r.stdout).toContain('Number of entries: 6');
    });

    test.each(['iptables-legacy-restore', 'iptables-nft-restore'])('%s --test with the sets in place', (tool) => {
      const r = inNetns(`ipset restore < ${dir}/ipset && ${tool} --test --noflush < ${dir}/iptables`);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    });
  });
});

describe('render', () => {
  test('ipvs mode concatenates the parts under headers', () => {
    const text = render('ipvs', goldenState(), GOLDEN_OPTIONS);
    const headers = text.split('\n').filter((l) => l.startsWith('# '));
    expect(headers).toEqual(['# ipvsadm -R', '# ipset restore', '# iptables-restore', '# kube-ipvs0']);
    expect(text).toContain('\n10.96.0.10/32\n');
    expect(text).toBe(golden('ipvs/render.txt', text));
  });

  test.each(RENDER_MODES)('%s mode renders the golden state', (mode) => {
    expect(render(mode, goldenState(), GOLDEN_OPTIONS).length).toBeGreaterThan(1000);
  });
});
