import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DesiredState } from '../../src/model/types.js';
import {
  iptablesJumpRules,
  probability,
  renderIptables,
  type IptablesSyncOptions,
} from '../../src/render/iptables.js';
import type { RenderOptions } from '../../src/render/options.js';
import { canonicalIptables } from '../fixtures/render/iptables-canonical.js';
import { desiredState, endpoint, entry, goldenState, kubeProxyOverallState, servicePort } from '../fixtures/render/state.js';
import { golden, inNetns, kubeProxyExpected } from '../fixtures/render/tools.js';

/** NewFakeProxier's configuration in kube-proxy's proxier_test.go. */
const KUBE_PROXY_TEST_OPTIONS: RenderOptions = {
  clusterCIDRs: ['10.0.0.0/8'],
  masqueradeAll: false,
  nodeIPs: ['192.168.0.2'],
  nodePortAddresses: [],
  ipvsScheduler: 'rr',
  masqueradeMark: '0x4000',
  localhostNodePorts: true,
  randomFully: false,
  nfacct: true,
};

const GOLDEN_OPTIONS: RenderOptions = {
  clusterCIDRs: ['10.244.0.0/16'],
  masqueradeAll: false,
  nodeIPs: ['192.168.0.10', '192.168.1.10'],
  nodePortAddresses: [],
  ipvsScheduler: 'rr',
  serviceCIDRs: ['10.96.0.0/16'],
};

/** What the kernel holds after restoring `text` on top of `chains` (the nat table only). */
function natChainsAfter(chains: Set<string>, text: string): Set<string> {
  const nat = text.slice(text.indexOf('*nat'));
  const next = new Set(chains);
  for (const line of nat.split('\n')) {
    if (line.startsWith(':')) next.add(line.slice(1).split(' ')[0] ?? '');
    if (line.startsWith('-X ')) next.delete(line.slice(3));
  }
  return next;
}

describe('renderIptables reproduces kube-proxy (v1.33 proxier_test.go)', () => {
  test('TestOverallIPTablesRules', () => {
    const text = renderIptables(kubeProxyOverallState(), KUBE_PROXY_TEST_OPTIONS);
    expect(canonicalIptables(text)).toBe(kubeProxyExpected('iptables-overall.txt'));
  });

  test('TestSyncProxyRulesRepeated: full sync, then partial syncs', () => {
    const svc1 = entry(servicePort('ns1', 'svc1', { clusterIP: '172.30.0.41', port: 80 }), [endpoint('10.0.1.1', 80)]);
    const svc2 = entry(servicePort('ns2', 'svc2', { clusterIP: '172.30.0.42', port: 8080, portName: 'p8080' }), [
      endpoint('10.0.2.1', 8080),
    ]);
    const svc3 = entry(servicePort('ns3', 'svc3', { clusterIP: '172.30.0.43', port: 80 }), [endpoint('10.0.3.1', 80)]);
    const svc4 = entry(servicePort('ns4', 'svc4', { clusterIP: '172.30.0.44', port: 80 }), [endpoint('10.0.4.1', 80)]);
    const svc3moved = entry(servicePort('ns3', 'svc3', { clusterIP: '172.30.0.43', port: 80 }), [endpoint('10.0.3.2', 80)]);

    let kernel = new Set<string>();
    const sync = (state: DesiredState, changed?: string[]): string => {
      const opts: IptablesSyncOptions = { existingNatChains: kernel };
      if (changed) opts.onlyChanged = new Set(changed);
      const text = renderIptables(state, KUBE_PROXY_TEST_OPTIONS, opts);
      kernel = natChainsAfter(kernel, text);
      return canonicalIptables(text);
    };

    expect(sync(desiredState([svc1, svc2]))).toBe(kubeProxyExpected('iptables-repeated-1-initial.txt'));
    expect(sync(desiredState([svc1, svc2, svc3]), ['ns3/svc3'])).toBe(kubeProxyExpected('iptables-repeated-2-add-svc3.txt'));
    expect(sync(desiredState([svc1, svc3]), ['ns2/svc2'])).toBe(kubeProxyExpected('iptables-repeated-3-delete-svc2.txt'));
    sync(desiredState([svc1, svc3, svc4]), ['ns4/svc4']);
    expect(sync(desiredState([svc1, svc3moved, svc4]), ['ns3/svc3'])).toBe(
      kubeProxyExpected('iptables-repeated-4-svc3-endpoint-changed.txt'),
    );
  });
});

