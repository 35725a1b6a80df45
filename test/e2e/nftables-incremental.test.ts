/*
 * The nftables mode's incremental syncs for real: `vipr run --mode nftables` in a lab's node
 * namespace, manifests edited under it. A ClientIP client's affinity entry for one Service
 * survives changes to another (the table is patched, not replaced), traffic follows the change,
 * and after partial syncs (a Service changed, one deleted) the table equals what a full render
 * of the same manifests gives in a fresh namespace, compared as normalised `nft -j` listings.
 */
import { spawnSync, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { VIPR_MAIN, ensureBuilt, forceCleanLab, labExec, labUp, startNodeAgent, uniqueLabName, defaultPinDirOf, type NodeAgent } from '../helpers/lab.js';

const execFileP = promisify(execFile);

const NODE_IP = '172.30.0.1';
const WEB_VIP = '10.0.0.213';
const STICKY_VIP = '10.0.0.214';
const DOOMED_VIP = '10.0.0.217';
const LATE_VIP = '10.0.0.218';
const BACKEND_IPS: Record<string, string> = { be1: '10.244.0.11', be2: '10.244.0.12', be3: '10.244.0.13' };

function service(name: string, vip: string, backends: string[], affinity = false): string {
  return `apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: default}
spec:
  type: ClusterIP
  clusterIP: ${vip}
${affinity ? '  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n' : ''}  ports: [{protocol: TCP, port: 80, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ${name}-lab, namespace: default, labels: {kubernetes.io/service-name: ${name}}}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 80}]
endpoints:
${backends.map((b) => `  - addresses: ["${BACKEND_IPS[b]}"]\n    conditions: {ready: true}`).join('\n')}
`;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/**
 * `nft -j list table` with what legitimately differs removed: handles, the order of sets' and
 * maps' elements and of objects, and the affinity sets' dynamic elements. Rules keep their order
 * within their chain.
 */
function normalise(jsonText: string): unknown {
  const strip = (v: Json): Json => {
    if (Array.isArray(v)) return v.map(strip);
    if (v !== null && typeof v === 'object') {
      const out: { [key: string]: Json } = {};
      for (const [k, x] of Object.entries(v)) if (k !== 'handle') out[k] = strip(x);
      return out;
    }
    return v;
  };
  const doc = JSON.parse(jsonText) as { nftables: Array<{ [kind: string]: { [key: string]: Json } }> };
  const objects: string[] = [];
  const rules = new Map<string, string[]>();
  for (const item of doc.nftables) {
    const [kind, body] = Object.entries(item)[0] ?? [];
    if (kind === undefined || body === undefined || kind === 'metainfo') continue;
    const obj = strip(body) as { [key: string]: Json };
    if (kind === 'rule') {
      const chain = String(obj.chain);
      rules.set(chain, [...(rules.get(chain) ?? []), JSON.stringify(obj.expr)]);
      continue;
    }
    if ((kind === 'set' || kind === 'map') && Array.isArray(obj.elem)) {
      if (String(obj.name).startsWith('affinity-')) delete obj.elem;
      else obj.elem = [...obj.elem].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
    }
    objects.push(`${kind} ${JSON.stringify(obj)}`);
  }
  return { objects: objects.sort(), rules: [...rules].sort(([a], [b]) => (a < b ? -1 : 1)) };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('vipr run --mode nftables: incremental syncs in the lab', () => {
  const lab = uniqueLabName('ni');
  const nodeNetns = `${lab}-node`;
  const manifests = mkdtempSync(join(tmpdir(), 'vipr-nft-incr-'));
  let agent: NodeAgent | null = null;

  const nftInNode = async (args: string[]): Promise<string> =>
    (await execFileP('nsenter', [`--net=/run/netns/${nodeNetns}`, 'nft', ...args], { maxBuffer: 64 * 1024 * 1024 })).stdout;

  async function curl(vip: string, count: number): Promise<string[]> {
    const res = await labExec(lab, 'client', ['sh', '-c', `for i in $(seq ${count}); do curl -s -m 2 http://${vip}/ || echo FAILED; done`], { timeoutMs: 120_000 });
    return res.stdout.trim().split('\n');
  }

  /** The client addresses held in the sticky Service's affinity sets. */
  async function affinityClients(): Promise<string[]> {
    const doc = JSON.parse(await nftInNode(['-j', 'list', 'table', 'ip', 'kube-proxy'])) as { nftables: Array<{ set?: { name: string; elem?: Json[] } }> };
    const found: string[] = [];
    for (const item of doc.nftables) {
      const set = item.set;
      if (!set?.name.startsWith('affinity-') || !set.name.includes('default/sticky/')) continue;
      for (const e of set.elem ?? []) {
        const v = (e as { elem?: { val?: Json } }).elem?.val ?? e;
        found.push(String(v));
      }
    }
    return found.sort();
  }

  /** Waits until `nft list table` satisfies `ok` (the agent has synced a change). */
  async function waitForTable(ok: (text: string) => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const text = await nftInNode(['list', 'table', 'ip', 'kube-proxy']);
      if (ok(text)) return;
      if (Date.now() > deadline) throw new Error(`table never showed ${what}:\n${(agent?.log() ?? '').slice(-3000)}`);
      await sleep(100);
    }
  }

  beforeAll(async () => {
    await ensureBuilt();
    writeFileSync(join(manifests, 'web.yaml'), service('web', WEB_VIP, ['be1', 'be2', 'be3']));
    writeFileSync(join(manifests, 'sticky.yaml'), service('sticky', STICKY_VIP, ['be1', 'be2', 'be3'], true));
    writeFileSync(join(manifests, 'doomed.yaml'), service('doomed', DOOMED_VIP, ['be1', 'be2']));
    await labUp(lab, { agent: false, manifests });
    agent = await startNodeAgent(nodeNetns, [
      '--mode', 'nftables', '--manifests', manifests,
      '--node-name', 'node', '--node-ip', NODE_IP, '--pin-dir', defaultPinDirOf(lab), '--min-sync-period', '200ms',
    ]);
  }, 180_000);

  afterAll(async () => {
    await agent?.kill();
    await forceCleanLab(lab);
    rmSync(manifests, { recursive: true, force: true });
  }, 60_000);

  test("a ClientIP client's affinity entry survives a change to another Service", async () => {
    const first = await curl(STICKY_VIP, 5);
    expect(Object.keys(BACKEND_IPS)).toContain(first[0]);
    expect(new Set(first)).toEqual(new Set([first[0]]));
    const clients = await affinityClients();
    expect(clients).toHaveLength(1);

    // web loses be3: its chains are rewritten, sticky's are not touched.
    writeFileSync(join(manifests, 'web.yaml'), service('web', WEB_VIP, ['be1', 'be2']));
    await waitForTable((t) => /numgen random mod 2 vmap \{ 0 : goto endpoint-\S+-default\/web\//.test(t), 'web with two endpoints');
    expect(await affinityClients()).toEqual(clients);
    const after = await curl(STICKY_VIP, 10);
    expect(new Set(after)).toEqual(new Set([first[0]]));
    // Traffic follows the change.
    const web = await curl(WEB_VIP, 20);
    expect(new Set(web)).toEqual(new Set(['be1', 'be2']));
  }, 90_000);

  test('after partial syncs (one Service changed, one deleted) the table equals a full render of the manifests', async () => {
    rmSync(join(manifests, 'doomed.yaml'));
    await waitForTable((t) => !t.includes(`${DOOMED_VIP} . tcp . 80`), "doomed's dispatch element gone");
    // Its chains are flushed now and deleted by a sync at least a second later.
    expect(await nftInNode(['list', 'table', 'ip', 'kube-proxy'])).toMatch(/chain service-\S+-default\/doomed\/tcp\/ \{\s*\}/);
    await sleep(1200);
    writeFileSync(join(manifests, 'web.yaml'), service('web', WEB_VIP, ['be2', 'be3']));
    await waitForTable((t) => t.includes('default/web/tcp/__10.244.0.13/80 {\n\t\tip saddr') && !t.includes('default/doomed/'), "web's be3 back, doomed's chains deleted");
    // web's be1 chain is now the stale one: a sync a second later (any change) deletes it.
    await sleep(1200);
    writeFileSync(join(manifests, 'late.yaml'), service('late', LATE_VIP, ['be1']));
    await waitForTable((t) => t.includes(`${LATE_VIP} . tcp . 80`) && !t.includes('default/web/tcp/__10.244.0.11/80'), "late added, web's be1 chain deleted");

    const installed = normalise(await nftInNode(['-j', 'list', 'table', 'ip', 'kube-proxy']));
    const fresh = spawnSync(
      'unshare',
      ['-n', 'sh', '-c', `"${process.execPath}" "${VIPR_MAIN}" render --mode nftables --manifests "${manifests}" --node-name node --node-ip ${NODE_IP} | nft -f - && nft -j list table ip kube-proxy`],
      { encoding: 'utf8', timeout: 60_000, maxBuffer: 64 * 1024 * 1024 },
    );
    expect(fresh.stderr).toBe('');
    expect(fresh.status).toBe(0);
    expect(installed).toEqual(normalise(fresh.stdout));
    expect(new Set(await curl(WEB_VIP, 20))).toEqual(new Set(['be2', 'be3']));
    const doomed = await labExec(lab, 'client', ['curl', '-sS', '-m', '2', `http://${DOOMED_VIP}/`]);
    expect(doomed.code).not.toBe(0);
  }, 90_000);
});
