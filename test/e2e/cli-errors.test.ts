/*
 * What a user sees when something is wrong: one line on stderr naming the thing and the fix,
 * a non-zero exit, and nothing running disturbed.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
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
  ['bad VM time limit', ['lab', 'vm', '--timeout', '0'], /vipr lab: --timeout 0: expected the guest's time limit in minutes, a positive number/],
  ['bad option', ['list', '--bogus'], /vipr list: .*bogus.*see 'vipr list --help'/],
  ['bad duration', ['run', '--manifests', dir, '--iface', 'lo', '--min-sync-period', 'soon'], /--min-sync-period soon: not a duration/],
  ['no tool timeout', ['run', '--manifests', dir, '--iface', 'lo', '--tool-timeout', '0s'], /--tool-timeout 0s: must be longer than 0; use e\.g\. 5m, 20m/],
  ['bad node IP', ['run', '--manifests', dir, '--iface', 'lo', '--node-ip', '10.0.0.256'], /--node-ip 10\.0\.0\.256: not an IPv4 or IPv6 address/],
  ['no interface', ['run', '--manifests', dir], /at least one --iface IF is required/],
  ['missing manifests dir', ['render', '--mode', 'iptables', '--manifests', '/nonexistent/dir'], /\/nonexistent\/dir/],
  ['bad scheduler', ['run', '--manifests', dir, '--iface', 'lo', '--scheduler', 'fastest'], /--scheduler fastest: expected one of random, rr, sh, maglev, lc/],
  ['bad XDP mode', ['run', '--manifests', dir, '--iface', 'lo', '--xdp', 'lo', '--xdp-mode', 'fast'], /--xdp-mode fast: expected one of auto, native, generic/],
  ['XDP mode without --xdp', ['run', '--manifests', dir, '--iface', 'lo', '--xdp-mode', 'native'], /--xdp-mode native says how --xdp attaches: give --xdp IF too/],
  ['bad XDP local backends', ['run', '--manifests', dir, '--iface', 'lo', '--xdp', 'lo', '--xdp-local-backends', 'bypass'], /--xdp-local-backends bypass: expected pass or redirect/],
  ['XDP redirect to pods without --xdp', ['run', '--manifests', dir, '--iface', 'lo', '--xdp-local-backends', 'redirect'], /--xdp-local-backends redirect says what XDP does with local pods' frames: give --xdp IF too/],
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

/*
 * Runs of the agent below happen in a network namespace of their own, so that even a vipr that
 * failed to stop (the bugs these tests catch) changes nothing on the machine.
 */
