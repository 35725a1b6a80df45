/*
 * The ClusterIP dataplane end to end, as a user runs it: `vipr lab up` with the real agent, real
 * traffic from the client namespace to the service addresses, manifest edits picked up live,
 * agent restarts, and a complete teardown.
 */
import { readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import {
  ensureBuilt, forceCleanLab, labDown, labExec, labLeftovers, labStatus, labUdpRequest, labUp,
  uniqueLabName, vipr, type LabStatusJson,
} from '../helpers/lab.js';
import { KeepaliveProbe } from '../helpers/probe.js';

const VIP = '10.0.0.213';
const BACKENDS = ['be1', 'be2', 'be3'];

const name = uniqueLabName('cip');
let status: LabStatusJson;
let pinDir = '';

beforeAll(async () => {
  await ensureBuilt();
  await labUp(name, { agent: true });
  status = await labStatus(name);
  pinDir = status.pinDir;
}, 180_000);

afterAll(async () => {
  await forceCleanLab(name);
}, 60_000);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `count` new connections from the client, each answered by one backend; returns the answers. */
async function curlMany(count: number, path = '/'): Promise<string[]> {
  const res = await labExec(name, 'client', ['sh', '-c', `for i in $(seq ${count}); do curl -s -m 2 http://${VIP}${path} || echo FAILED; done`], { timeoutMs: 120_000 });
  return res.stdout.trim().split('\n');
}

/** Checksum errors the kernel counted on a host (TCP and UDP InCsumErrors). */
async function csumErrors(host: string): Promise<number> {
  const res = await labExec(name, host, ['cat', '/proc/net/snmp']);
  let total = 0;
  const lines = res.stdout.split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const head = (lines[i] as string).split(/\s+/);
    const vals = (lines[i + 1] as string).split(/\s+/);
    const idx = head.indexOf('InCsumErrors');
    if ((head[0] === 'Tcp:' || head[0] === 'Udp:') && idx > 0) total += Number(vals[idx]);
  }
  return total;
}

function newProbe(interval = 100): KeepaliveProbe {
  return new KeepaliveProbe(status.hosts.find((h) => h.name === 'client')?.netns as string, VIP, 80, interval);
}

/** The lab's manifest holding nginx-service. */
function manifestPath(): string {
  const f = readdirSync(status.manifests).filter((x) => /\.ya?ml$/.test(x)).find((x) => readFileSync(join(status.manifests, x), 'utf8').includes('nginx-service'));
  if (!f) throw new Error(`no manifest for nginx-service in ${status.manifests}`);
  return join(status.manifests, f);
}

/** Waits until `vipr list --json` shows `want` backends for the VIP. */
async function waitForBackends(want: number, timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await vipr(['list', '--json', '--pin-dir', pinDir]);
    const listing = JSON.parse(res.stdout) as { services: Array<{ address: string; backends: Array<{ address: string }> }> };
    const svc = listing.services.find((s) => s.address === VIP);
    const addrs = svc?.backends.map((b) => b.address) ?? [];
    if (addrs.length === want) return addrs;
    if (Date.now() > deadline) throw new Error(`VIP has ${addrs.length} backends, want ${want}`);
    await sleep(200);
  }
}

