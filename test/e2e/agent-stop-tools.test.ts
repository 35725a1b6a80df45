/*
 * The agent told to stop ends the rule tools it is running: a first sync whose iptables-restore
 * runs for minutes (10,000 Services on a slow node) must not go on loading rules after the agent
 * is gone. A stand-in iptables-legacy-restore (first on PATH) that never finishes, the real agent
 * in a namespace of the test's own, SIGTERM while it waits for the tool.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { VIPR_MAIN, ensureBuilt, eventually, uniqueLabName } from '../helpers/lab.js';

const MANIFEST = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: ClusterIP
  clusterIP: 10.96.7.7
  ports: [{protocol: TCP, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: "", protocol: TCP, port: 8080}]
endpoints:
  - addresses: ["10.244.0.11"]
    conditions: {ready: true}
`;

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Resolves once `check` holds, within `ms` (the shared helper retries what throws). */
const holds = (what: string, check: () => boolean, ms: number): Promise<void> =>
  eventually(async () => {
    if (!check()) throw new Error(`not within ${ms} ms: ${what}`);
  }, ms);

const netns = `${uniqueLabName('stop')}-node`;
const dir = mkdtempSync(join(tmpdir(), 'vipr-stop-tools-'));
const bin = join(dir, 'bin');
const pidFile = join(dir, 'restore.pid');

beforeAll(async () => {
  await ensureBuilt();
  execFileSync('ip', ['netns', 'add', netns]);
  execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
  execFileSync('mkdir', ['-p', bin, join(dir, 'manifests')]);
  writeFileSync(join(dir, 'manifests', 'web.yaml'), MANIFEST);
  // Versions and listings from the real tool; a load never finishes (its pid left for the test).
  const real = execFileSync('sh', ['-c', 'command -v iptables-legacy-restore'], { encoding: 'utf8' }).trim();
  writeFileSync(
    join(bin, 'iptables-legacy-restore'),
    `#!/bin/sh\ncase "$*" in *--version*|*-V*) exec ${real} "$@";; esac\necho $$ > ${pidFile}\nexec sleep 600\n`,
    { mode: 0o755 },
  );
}, 180_000);

afterAll(() => {
  if (existsSync(pidFile)) {
    const pid = Number(readFileSync(pidFile, 'utf8'));
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  execFileSync('ip', ['netns', 'del', netns]);
  rmSync(dir, { recursive: true, force: true });
});

test('SIGTERM while the first sync waits for iptables-restore ends the tool with the agent', async () => {
  const child = spawn(
    'ip',
    ['netns', 'exec', netns, process.execPath, VIPR_MAIN, 'run', '--mode', 'iptables', '--iptables-backend', 'legacy',
      '--manifests', join(dir, 'manifests'), '--node-name', 'node', '--node-ip', '172.30.0.1', '--pin-dir', join(dir, 'pins')],
    { env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}` }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await holds('the agent runs iptables-legacy-restore', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', 60_000);
  const restore = Number(readFileSync(pidFile, 'utf8'));
  expect(alive(restore)).toBe(true);
  child.kill('SIGTERM');
  expect(await exited).toBe(143);
  await holds('the restore ends with the agent', () => !alive(restore), 5_000);
  expect(log).toMatch(/"msg":"stopping while starting; what was installed stays in place"/);
}, 120_000);