describe('in a network namespace of the test', () => {
  const netns = `vipr-cli-${process.pid}`;
  const bpffs = mkdtempSync(join(tmpdir(), 'vipr-bpffs-'));

  /** `vipr ARGS` inside the namespace; `ms` is how long it took. */
  async function viprInNetns(args: string[], timeoutMs = 15_000): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
    const started = Date.now();
    const res = await runProgram('nsenter', [`--net=/run/netns/${netns}`, process.execPath, VIPR_MAIN, ...args], { timeoutMs });
    return { ...res, ms: Date.now() - started };
  }

  const agentArgs = (pinDir: string): string[] => [
    '--iface', 'lo', '--pin-dir', pinDir, '--metrics-bind-address', '127.0.0.1:0', '--healthz-bind-address', '127.0.0.1:0',
  ];

  /** Pins a small map at `path`, as any other BPF user could. */
  function pinMap(path: string): void {
    execFileSync('bpftool', ['map', 'create', path, 'type', 'hash', 'key', '4', 'value', '4', 'entries', '1', 'name', 'test_pin'], { stdio: ['ignore', 'ignore', 'pipe'] });
  }

  beforeAll(async () => {
    for (const [cmd, args] of [
      ['ip', ['netns', 'add', netns]],
      ['ip', ['-n', netns, 'link', 'set', 'lo', 'up']],
      // A bpffs of the test's own: world-writable with the sticky bit, as /sys/fs/bpf is here.
      ['mount', ['-t', 'bpf', 'bpf', bpffs]],
    ] as const) {
      const res = await runProgram(cmd, [...args]);
      if (res.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${res.stderr}`);
    }
  }, 60_000);

  afterAll(async () => {
    await runProgram('umount', [bpffs]);
    rmSync(bpffs, { recursive: true, force: true });
    await runProgram('ip', ['netns', 'del', netns]);
  }, 60_000);

  describe('a kubeconfig no wait can fix stops `vipr run` at start: one line, in under 5 s', () => {
    const kubeconfig = (server: string, cluster = ''): string =>
      `apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "${server}"${cluster}}}]\nusers: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n`;
    test.each([
      ['malformed', 'clusters: [\n  - {name: c\n', /^vipr: cannot load kubeconfig .*malformed\.kubeconfig: /],
      ['ftp', kubeconfig('ftp://x'), /cluster 'c' server ftp:\/\/x: scheme 'ftp' is not supported; use https:\/\//],
      ['noca', kubeconfig('https://127.0.0.1:6443', `, certificate-authority: "${join(dir, 'no-such-ca.crt')}"`), /certificate-authority .*no-such-ca\.crt: no such file/],
    ])('%s', async (name, text, pattern) => {
      const path = join(dir, `${name}.kubeconfig`);
      writeFileSync(path, text);
      const pin = join(bpffs, `kc-${name}`);
      const res = await viprInNetns(['run', '--kubeconfig', path, ...agentArgs(pin)], 10_000);
      oneLine(res, pattern);
      expect(res.ms).toBeLessThan(5000);
      expect(existsSync(pin)).toBe(false); // nothing was loaded
    });
  });

  test('--xdp-mode native where the driver has no native XDP (loopback): one line naming the interface and the fix', async () => {
    const pin = join(bpffs, 'xdp-native');
    const res = await viprInNetns(['run', '--manifests', dir, ...agentArgs(pin), '--socket-lb', 'off', '--xdp', 'lo', '--xdp-mode', 'native'], 30_000);
    oneLine(res, /^vipr: --xdp-mode native: XDP cannot attach to lo in native mode \(.*EOPNOTSUPP.*\); use --xdp-mode auto$/);
    const link = await runProgram('ip', ['-n', netns, '-j', 'link', 'show', 'lo']);
    expect(JSON.parse(link.stdout)[0].xdp).toBeUndefined();
    expect((await viprInNetns(['cleanup', '--pin-dir', pin])).code).toBe(0);
  });

  test('cleanup refuses the bpffs root and leaves every object in it alone', async () => {
    pinMap(join(bpffs, 'someone_elses_map'));
    const before = readdirSync(bpffs).sort();
    const res = await viprInNetns(['cleanup', '--pin-dir', bpffs]);
    oneLine(res, new RegExp(`--pin-dir ${bpffs} is the root of the BPF filesystem, shared with every other BPF user: give vipr a directory of its own`));
    expect(readdirSync(bpffs).sort()).toEqual(before);
    const run = await viprInNetns(['run', '--manifests', dir, ...agentArgs(bpffs)]);
    oneLine(run, /is the root of the BPF filesystem/);
    expect(readdirSync(bpffs).sort()).toEqual(before);
    rmSync(join(bpffs, 'someone_elses_map'));
  });

  test("cleanup removes vipr's maps and links only; other objects, and so the directory, stay", async () => {
    const pin = join(bpffs, 'mixed');
    mkdirSync(join(pin, 'links'), { recursive: true, mode: 0o700 });
    chmodSync(pin, 0o700);
    for (const name of ['vipr_services_v1', 'vipr_conntrack_v0', 'links/tcx_eth0_ingress', 'other_tool_map', 'links/other_tool_link']) pinMap(join(pin, name));
    const res = await viprInNetns(['cleanup', '--pin-dir', pin]);
    expect(res.code).toBe(0);
    expect(readdirSync(pin).sort()).toEqual(['links', 'other_tool_map']);
    expect(readdirSync(join(pin, 'links'))).toEqual(['other_tool_link']);
    expect(res.stdout).toBe(`removed bpf: 3 objects under ${pin}\n`);
    rmSync(pin, { recursive: true });
  });

  test.each([
    ['owned by another user', 65534, 0o700, /--pin-dir .*foreign-owned is owned by uid 65534, not root, so anyone could have planted maps there: remove it/],
    ['writable by others', 0, 0o777, /--pin-dir .*foreign-writable has mode 0777, so others may write there: remove it .* or, if you know its contents, 'chmod 0700 /],
  ])('a pin dir %s: run and cleanup refuse it with one line and touch nothing', async (_what, uid, mode, pattern) => {
    const pin = join(bpffs, uid === 0 ? 'foreign-writable' : 'foreign-owned');
    mkdirSync(pin);
    chmodSync(pin, mode);
    chownSync(pin, uid, uid);
    pinMap(join(pin, 'vipr_services_v1'));
    for (const args of [['cleanup', '--pin-dir', pin], ['run', '--manifests', dir, ...agentArgs(pin)]]) {
      const res = await viprInNetns(args);
      oneLine(res, pattern);
      expect(readdirSync(pin)).toEqual(['vipr_services_v1']);
    }
    rmSync(pin, { recursive: true });
  });
});