describe('ClusterIP through BPF in the lab', () => {
  test('200 new connections to the VIP reach all 3 backends, with valid checksums everywhere', async () => {
    const answers = await curlMany(200);
    expect(answers).toHaveLength(200);
    expect(answers.filter((a) => !BACKENDS.includes(a))).toEqual([]);
    const counts = Object.fromEntries(BACKENDS.map((b) => [b, answers.filter((a) => a === b).length]));
    for (const b of BACKENDS) expect(counts[b]).toBeGreaterThan(20);
    for (const host of ['client', ...BACKENDS]) expect(await csumErrors(host)).toBe(0);
  });

  test('the backend sees the client\'s own address (DNAT only, no SNAT)', async () => {
    const [answer] = await curlMany(1, '/whoami');
    expect(answer).toMatch(/^be\d 172\.30\.0\.2:\d+$/);
  });

  test('a UDP request to the UDP service is answered by a backend, from the service address', async () => {
    const reply = await labUdpRequest(name, 'client', '10.0.0.53', 53, 'whoami');
    expect(reply).toMatch(/^be\d 172\.30\.0\.2:\d+$/);
  });

  test('vipr list -n shows the services like ipvsadm -Ln', async () => {
    const res = await vipr(['list', '-n', '--pin-dir', pinDir]);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain('Prot LocalAddress:Port Scheduler Flags');
    expect(res.stdout).toMatch(/^TCP  10\.0\.0\.213:80 random$/m);
    expect(res.stdout).toMatch(/^UDP  10\.0\.0\.53:53 random$/m);
    for (const ip of ['10.244.0.11', '10.244.0.12', '10.244.0.13']) expect(res.stdout).toMatch(new RegExp(`-> ${ip.replace(/\./g, '\\.')}:80 +Masq +1 `));
  });

  test('removing a backend stops new connections to it; an established one keeps working', async () => {
    const probe = newProbe(100);
    try {
      await probe.waitFor(3);
      const first = probe.answers()[0] as { backend: string; client: string };
      const pinned = first.backend;
      const ip = `10.244.0.${10 + Number(pinned.slice(2))}`;
      const file = manifestPath();
      const original = readFileSync(file, 'utf8');
      try {
        // Drop the backend from nginx-service's EndpointSlice, as the EndpointSlice controller
        // would when the pod goes away.
        const docs = parseAllDocuments(original).map((d) => d.toJS() as { kind?: string; endpoints?: Array<{ addresses: string[] }> });
        for (const d of docs) {
          if (d.kind === 'EndpointSlice') d.endpoints = d.endpoints?.filter((e) => !e.addresses.includes(ip));
        }
        const edited = docs.map((d) => stringify(d)).join('---\n');
        expect(edited).not.toContain(ip);
        writeFileSync(file, edited);
        const remaining = await waitForBackends(2);
        expect(remaining).not.toContain(ip);
        const fresh = await curlMany(40);
        expect(fresh.filter((a) => a === pinned)).toEqual([]);
        const before = probe.answers().length;
        await probe.waitFor(before + 10);
        // Every answer on the established connection still comes from the removed backend.
        expect(new Set(probe.answers().map((a) => a.backend))).toEqual(new Set([pinned]));
        expect(new Set(probe.answers().map((a) => a.client)).size).toBe(1);
      } finally {
        writeFileSync(file, original);
        await waitForBackends(3);
      }
    } finally {
      await probe.stop();
    }
    expect(probe.lines.filter((l) => l.startsWith('ERROR'))).toEqual([]);
  }, 60_000);

  test.each([['SIGTERM', false], ['SIGKILL', true]] as const)('restarting the agent (%s) keeps an established connection and the maps', async (_sig, kill) => {
    const before = (await vipr(['list', '-n', '--pin-dir', pinDir])).stdout;
    const probe = newProbe(100);
    try {
      await probe.waitFor(3);
      const res = await vipr(['lab', 'restart-agent', '--name', name, ...(kill ? ['--kill'] : [])], { timeoutMs: 60_000 });
      expect(res.code).toBe(0);
      const n = probe.answers().length;
      await probe.waitFor(n + 10);
      expect(new Set(probe.answers().map((a) => a.backend)).size).toBe(1);
      expect(new Set(probe.answers().map((a) => a.client)).size).toBe(1);
    } finally {
      await probe.stop();
    }
    expect(probe.lines.filter((l) => l.startsWith('ERROR'))).toEqual([]);
    const after = (await vipr(['list', '-n', '--pin-dir', pinDir])).stdout;
    // Same services and backends (connection counts may differ).
    const shape = (t: string): string => t.replace(/Masq\s+1\s+\d+\s+\d+/g, 'Masq 1');
    expect(shape(after)).toBe(shape(before));
    expect(await curlMany(10)).toEqual(expect.arrayContaining([expect.stringMatching(/^be\d$/)]));
  }, 90_000);

  test('malformed manifests are reported one line each, and the running services stay', async () => {
    const dir = status.manifests;
    const bad: Record<string, string> = {
      'bad-yaml.yaml': 'apiVersion: v1\nkind: Service\nmetadata: [unclosed\n',
      'bad-port.yaml': 'apiVersion: v1\nkind: Service\nmetadata: {name: broken, namespace: default}\nspec:\n  clusterIP: 10.0.0.77\n  ports: [{port: 70000}]\n',
      'bad-ip.yaml': 'apiVersion: v1\nkind: Service\nmetadata: {name: badip, namespace: default}\nspec:\n  clusterIP: 10.0.0.300\n  ports: [{port: 80}]\n',
    };
    try {
      for (const [f, text] of Object.entries(bad)) writeFileSync(join(dir, f), text);
      // Also break the service the lab depends on: its previous valid version must stay.
      const file = manifestPath();
      const original = readFileSync(file, 'utf8');
      writeFileSync(file, original.replaceAll('10.0.0.213', 'not-an-ip'));
      try {
        const log = join(status.stateDir, 'agent.log');
        const deadline = Date.now() + 10_000;
        let text = '';
        // The agent logs pino JSON; read the messages themselves.
        const messages = (): string => readFileSync(log, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => (JSON.parse(l) as { msg: string }).msg).join('\n');
        while (Date.now() < deadline) {
          text = messages();
          if (/bad-port\.yaml: document 1: .*70000.*1-65535/.test(text) && /bad-ip\.yaml: document 1: .*10\.0\.0\.300/.test(text) && /bad-yaml\.yaml: document 1:/.test(text) && /not-an-ip/.test(text)) break;
          await sleep(200);
        }
        expect(text).toMatch(/bad-port\.yaml: document 1: .*spec\.ports\[0\]\.port 70000 is out of range 1-65535/);
        expect(text).toMatch(/bad-ip\.yaml: document 1: .*"10\.0\.0\.300" is not an IPv4 or IPv6 address/);
        expect(text).toMatch(/bad-yaml\.yaml: document 1:/);
        expect(text).toMatch(/document \d+: .*"not-an-ip" is not an IPv4 or IPv6 address.*keeping its last valid version/);
        await sleep(1500);
        expect(await waitForBackends(3)).toHaveLength(3);
        const answers = await curlMany(10);
        expect(answers.every((a) => BACKENDS.includes(a))).toBe(true);
        const list = (await vipr(['list', '-n', '--pin-dir', pinDir])).stdout;
        expect(list).not.toContain('10.0.0.77');
      } finally {
        writeFileSync(file, original);
      }
    } finally {
      for (const f of Object.keys(bad)) unlinkSync(join(dir, f));
    }
  }, 60_000);

  test('vipr lab down leaves nothing behind: namespaces, links, pins, processes', async () => {
    const pids = (await labStatus(name)).processes.map((p) => p.pid);
    const res = await labDown(name);
    expect(res.code).toBe(0);
    expect(await labLeftovers(name, pids)).toEqual([]);
  }, 60_000);
});
