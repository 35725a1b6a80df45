import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderNftables } from '../../src/render/nftables.js';
import type { RenderOptions } from '../../src/render/options.js';
import { goldenState, kubeProxyOverallState } from '../fixtures/render/state.js';
import { golden, inNetns, kubeProxyExpected } from '../fixtures/render/tools.js';

/** NewFakeProxier's configuration in kube-proxy's nftables proxier_test.go. */
const KUBE_PROXY_TEST_OPTIONS: RenderOptions = {
  clusterCIDRs: ['10.0.0.0/8'],
  masqueradeAll: false,
  nodeIPs: ['192.168.0.2'],
  nodePortAddresses: ['192.168.0.2/32'],
  ipvsScheduler: 'rr',
  masqueradeMark: '0x4000',
  serviceCIDRs: ['172.30.0.0/16'],
};

const GOLDEN_OPTIONS: RenderOptions = {
  clusterCIDRs: ['10.244.0.0/16'],
  masqueradeAll: false,
  nodeIPs: ['192.168.0.10', '192.168.1.10'],
  nodePortAddresses: [],
  ipvsScheduler: 'rr',
  serviceCIDRs: ['10.96.0.0/16'],
};

/** kube-proxy's test compares transactions as sets of commands; so do we. */
function commands(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .sort();
}

describe('renderNftables', () => {
  test('reproduces kube-proxy TestOverallNFTablesRules (v1.34)', () => {
    const text = renderNftables(kubeProxyOverallState(), KUBE_PROXY_TEST_OPTIONS);
    const lines = text.split('\n');
    // Our own prologue makes the transaction replace the table atomically.
    expect(lines.slice(0, 2)).toEqual(['add table ip kube-proxy', 'delete table ip kube-proxy']);
    expect(commands(lines.slice(2).join('\n'))).toEqual(commands(kubeProxyExpected('nftables-overall.txt')));
  });

  test('golden', () => {
    const text = renderNftables(goldenState(), GOLDEN_OPTIONS);
    expect(text).toBe(golden('nftables/full.nft', text));
  });

  test('every chain is declared before anything refers to it', () => {
    const text = renderNftables(goldenState(), GOLDEN_OPTIONS);
    const declared = new Set<string>();
    for (const line of text.split('\n')) {
      const chain = /^add chain ip kube-proxy (\S+)/.exec(line);
      if (chain?.[1]) declared.add(chain[1]);
      for (const ref of line.matchAll(/(?:goto|jump) ([^\s,}]+)/g)) expect(declared.has(ref[1] ?? '')).toBe(true);
    }
  });

  test('--nodeport-addresses: nodeport-ips holds the matching node IPs', () => {
    const text = renderNftables(goldenState(), { ...GOLDEN_OPTIONS, nodePortAddresses: ['192.168.1.0/24'] });
    expect(text).toContain('add element ip kube-proxy nodeport-ips { 192.168.1.10 }\n');
    expect(text).not.toContain('nodeport-ips { 192.168.0.10 }');
    expect(text).toContain('add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports');
  });

  describe('the real nft accepts it (nft -c, in a private netns)', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'vipr-render-'));
      writeFileSync(join(dir, 'golden.nft'), renderNftables(goldenState(), GOLDEN_OPTIONS));
      writeFileSync(join(dir, 'kube-proxy.nft'), renderNftables(kubeProxyOverallState(), KUBE_PROXY_TEST_OPTIONS));
      writeFileSync(
        join(dir, 'broken.nft'),
        renderNftables(goldenState(), GOLDEN_OPTIONS).replace('numgen random mod', 'numgen chaotic mod'),
      );
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    test.each(['golden.nft', 'kube-proxy.nft'])('%s', (file) => {
      const r = inNetns(`nft -c -f ${dir}/${file}`);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    });

    test('applying twice replaces the table (the prologue makes it idempotent)', () => {
      const r = inNetns(`nft -f ${dir}/golden.nft && nft -f ${dir}/golden.nft && nft list table ip kube-proxy`);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout.match(/chain service-\S+-default\/web\/tcp\/http \{/g)).toHaveLength(1);
    });

    test('a malformed transaction is rejected (the check can fail)', () => {
      expect(inNetns(`nft -c -f ${dir}/broken.nft`).status).not.toBe(0);
    });
  });
});
