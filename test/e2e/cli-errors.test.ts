/*
 * What a user sees when something is wrong: one line on stderr naming the thing and the fix,
 * a non-zero exit, and nothing running disturbed.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureBuilt, runProgram, vipr, VIPR_MAIN } from '../helpers/lab.js';

const dir = mkdtempSync(join(tmpdir(), 'vipr-cli-'));

beforeAll(async () => {
  await ensureBuilt();
  writeFileSync(join(dir, 'ok.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: default}\nspec: {clusterIP: 10.0.0.9, ports: [{port: 80}]}\n');
}, 120_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function oneLine(res: { code: number | null; stderr: string }, pattern: RegExp): void {
  expect(res.code).not.toBe(0);
  const lines = res.stderr.trim().split('\n').filter((l) => !l.startsWith('{'));
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(pattern);
}

test.each([
  ['nothing loaded', ['list', '--mode', 'bpf', '--pin-dir', '/sys/fs/bpf/vipr-never-loaded'], /nothing is loaded: no vipr maps pinned in \/sys\/fs\/bpf\/vipr-never-loaded; start the agent with 'vipr run'/],
  ['no bpffs at the pin dir', ['stats', '--pin-dir', '/tmp/not-bpffs'], /bpffs is not mounted .*mount -t bpf bpf \/sys\/fs\/bpf/],
  ['unknown map', ['maps', 'nosuch'], /no map named 'nosuch'/],
  ['unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
  ['bad option', ['list', '--bogus'], /vipr list: .*bogus.*see 'vipr list --help'/],
  ['bad duration', ['run', '--manifests', dir, '--iface', 'lo', '--min-sync-period', 'soon'], /--min-sync-period soon: not a duration/],
  ['bad node IP', ['run', '--manifests', dir, '--iface', 'lo', '--node-ip', '10.0.0.256'], /--node-ip 10\.0\.0\.256: not an IPv4 address/],
  ['no interface', ['run', '--manifests', dir], /at least one --iface IF is required/],
  ['missing manifests dir', ['render', '--mode', 'iptables', '--manifests', '/nonexistent/dir'], /\/nonexistent\/dir/],
  ['bad scheduler', ['run', '--manifests', dir, '--iface', 'lo', '--scheduler', 'fastest'], /--scheduler fastest: expected one of random, rr, sh, maglev, lc/],
])('%s', async (_what, args, pattern) => {
  oneLine(await vipr(args), pattern);
});

test('not root: one line saying so', async () => {
  const res = await runProgram('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, VIPR_MAIN, 'list', '--mode', 'bpf']);
  oneLine(res, /needs root \(CAP_BPF, CAP_NET_ADMIN\): run it with sudo/);
});

test('a manifests directory that does not exist: the agent stops with one line (it does not hang)', async () => {
  const pin = '/sys/fs/bpf/vipr-test-nodir';
  const res = await vipr(['run', '--manifests', '/nonexistent/manifests', '--iface', 'lo', '--pin-dir', pin, '--metrics-bind-address', '127.0.0.1:0', '--healthz-bind-address', '127.0.0.1:0'], { timeoutMs: 30_000 });
  oneLine(res, /\/nonexistent\/manifests/);
  await vipr(['cleanup', '--pin-dir', pin]);
});

test('an interface that does not exist: one line, and nothing left attached or pinned', async () => {
  const pin = '/sys/fs/bpf/vipr-test-noiface';
  const res = await vipr(['run', '--manifests', dir, '--iface', 'nosuch0', '--pin-dir', pin, '--metrics-bind-address', '127.0.0.1:0', '--healthz-bind-address', '127.0.0.1:0']);
  oneLine(res, /--iface nosuch0: no such interface in this network namespace/);
  await vipr(['cleanup', '--pin-dir', pin]);
});
