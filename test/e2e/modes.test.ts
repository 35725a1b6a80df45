/*
 * kube-proxy's modes for real, as a user runs them: a lab without the BPF agent, `vipr run
 * --mode X` inside the node's namespace, real traffic from the client (spread, ClientIP
 * affinity, REJECT without endpoints, NodePort), a manifest edit followed live, `vipr list`
 * reading the rules back, and `vipr cleanup` leaving nothing. Rules only ever change inside the
 * lab's namespaces. IPVS cannot run on this kernel: `vipr run --mode ipvs` must say so.
 */
import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  VIPR_MAIN, ensureBuilt, forceCleanLab, labExec, labUp, startNodeAgent, uniqueLabName, defaultPinDirOf, type NodeAgent,
} from '../helpers/lab.js';

const execFileP = promisify(execFile);

const VIP = '10.0.0.213';
const STICKY_VIP = '10.0.0.214';
const EMPTY_VIP = '10.0.0.215';
const NODE_IP = '172.30.0.1';
const NODE_PORT = 30080;
const BACKENDS = ['be1', 'be2', 'be3'];

function nginxManifest(ips: string[]): string {
  return `apiVersion: v1
kind: Service
metadata: {name: nginx-service, namespace: default}
spec:
  type: ClusterIP
  clusterIP: ${VIP}
  ports: [{protocol: TCP, port: 80, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: nginx-service-lab, namespace: default, labels: {kubernetes.io/service-name: nginx-service}}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 80}]
endpoints:
${ips.map((ip) => `  - addresses: ["${ip}"]\n    conditions: {ready: true}\n    nodeName: node`).join('\n')}
`;
}

const EXTRA_MANIFEST = `apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: default}
spec:
  type: ClusterIP
  clusterIP: ${STICKY_VIP}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}
  ports: [{protocol: TCP, port: 80, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sticky-lab, namespace: default, labels: {kubernetes.io/service-name: sticky}}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 80}]
endpoints:
  - addresses: ["10.244.0.11"]
  - addresses: ["10.244.0.12"]
  - addresses: ["10.244.0.13"]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: default}
spec:
  type: ClusterIP
  clusterIP: ${EMPTY_VIP}
  ports: [{protocol: TCP, port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: default}
spec:
  type: NodePort
  clusterIP: 10.0.0.216
  ports: [{protocol: TCP, port: 80, targetPort: 80, nodePort: ${NODE_PORT}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-np-lab, namespace: default, labels: {kubernetes.io/service-name: web-np}}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 80}]
endpoints:
  - addresses: ["10.244.0.12"]
`;

interface ModeCase {
  title: string;
  args: string[];
  /** What `vipr list` names as its source. */
  source: RegExp;
  /** Whatever of this mode is installed in the node's namespace, as text (empty = nothing). */
  installed: (netns: string) => Promise<string>;
}

async function inNetns(netns: string, cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return execFileP('nsenter', [`--net=/run/netns/${netns}`, cmd, ...args], { maxBuffer: 64 * 1024 * 1024 });
}

const kubeLines = (save: string): string => save.split('\n').filter((l) => l.includes('KUBE-')).join('\n');

const CASES: ModeCase[] = [
  {
    title: 'iptables (legacy)',
    args: ['--mode', 'iptables', '--iptables-backend', 'legacy'],
    source: /^vipr iptables \(legacy\):/,
    installed: async (ns) => kubeLines((await inNetns(ns, 'iptables-legacy-save', [])).stdout),
  },
  {
    title: 'iptables (nft)',
    args: ['--mode', 'iptables', '--iptables-backend', 'nft'],
    source: /^vipr iptables \(nft\):/,
    installed: async (ns) => kubeLines((await inNetns(ns, 'iptables-nft-save', [])).stdout),
  },
  {
    title: 'nftables',
    args: ['--mode', 'nftables'],
    source: /^vipr nftables/,
    installed: async (ns) => (await inNetns(ns, 'nft', ['list', 'tables'])).stdout.split('\n').filter((l) => l.includes('kube-proxy')).join('\n'),
  },
];


