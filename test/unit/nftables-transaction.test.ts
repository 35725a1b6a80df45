/*
 * The incremental nftables transactions (kube-proxy's partial syncs): what one changed Service
 * costs, when stale chains go, and that affinity sets of other Services are never touched.
 * The transactions are also applied with the real nft in a throwaway network namespace.
 */
import { NftTableWriter, STALE_CHAIN_DELAY_MS, type NftSyncRequest } from '../../src/render/nftables-transaction.js';
import { renderNftables } from '../../src/render/nftables.js';
import type { RenderOptions } from '../../src/render/options.js';
import type { DesiredState } from '../../src/model/types.js';
import { desiredState, endpoint, entry, servicePort } from '../fixtures/render/state.js';
import { inNetns } from '../fixtures/render/tools.js';

const OPTS: RenderOptions = {
  clusterCIDRs: ['10.244.0.0/16'],
  masqueradeAll: false,
  nodeIPs: ['192.168.0.10'],
  nodePortAddresses: [],
  ipvsScheduler: 'rr',
  serviceCIDRs: ['10.96.0.0/16'],
};

const name = (i: number): string => `svc-${String(i).padStart(3, '0')}`;

interface Shape {
  endpoints?: number;
  port?: number;
  affinity?: boolean;
}

/** `n` Services in namespace `ns`; `shapes` overrides some of them. */
function cluster(n: number, shapes: Record<number, Shape> = {}): DesiredState {
  const entries = [];
  for (let i = 0; i < n; i++) {
    const shape = shapes[i] ?? {};
    const eps = Array.from({ length: shape.endpoints ?? 2 }, (_, k) => endpoint(`10.244.${k + 1}.${i}`, 8080));
    entries.push(
      entry(
        servicePort('ns', name(i), {
          portName: 'http',
          clusterIP: `10.96.0.${i + 1}`,
          port: shape.port ?? 80,
          affinityTimeoutSeconds: shape.affinity === true || (shape.affinity === undefined && i % 5 === 0) ? 600 : 0,
        }),
        eps,
      ),
    );
  }
  return desiredState(entries);
}

function request(state: DesiredState, over: Partial<NftSyncRequest> = {}): NftSyncRequest {
  return { state, full: false, changed: null, installed: null, now: 0, ...over };
}

