/*
 * restoreChunks (src/modes/iptables-chunks.ts): a large iptables-restore input for the nf_tables
 * backend, cut into restores that never jump to a chain not yet there, each Service's chains in
 * one; and, applied by the real iptables-nft-restore in a network namespace of its own, the same
 * rules as the one restore kube-proxy would run, over an empty table and over a changed one.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RenderOptions } from '../../src/render/options.js';
import { renderIptables } from '../../src/render/iptables.js';
import { restoreChunks } from '../../src/modes/iptables-chunks.js';
import { isIptablesServiceChainName } from '../../src/render/hash.js';
import { desiredState, endpoint, entry, kubeProxyOverallState, servicePort } from '../fixtures/render/state.js';
import { inNetns } from '../fixtures/render/tools.js';

const OPTIONS: RenderOptions = {
  clusterCIDRs: ['10.0.0.0/8'],
  masqueradeAll: false,
  nodeIPs: ['192.168.0.2'],
  nodePortAddresses: [],
  ipvsScheduler: 'rr',
};

/** n ClusterIP Services of 3 endpoints; every fourth also a NodePort with externalTrafficPolicy Local. */
function manyServices(n: number, from = 0) {
  return desiredState(
    Array.from({ length: n }, (_, k) => {
      const i = from + k;
      const local = i % 4 === 0;
      return entry(
        servicePort('bench', `svc-${i}`, {
          clusterIP: `172.30.${i >> 8}.${i & 255}`,
          port: 80,
          ...(local ? { nodePort: 30000 + i, externalPolicyLocal: true, internalPolicyLocal: false } : {}),
        }),
        [1, 2, 3].map((b) => endpoint(`10.${b}.${i >> 8}.${i & 255}`, 8080, b === 1 ? 'test-node' : 'other-node')),
      );
    }),
  );
}

/** Content lines (no table header, no COMMIT) of a restore input, sorted. */
function contentLines(text: string): string[] {
  return text.split('\n').filter((l) => l !== '' && l !== 'COMMIT' && !l.startsWith('*')).sort();
}

/** The nat chains each chunk declares, and the chains its rules jump to. */
function natChunks(chunks: string[]): Array<{ declares: Set<string>; jumps: Set<string>; deletes: Set<string> }> {
  return chunks.map((c) => {
    const nat = c.includes('*nat\n') ? c.slice(c.indexOf('*nat\n')).split('COMMIT')[0] as string : '';
    const lines = nat.split('\n');
    return {
      declares: new Set(lines.filter((l) => l.startsWith(':')).map((l) => l.slice(1).split(' ')[0] as string)),
      jumps: new Set(lines.filter((l) => l.startsWith('-A ')).map((l) => / -[jg] (\S+)/.exec(l)?.[1]).filter((t): t is string => t?.startsWith('KUBE-') ?? false)),
      deletes: new Set(lines.filter((l) => l.startsWith('-X ')).map((l) => l.slice(3))),
    };
  });
}