describe.each(CASES)('vipr run --mode $title in the lab', (c) => {
  const lab = uniqueLabName('md');
  const nodeNetns = `${lab}-node`;
  const manifests = mkdtempSync(join(tmpdir(), 'vipr-modes-e2e-'));
  let agent: NodeAgent | null = null;

  /** `vipr ARGS` inside the node's namespace. */
  function runInNode(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile('nsenter', [`--net=/run/netns/${nodeNetns}`, process.execPath, VIPR_MAIN, ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  async function curl(url: string, count: number): Promise<string[]> {
    const res = await labExec(lab, 'client', ['sh', '-c', `for i in $(seq ${count}); do curl -s -m 2 ${url} || echo FAILED; done`], { timeoutMs: 120_000 });
    return res.stdout.trim().split('\n');
  }

  beforeAll(async () => {
    await ensureBuilt();
    writeFileSync(join(manifests, 'nginx.yaml'), nginxManifest(['10.244.0.11', '10.244.0.12', '10.244.0.13']));
    writeFileSync(join(manifests, 'extra.yaml'), EXTRA_MANIFEST);
    await labUp(lab, { agent: false, manifests });
    // Exactly like the lab's BPF agent: nsenter --net, so only this namespace's tables change.
    agent = await startNodeAgent(nodeNetns, [
      ...c.args, '--manifests', manifests,
      '--node-name', 'node', '--node-ip', NODE_IP, '--pin-dir', defaultPinDirOf(lab), '--min-sync-period', '200ms',
    ]);
  }, 180_000);

  afterAll(async () => {
    await agent?.kill();
    await forceCleanLab(lab);
    rmSync(manifests, { recursive: true, force: true });
  }, 60_000);

  test('60 connections to the ClusterIP spread over the 3 backends', async () => {
    const answers = await curl(`http://${VIP}/`, 60);
    expect(answers).toHaveLength(60);
    expect(answers.filter((a) => !BACKENDS.includes(a))).toEqual([]);
    for (const b of BACKENDS) expect(answers.filter((a) => a === b).length).toBeGreaterThanOrEqual(5);
  }, 120_000);

  test('the node itself reaches the ClusterIP and the NodePort (OUTPUT chain; 127.0.0.1 in iptables mode, as kube-proxy)', async () => {
    const urls = [`http://${VIP}/`, `http://${NODE_IP}:${NODE_PORT}/`];
    // kube-proxy's localhost NodePorts (route_localnet) exist in iptables mode only.
    if (c.args.includes('iptables')) urls.push(`http://127.0.0.1:${NODE_PORT}/`);
    for (const url of urls) {
      const res = await labExec(lab, 'node', ['sh', '-c', `for i in 1 2 3 4 5 6; do curl -s -m 2 ${url} || echo FAILED; done`]);
      const answers = res.stdout.trim().split('\n');
      expect(answers).toHaveLength(6);
      expect(answers.filter((a) => !BACKENDS.includes(a))).toEqual([]);
    }
  }, 60_000);

  test('ClientIP affinity keeps the client on one backend for 20 connections', async () => {
    const answers = await curl(`http://${STICKY_VIP}/`, 20);
    expect(answers).toHaveLength(20);
    expect(BACKENDS).toContain(answers[0]);
    expect(new Set(answers)).toEqual(new Set([answers[0]]));
  }, 60_000);

  test('a service without endpoints is rejected at once (REJECT, not a timeout)', async () => {
    const started = Date.now();
    const res = await labExec(lab, 'client', ['curl', '-sS', '-v', '-m', '5', `http://${EMPTY_VIP}/`]);
    const elapsed = Date.now() - started;
    expect(res.code).toBe(7); // CURLE_COULDNT_CONNECT
    // ECONNREFUSED, i.e. the REJECT rule's ICMP port unreachable: any other connect failure (the
    // node's "Network is unreachable" for an unrouted address, say) is not the rule answering.
    expect(res.stderr).toMatch(/connect to \S+ port 80 failed: Connection refused/);
    expect(elapsed).toBeLessThan(2000);
  }, 30_000);

  test('a NodePort answers on the node IP from the client', async () => {
    const answers = await curl(`http://${NODE_IP}:${NODE_PORT}/`, 5);
    expect(answers).toEqual(['be2', 'be2', 'be2', 'be2', 'be2']);
  }, 60_000);

  test('vipr list reads the rules back as the manifests say', async () => {
    const res = await runInNode(['list', '--json', '--pin-dir', defaultPinDirOf(lab)]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const listing = JSON.parse(res.stdout) as { source: string; services: Array<{ protocol: string; address: string; port: number; scheduler: string; persistentSeconds: number; name: string | null; backends: Array<{ address: string; port: number }> }> };
    const summary = listing.services.map((s) => ({
      service: `${s.protocol} ${s.address}:${s.port}`, name: s.name, scheduler: s.scheduler, persistent: s.persistentSeconds,
      backends: s.backends.map((b) => `${b.address}:${b.port}`),
    }));
    const three = ['10.244.0.11:80', '10.244.0.12:80', '10.244.0.13:80'];
    expect(summary).toEqual([
      { service: `TCP 0.0.0.0:${NODE_PORT}`, name: 'default/web-np', scheduler: 'random', persistent: 0, backends: ['10.244.0.12:80'] },
      { service: `TCP ${VIP}:80`, name: 'default/nginx-service', scheduler: 'random', persistent: 0, backends: three },
      { service: `TCP ${STICKY_VIP}:80`, name: 'default/sticky', scheduler: 'random', persistent: 600, backends: three },
      { service: `TCP ${EMPTY_VIP}:80`, name: 'default/empty', scheduler: 'random', persistent: 0, backends: [] },
      { service: 'TCP 10.0.0.216:80', name: 'default/web-np', scheduler: 'random', persistent: 0, backends: ['10.244.0.12:80'] },
    ]);
    // The default mode is whatever is installed; the table reads like ipvsadm -Ln.
    const text = await runInNode(['list', '-n', '--pin-dir', defaultPinDirOf(lab)]);
    expect(text.stdout).toMatch(c.source);
    expect(text.stdout).toContain(`TCP  ${VIP}:80 random\n  -> 10.244.0.11:80               Masq    1      0          0\n`);
  }, 60_000);

  test('removing a backend from the manifest is followed within 2 s', async () => {
    writeFileSync(join(manifests, 'nginx.yaml'), nginxManifest(['10.244.0.11', '10.244.0.12']));
    const changed = Date.now();
    let answers: string[] = [];
    for (;;) {
      answers = await curl(`http://${VIP}/`, 12);
      if (!answers.includes('be3') || Date.now() - changed > 5000) break;
    }
    const followed = Date.now() - changed;
    expect(answers.filter((a) => a !== 'be1' && a !== 'be2')).toEqual([]);
    expect(followed).toBeLessThan(2500);
    const later = await curl(`http://${VIP}/`, 30);
    expect(later).not.toContain('be3');
    expect(new Set(later)).toEqual(new Set(['be1', 'be2']));
    const listed = await runInNode(['list', '-n', '--pin-dir', defaultPinDirOf(lab)]);
    expect(listed.stdout).toMatch(new RegExp(`TCP  ${VIP.replace(/\./g, '\\.')}:80 random\\n  -> 10\\.244\\.0\\.11:80 .*\\n  -> 10\\.244\\.0\\.12:80 .*\\nTCP`));
  }, 60_000);

  test('SIGTERM leaves the rules in place; vipr cleanup removes everything', async () => {
    expect(await c.installed(nodeNetns)).not.toBe('');
    agent?.process.kill('SIGTERM');
    expect(await agent?.exited).toBe(0);
    // Traffic still flows through the rules the agent left.
    expect(BACKENDS).toContain((await curl(`http://${VIP}/`, 1))[0]);
    const mode = c.args[1] as string;
    const res = await runInNode(['cleanup', '--mode', mode, '--pin-dir', defaultPinDirOf(lab)]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^removed /);
    expect(await c.installed(nodeNetns)).toBe('');
    const again = await runInNode(['cleanup', '--mode', mode, '--pin-dir', defaultPinDirOf(lab)]);
    expect(again.stdout).toBe('nothing to remove\n');
    const list = await runInNode(['list', '--pin-dir', defaultPinDirOf(lab)]);
    expect(list.code).not.toBe(0);
    expect(list.stderr).toMatch(/^vipr: nothing is installed/);
  }, 60_000);
});

describe('vipr run --mode ipvs on a kernel without IPVS', () => {
  const lab = uniqueLabName('mi');
  const manifests = mkdtempSync(join(tmpdir(), 'vipr-modes-ipvs-'));

  beforeAll(async () => {
    await ensureBuilt();
    writeFileSync(join(manifests, 'nginx.yaml'), nginxManifest(['10.244.0.11']));
    await labUp(lab, { agent: false, backends: 1, manifests });
  }, 120_000);

  afterAll(async () => {
    await forceCleanLab(lab);
    rmSync(manifests, { recursive: true, force: true });
  }, 60_000);

  test('exits non-zero with one line naming the missing IPVS and the other modes', async () => {
    const res = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn('nsenter', [`--net=/run/netns/${lab}-node`, process.execPath, VIPR_MAIN, 'run', '--mode', 'ipvs', '--manifests', manifests, '--pin-dir', defaultPinDirOf(lab)]);
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, stderr });
      });
    });
    expect(res.code).toBe(1);
    expect(res.stderr).toMatch(/^vipr: --mode ipvs: this kernel has no IPVS \(\/proc\/net\/ip_vs missing, 'modprobe ip_vs' failed: [^\n]+\); use --mode bpf, iptables or nftables, or a kernel with CONFIG_IP_VS\n$/);
    // Nothing was touched before the refusal.
    const { stdout } = await inNetns(`${lab}-node`, 'ip', ['-o', 'link', 'show']);
    expect(stdout).not.toContain('kube-ipvs0');
  }, 60_000);
});