/** Object names (chains, sets) the lines of a transaction name, without the fixed ones. */
function serviceObjectsIn(text: string): Set<string> {
  const names = new Set<string>();
  for (const m of text.matchAll(/\b(?:service|endpoint|external|local|firewall|affinity)-[A-Z2-7]{8}-([^/\s]+\/[^/\s]+)\//g)) {
    names.add(m[1] ?? '');
  }
  return names;
}

/** A writer that has written `state` in full. */
function written(state: DesiredState, chunk?: number): NftTableWriter {
  const writer = new NftTableWriter(OPTS, chunk);
  writer.plan(request(state, { full: true })).commit();
  return writer;
}

describe('NftTableWriter', () => {
  test('one Service whose endpoints changed: one transaction with only its chains, the dropped endpoint chain flushed', () => {
    const writer = written(cluster(40));
    const next = cluster(40, { 7: { endpoints: 1 } });
    const plan = writer.plan(request(next, { changed: new Set(['ns/svc-007']) }));
    expect(plan.transactions).toHaveLength(1);
    const tx = plan.transactions[0] ?? '';
    expect(serviceObjectsIn(tx)).toEqual(new Set(['ns/svc-007']));
    expect(tx).not.toMatch(/^(flush|add) (map|set) ip kube-proxy (service-ips|cluster-ips|no-endpoint)/m);
    expect(tx).not.toContain('mark-for-masquerade {');
    expect(tx).not.toMatch(/^add chain ip kube-proxy (services|nat-|filter-)/m);
    // The chains of the service port are rewritten: emptied, then filled.
    expect(tx).toMatch(/^flush chain ip kube-proxy service-[A-Z2-7]{8}-ns\/svc-007\/tcp\/http$/m);
    expect(tx).toContain('numgen random mod 1 vmap');
    // The second endpoint's chain is no longer used: flushed now, not deleted yet.
    expect(tx).toMatch(/^flush chain ip kube-proxy endpoint-[A-Z2-7]{8}-ns\/svc-007\/tcp\/http__10\.244\.2\.7\/8080$/m);
    expect(tx).not.toContain('delete chain');
    expect(plan.changed).toEqual(['ns/svc-007:http']);
    // Its dispatch element still points at the same chain: not rewritten.
    expect(tx).not.toContain('add element');
  });

  test('one Service whose port changed: its dispatch element deleted and added, nothing else', () => {
    const writer = written(cluster(40));
    const plan = writer.plan(request(cluster(40, { 12: { port: 8080 } }), { changed: new Set(['ns/svc-012']) }));
    const tx = plan.transactions.join('');
    expect(tx).toContain('delete element ip kube-proxy service-ips { 10.96.0.13 . tcp . 80 }\n');
    expect(tx).toMatch(/^add element ip kube-proxy service-ips \{ 10\.96\.0\.13 \. tcp \. 8080 : goto service-[A-Z2-7]{8}-ns\/svc-012\/tcp\/http \}$/m);
    // The cluster IP stays in cluster-ips: not deleted, not re-added.
    expect(tx).not.toContain('cluster-ips');
    expect(serviceObjectsIn(tx)).toEqual(new Set(['ns/svc-012']));
  });

  test('a Service named as changed whose rules are the same costs nothing', () => {
    const state = cluster(10);
    const writer = written(state);
    const plan = writer.plan(request(cluster(10), { changed: new Set(['ns/svc-003']) }));
    expect(plan.transactions).toEqual([]);
    expect(plan.changed).toEqual([]);
  });

  test("Services not named as changed are not looked at (the agent's partial syncs)", () => {
    const writer = written(cluster(10));
    // svc-004 differs, but only svc-003 is named: nothing is written for svc-004.
    const plan = writer.plan(request(cluster(10, { 4: { endpoints: 1 } }), { changed: new Set(['ns/svc-003']) }));
    expect(plan.transactions).toEqual([]);
  });

  test('a deleted Service: chains flushed and its elements deleted now, chains deleted in a sync a second later', () => {
    const writer = written(cluster(10));
    const gone = desiredState(cluster(10).services.filter((e) => !e.key.startsWith('ns/svc-005')));
    const first = writer.plan(request(gone, { changed: new Set(['ns/svc-005']), now: 10_000 }));
    const tx = first.transactions.join('');
    const flushed = [...tx.matchAll(/^flush chain ip kube-proxy (\S+)$/gm)].map((m) => m[1]);
    expect(flushed.length).toBe(3); // service- and two endpoint- chains
    for (const c of flushed) expect(c).toContain('ns/svc-005/');
    expect(tx).toContain('delete element ip kube-proxy service-ips { 10.96.0.6 . tcp . 80 }');
    expect(tx).toContain('delete element ip kube-proxy cluster-ips { 10.96.0.6 }');
    expect(tx).toMatch(/^delete set ip kube-proxy affinity-[A-Z2-7]{8}-ns\/svc-005\//m);
    expect(tx).not.toContain('delete chain');
    expect(first.cleanup).toBeNull();
    first.commit();

    // Too early: nothing to delete yet.
    const early = writer.plan(request(gone, { changed: new Set(), now: 10_000 + STALE_CHAIN_DELAY_MS - 1 }));
    expect(early.cleanup).toBeNull();
    early.commit();

    const later = writer.plan(request(gone, { changed: new Set(), now: 10_000 + STALE_CHAIN_DELAY_MS }));
    expect(later.cleanup?.trim().split('\n').sort()).toEqual(flushed.map((c) => `delete chain ip kube-proxy ${c}`).sort());
    expect(later.transactions).toEqual([]);
    later.commit();
    expect(writer.plan(request(gone, { changed: new Set(), now: 20_000 })).cleanup).toBeNull();
  });

  test('a stale chain used again before its delete is rewritten, not deleted', () => {
    const writer = written(cluster(10));
    const gone = desiredState(cluster(10).services.filter((e) => !e.key.startsWith('ns/svc-002')));
    writer.plan(request(gone, { changed: new Set(['ns/svc-002']), now: 0 })).commit();
    const back = writer.plan(request(cluster(10), { changed: new Set(['ns/svc-002']), now: 100 }));
    expect(back.transactions.join('')).toMatch(/^add rule ip kube-proxy service-[A-Z2-7]{8}-ns\/svc-002\//m);
    back.commit();
    expect(writer.plan(request(cluster(10), { changed: new Set(), now: 5_000 })).cleanup).toBeNull();
  });

  test("affinity sets of other Services are never re-declared or deleted, not even by a full sync", () => {
    const writer = written(cluster(20));
    const a = writer.plan(request(cluster(20, { 3: { endpoints: 3 } }), { changed: new Set(['ns/svc-003']) }));
    expect(a.transactions.join('')).not.toMatch(/affinity-[A-Z2-7]{8}-ns\/svc-000\//);
    a.commit();
    // A full sync that knows the table: svc-000's sets are listed as installed and kept.
    const installed = { chains: [], sets: [...renderNftables(cluster(20, { 3: { endpoints: 3 } }), OPTS).matchAll(/^add set ip kube-proxy (affinity-\S+)/gm)].map((m) => m[1] ?? '') };
    expect(installed.sets.some((s) => s.includes('ns/svc-000/'))).toBe(true);
    const full = writer.plan(request(cluster(20, { 3: { endpoints: 3 } }), { full: true, installed }));
    const text = full.transactions.join('');
    expect(text).not.toMatch(/affinity-[A-Z2-7]{8}-ns\/svc-000\//);
    expect(text).not.toContain('delete set');
    // It refills the dispatch maps and re-asserts the fixed part.
    expect(text).toContain('flush map ip kube-proxy service-ips\n');
    expect(text).toContain('flush chain ip kube-proxy services\n');
  });

  test('a full sync removes service chains and affinity sets the kernel has but nothing uses', () => {
    const writer = written(cluster(5));
    const installed = {
      chains: ['services', 'endpoint-AAAAAAAA-old/gone/tcp/__10.1.1.1/80', 'service-BBBBBBBB-old/gone/tcp/'],
      sets: ['cluster-ips', 'affinity-AAAAAAAA-old/gone/tcp/__10.1.1.1/80'],
    };
    const plan = writer.plan(request(cluster(5), { full: true, installed, now: 0 }));
    const text = plan.transactions.join('');
    expect(text).toContain('flush chain ip kube-proxy endpoint-AAAAAAAA-old/gone/tcp/__10.1.1.1/80\n');
    expect(text).toContain('flush chain ip kube-proxy service-BBBBBBBB-old/gone/tcp/\n');
    expect(text).toContain('delete set ip kube-proxy affinity-AAAAAAAA-old/gone/tcp/__10.1.1.1/80\n');
    expect(text).not.toContain('delete chain ip kube-proxy services');
    plan.commit();
    expect(writer.plan(request(cluster(5), { now: 2_000, changed: new Set() })).cleanup).toContain(
      'delete chain ip kube-proxy service-BBBBBBBB-old/gone/tcp/',
    );
  });

  test('rewriting everything goes in bounded transactions; the dispatch elements only in the last', () => {
    const writer = new NftTableWriter(OPTS, 10);
    const plan = writer.plan(request(cluster(35), { full: true }));
    expect(plan.transactions).toHaveLength(4);
    const [first, ...rest] = plan.transactions;
    expect(first).toContain('add table ip kube-proxy { comment "rules for kube-proxy" ; }');
    for (const tx of plan.transactions.slice(0, -1)) expect(tx).not.toContain('add element ip kube-proxy service-ips');
    expect(rest.at(-1)).toContain('add element ip kube-proxy service-ips');
    for (const tx of plan.transactions.slice(0, -1)) expect(tx.match(/^add rule ip kube-proxy service-\S+ numgen/gm)).toHaveLength(10);
  });

  test('after a failed sync (forget) the next plan rewrites every Service', () => {
    const writer = written(cluster(10));
    writer.forget();
    const plan = writer.plan(request(cluster(10), { changed: new Set() }));
    expect(serviceObjectsIn(plan.transactions.join('')).size).toBe(10);
  });

  describe('with the real nft (private netns)', () => {
    /** The table as `nft list table` prints it, lines sorted (partial and full syncs order differently). */
    const script = (files: string[]): string =>
      `set -e; ${files.map((f) => `printf '%s' "$${f}" | nft -f -`).join('; ')}; nft list table ip kube-proxy | sed 's/^[[:space:]]*//' | sort`;

    test('full, then partial syncs: the table equals a fresh full render of the final state', () => {
      const writer = new NftTableWriter(OPTS, 7);
      const txs: string[] = [];
      const run = (plan: ReturnType<NftTableWriter['plan']>): void => {
        if (plan.cleanup !== null) txs.push(plan.cleanup);
        txs.push(...plan.transactions);
        plan.commit();
      };
      run(writer.plan(request(cluster(20), { full: true })));
      const s2 = cluster(20, { 3: { endpoints: 1 }, 8: { port: 81 }, 15: { endpoints: 0 } });
      run(writer.plan(request(s2, { changed: new Set(['ns/svc-003', 'ns/svc-008', 'ns/svc-015']), now: 0 })));
      const s3 = desiredState(s2.services.filter((e) => !e.key.startsWith('ns/svc-011')));
      run(writer.plan(request(s3, { changed: new Set(['ns/svc-011']), now: 100 })));
      run(writer.plan(request(s3, { changed: new Set(), now: 5_000 })));
      // A periodic full sync on the live table: the fixed part re-asserted in place, maps refilled.
      run(writer.plan(request(s3, { full: true, now: 6_000 })));

      const env: Record<string, string> = {};
      txs.forEach((t, i) => (env[`T${i}`] = t));
      const exports = Object.entries(env).map(([k, v]) => `${k}=${shellQuote(v)}`).join('\n');
      const incremental = inNetns(`${exports}\n${script(Object.keys(env))}`);
      expect(incremental.stderr).toBe('');
      expect(incremental.status).toBe(0);
      const fresh = inNetns(`F=${shellQuote(renderNftables(s3, OPTS))}\n${script(['F'])}`);
      expect(fresh.status).toBe(0);
      expect(incremental.stdout).toBe(fresh.stdout);
      expect(incremental.stdout).not.toContain('ns/svc-011/');
      expect(incremental.stdout).toContain('numgen random mod 1 vmap');
      expect(incremental.stdout).toContain('10.96.0.9 . tcp . 81 : goto service-');
    });
  });
});

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

test('a full rewrite at 100,000 Services plans without exceeding a call\'s argument limit', () => {
  const entries = [];
  for (let i = 0; i < 100_000; i++) {
    const ip = `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
    entries.push(entry(servicePort('ns', `svc-${i}`, { portName: 'http', clusterIP: ip, port: 80 }), [endpoint(`10.244.${(i >> 8) & 255}.${i & 255}`, 8080)]));
  }
  const writer = new NftTableWriter(OPTS);
  const plan = writer.plan(request(desiredState(entries), { full: true }));
  // Every Service's cluster IP element is in the plan (as before: one line each, no RangeError).
  const text = plan.transactions.join('');
  expect(text.split('\n').filter((l) => l.includes('svc-99999')).length).toBeGreaterThan(0);
}, 120_000);