function nftSaveAfter(inputs: string[][]): string {
  // Each input is a sequence of restores, applied in a namespace of its own; the save afterwards,
  // counters zeroed.
  const dir = mkdtempSync(join(tmpdir(), 'vipr-chunks-'));
  try {
    const files = inputs.flat().map((text, i) => {
      const file = join(dir, `restore-${i}`);
      writeFileSync(file, text);
      return file;
    });
    const script = files.map((f) => `iptables-nft-restore --noflush < ${f}\n`).join('');
    const r = inNetns(`set -e\n${script}iptables-nft-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]/[0:0]/' | sort`);
    if (r.status !== 0) throw new Error(`iptables-nft-restore failed: ${r.stderr}`);
    return r.stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe('restoreChunks', () => {
  test('an input of no more Service chains than the limit stays one restore', () => {
    const text = renderIptables(kubeProxyOverallState(), OPTIONS);
    expect(restoreChunks(text)).toEqual([text]);
  });

  test("every line once; nothing jumps to a chain not declared before or in its restore; a Service's chains in one restore", () => {
    const text = renderIptables(manyServices(40), OPTIONS);
    const chunks = restoreChunks(text, 30);
    expect(chunks.length).toBeGreaterThan(3);
    expect(chunks.flatMap(contentLines).sort()).toEqual(contentLines(text));
    const nat = natChunks(chunks);
    const declaredSoFar = new Set<string>();
    const where = new Map<string, number>();
    nat.forEach((c, i) => {
      for (const chain of c.declares) {
        declaredSoFar.add(chain);
        if (isIptablesServiceChainName(chain)) where.set(chain, i);
      }
      for (const target of c.jumps) expect([i, target, declaredSoFar.has(target)]).toEqual([i, target, true]);
    });
    // A Service's chains (KUBE-SVC, its KUBE-SEPs, KUBE-EXT, KUBE-SVL) share a restore.
    const natText = text.slice(text.indexOf('*nat'));
    for (const line of natText.split('\n')) {
      const m = /^-A (KUBE-(?:SVC|SVL|EXT|FW)-\S+) .* -j (KUBE-(?:SVC|SVL|EXT|SEP)-\S+)/.exec(line);
      if (m) expect([m[1], where.get(m[1] as string)]).toEqual([m[1], where.get(m[2] as string)]);
    }
    // The chains leading to Services come last.
    expect(nat[nat.length - 1]?.declares.has('KUBE-SERVICES')).toBe(true);
    expect(nat.slice(0, -1).some((c) => c.declares.has('KUBE-SERVICES') || c.declares.has('KUBE-NODEPORTS'))).toBe(false);
  });

  test('stale chains are flushed and deleted in the last restore, after nothing leads to them', () => {
    const before = manyServices(40);
    const existing = renderIptables(before, OPTIONS).split('\n').filter((l) => l.startsWith(':KUBE-')).map((l) => l.slice(1).split(' ')[0] as string);
    const text = renderIptables(manyServices(30), OPTIONS, { existingNatChains: existing });
    const chunks = restoreChunks(text, 30);
    const nat = natChunks(chunks);
    const deleted = nat.flatMap((c, i) => [...c.deletes].map((d) => [d, i] as const));
    expect(deleted.length).toBeGreaterThan(0);
    for (const [, i] of deleted) expect(i).toBe(nat.length - 1);
  });

  test('a fixed chain the Services jump to that leads back to a Service: one restore', () => {
    const text = renderIptables(manyServices(40), OPTIONS);
    const svc = /^:(KUBE-SVC-\S+)/m.exec(text)?.[1] as string;
    const tangled = text.replace(/^(-A KUBE-MARK-MASQ .*)$/m, `$1\n-A KUBE-MARK-MASQ -j ${svc}`);
    expect(restoreChunks(tangled, 30)).toEqual([tangled]);
  });

  test('applied by iptables-nft-restore: the same rules as one restore, from nothing and over a changed table', () => {
    const first = renderIptables(manyServices(300), OPTIONS);
    const existing = first.split('\n').filter((l) => l.startsWith(':KUBE-')).map((l) => l.slice(1).split(' ')[0] as string);
    // The next full sync: 100 Services gone, 50 new ones.
    const second = renderIptables(manyServices(250, 100), OPTIONS, { existingNatChains: existing });
    const chunked = [restoreChunks(first, 200), restoreChunks(second, 200)];
    expect(chunked.map((c) => c.length)).toEqual([expect.any(Number), expect.any(Number)]);
    expect(Math.min(...chunked.map((c) => c.length))).toBeGreaterThan(3);
    expect(nftSaveAfter([chunked[0] as string[]])).toBe(nftSaveAfter([[first]]));
    const afterBoth = nftSaveAfter(chunked);
    expect(afterBoth).toBe(nftSaveAfter([[first], [second]]));
    expect(afterBoth).not.toContain('"bench/svc-0:p80 cluster IP"');
    expect(afterBoth).toContain('"bench/svc-349:p80 cluster IP"');
    expect(nftSaveAfter([[first]])).toContain('"bench/svc-0:p80 cluster IP"');
  });
});