describe('renderIptables', () => {
  test('golden: every feature of the fixture', () => {
    const text = renderIptables(goldenState(), GOLDEN_OPTIONS);
    expect(text).toBe(golden('iptables/full.rules', text));
  });

  test('golden: partial sync of one service declares only its chains', () => {
    const state = goldenState();
    const full = renderIptables(state, GOLDEN_OPTIONS);
    const existing = natChainsAfter(new Set(['KUBE-SVC-AAAAAAAAAAAAAAAA', 'KUBE-SEP-BBBBBBBBBBBBBBBB', 'DOCKER']), full);
    const text = renderIptables(state, GOLDEN_OPTIONS, { onlyChanged: new Set(['shop/cart']), existingNatChains: existing });
    expect(text).toBe(golden('iptables/partial-shop-cart.rules', text));
    // Stale service chains are deleted; chains that are not kube-proxy's are left alone.
    expect(text).toContain('-X KUBE-SVC-AAAAAAAAAAAAAAAA\n');
    expect(text).toContain('-X KUBE-SEP-BBBBBBBBBBBBBBBB\n');
    expect(text).not.toContain('DOCKER');
    // Unchanged services keep their KUBE-SERVICES rules but their chains are not redeclared.
    expect(text).toContain('"default/web:http cluster IP"');
    const serviceChain = /^:(KUBE-(?:SVC|SEP|EXT|FW|SVL)-\S+) /;
    const declared = new Set(text.split('\n').flatMap((l) => serviceChain.exec(l)?.[1] ?? []));
    const allServiceChains = full.split('\n').filter((l) => serviceChain.test(l));
    // shop/cart: SVC + EXT + 2 SEP chains, plus the two stale ones being deleted.
    expect(declared.size).toBe(6);
    expect(allServiceChains.length).toBeGreaterThan(declared.size);
    for (const line of text.split('\n').filter((l) => /^-A KUBE-(SVC|SEP|EXT|FW|SVL)-/.test(l))) {
      expect(declared.has(line.split(' ')[1] ?? '')).toBe(true);
    }
  });

  test('endpoint probabilities are %0.10f of 1/(n-i)', () => {
    expect(probability(2)).toBe('0.5000000000');
    expect(probability(3)).toBe('0.3333333333');
    expect(probability(7)).toBe('0.1428571429');
    const text = renderIptables(goldenState(), GOLDEN_OPTIONS);
    const web = text.split('\n').filter((l) => l.includes('default/web:http -> '));
    expect(web).toHaveLength(3);
    expect(web[0]).toContain('--probability 0.3333333333');
    expect(web[1]).toContain('--probability 0.5000000000');
    expect(web[2]).not.toContain('--probability');
  });

  test('large clusters drop the per-endpoint comments', () => {
    const endpoints = Array.from({ length: 1001 }, (_, i) => endpoint(`10.1.${Math.floor(i / 256)}.${i % 256}`, 80));
    const state = desiredState([entry(servicePort('ns1', 'big', { clusterIP: '172.30.0.9', port: 80 }), endpoints)]);
    const text = renderIptables(state, KUBE_PROXY_TEST_OPTIONS);
    const sepRules = text.split('\n').filter((l) => l.startsWith('-A KUBE-SEP-'));
    expect(sepRules).toHaveLength(2002);
    expect(sepRules.every((l) => !l.includes('--comment'))).toBe(true);
    expect(text).toContain('"ns1/big:p80 cluster IP"');
  });

  test('--masquerade-all masquerades all cluster IP traffic; no cluster CIDR means no masquerade rule', () => {
    const state = goldenState();
    const all = renderIptables(state, { ...GOLDEN_OPTIONS, masqueradeAll: true });
    expect(all).toMatch(/-A KUBE-SVC-\S+ -m comment --comment "default\/web:http cluster IP" .* --dport 80 -j KUBE-MARK-MASQ/);
    const none = renderIptables(state, { ...GOLDEN_OPTIONS, clusterCIDRs: [] });
    expect(none).not.toMatch(/cluster IP" .*-j KUBE-MARK-MASQ/);
  });

  test('--nodeport-addresses limits the NodePort tail call to matching node IPs', () => {
    const text = renderIptables(goldenState(), { ...GOLDEN_OPTIONS, nodePortAddresses: ['192.168.1.0/24'] });
    const tails = text.split('\n').filter((l) => l.endsWith('-j KUBE-NODEPORTS'));
    expect(tails).toEqual([
      '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -d 192.168.1.10 -j KUBE-NODEPORTS',
    ]);
    // Loopback not included, so no localhost NodePorts and no KUBE-FIREWALL chain.
    expect(text).not.toContain('KUBE-FIREWALL');
  });

  test('jump rules: kube-proxy iptablesJumpChains then kubelet chains', () => {
    const rules = iptablesJumpRules();
    expect(rules).toHaveLength(14);
    expect(rules[0]).toEqual({
      table: 'filter',
      chain: 'INPUT',
      target: 'KUBE-EXTERNAL-SERVICES',
      args: ['-m', 'conntrack', '--ctstate', 'NEW', '-m', 'comment', '--comment', 'kubernetes externally-visible service portals', '-j', 'KUBE-EXTERNAL-SERVICES'],
    });
    expect(rules.filter((r) => r.table === 'nat').map((r) => `${r.chain}->${r.target}`)).toEqual([
      'OUTPUT->KUBE-SERVICES',
      'PREROUTING->KUBE-SERVICES',
      'POSTROUTING->KUBE-POSTROUTING',
    ]);
    expect(rules[13]).toEqual({ table: 'filter', chain: 'OUTPUT', target: 'KUBE-FIREWALL', args: ['-j', 'KUBE-FIREWALL'] });
  });
});

describe('the real iptables-restore accepts the rendered rules (in a private netns)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'vipr-render-'));
    const state = goldenState();
    const full = renderIptables(state, GOLDEN_OPTIONS);
    writeFileSync(join(dir, 'full.rules'), full);
    const partial = renderIptables(state, GOLDEN_OPTIONS, {
      onlyChanged: new Set(['shop/front']),
      existingNatChains: natChainsAfter(new Set(), full),
    });
    writeFileSync(join(dir, 'partial.rules'), partial);
    writeFileSync(join(dir, 'broken.rules'), full.replace('--dport', '--no-such-option'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test.each(['iptables-legacy-restore', 'iptables-nft-restore'])('%s --test', (tool) => {
    const r = inNetns(`${tool} --test --noflush < ${dir}/full.rules`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test.each(['iptables-legacy-restore', 'iptables-nft-restore'])('%s: partial sync on top of a full one', (tool) => {
    const r = inNetns(`${tool} --noflush < ${dir}/full.rules && ${tool} --test --noflush < ${dir}/partial.rules`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  test.each(['iptables-legacy-restore', 'iptables-nft-restore'])('%s rejects an invalid rule (the check can fail)', (tool) => {
    const r = inNetns(`${tool} --test --noflush < ${dir}/broken.rules`);
    expect(r.status).not.toBe(0);
  });
});
