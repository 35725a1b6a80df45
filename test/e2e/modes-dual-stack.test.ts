/*
 * The fallback modes program both families: `vipr run --mode iptables` (legacy and nft backends)
 * writes IPv4 with iptables-restore and IPv6 with ip6tables-restore, `--mode nftables` writes
 * table ip and table ip6 kube-proxy, from the dual-stack manifests in test/fixtures/render; `vipr
 * list -n` reads both back ([fd00:10:96::213]:80 as ipvsadm prints it) and `vipr cleanup` removes
 * both. Everything happens in a network namespace the test makes (and deletes), so the machine's
 * own tables are never touched. Needs `make build` (runs dist/).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const execFileP = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const VIPR_MAIN = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const MANIFESTS = join(ROOT, 'test', 'fixtures', 'render', 'dual-stack');
const NETNS = `vipr-dual-modes-${process.pid}`;
/** A pin dir that does not exist: starting a fallback mode removes BPF pins there, never the machine's. */
const PIN_DIR = `/sys/fs/bpf/vipr-dual-modes-${process.pid}`;

async function inNs(cmd: string, ...args: string[]): Promise<string> {
  const { stdout } = await execFileP('nsenter', [`--net=/run/netns/${NETNS}`, cmd, ...args], { maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

const vipr = (...args: string[]): Promise<string> => inNs(process.execPath, VIPR_MAIN, ...args);

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function startAgent(mode: string, extra: string[] = []): ChildProcess {
  return spawn('nsenter', [
    `--net=/run/netns/${NETNS}`, process.execPath, VIPR_MAIN, 'run', '--mode', mode, '--manifests', MANIFESTS,
    '--node-name', 'node1', '--node-ip', '192.168.60.11', '--node-ip', 'fd00:192:168:60::11',
    '--cluster-cidr', '10.244.0.0/16,fd00:10:244::/56', '--pin-dir', PIN_DIR, ...extra,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
}

async function stopAgent(agent: ChildProcess): Promise<void> {
  if (agent.exitCode !== null || agent.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => agent.once('exit', () => resolve()));
  agent.kill('SIGTERM');
  await exited;
}

beforeAll(async () => {
  await execFileP('ip', ['netns', 'add', NETNS]);
  await execFileP('ip', ['-n', NETNS, 'link', 'set', 'lo', 'up']);
  // A veth pair inside the namespace holds the node's addresses (this kernel has no dummy links).
  await execFileP('ip', ['-n', NETNS, 'link', 'add', 'node0', 'type', 'veth', 'peer', 'name', 'node0-peer']);
  await execFileP('ip', ['-n', NETNS, 'link', 'set', 'node0-peer', 'up']);
  await execFileP('ip', ['-n', NETNS, 'addr', 'add', '192.168.60.11/24', 'dev', 'node0']);
  await execFileP('ip', ['-n', NETNS, 'addr', 'add', 'fd00:192:168:60::11/64', 'dev', 'node0', 'nodad']);
  await execFileP('ip', ['-n', NETNS, 'link', 'set', 'node0', 'up']);
});

afterAll(async () => {
  await execFileP('ip', ['netns', 'del', NETNS]).catch(() => undefined);
});

describe.each(['legacy', 'nft'])('--mode iptables, %s backend', (backend) => {
  let agent: ChildProcess | null = null;
  afterEach(async () => {
    if (agent !== null) await stopAgent(agent);
    agent = null;
    await vipr('cleanup', '--mode', 'iptables').catch(() => undefined);
  });

  test('IPv4 with iptables-restore, IPv6 with ip6tables-restore; list -n shows both; cleanup removes both', async () => {
    agent = startAgent('iptables', ['--iptables-backend', backend]);
    await waitFor('the IPv6 rules', async () => (await inNs(`ip6tables-${backend}-save`, '-t', 'nat')).includes('--to-destination [fd00:10:244:1::11]:80'));
    const v4 = await inNs(`iptables-${backend}-save`, '-t', 'nat');
    const v6 = await inNs(`ip6tables-${backend}-save`, '-t', 'nat');
    // Each family's own addresses only, in its own tables.
    expect(v4).toContain('-d 10.0.0.213/32');
    expect(v4).not.toContain('fd00:');
    expect(v6).toContain('-d fd00:10:96::213/128');
    expect(v6).not.toContain('10.0.0.213');
    expect(v6).toContain('! -d ::1/128 -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
    // The jump rules exist in both families.
    expect(v6).toContain('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');

    const listing = await vipr('list', '-n', '--mode', 'iptables', '--iptables-backend', backend);
    expect(listing).toContain('\nTCP  10.0.0.213:80 random\n');
    expect(listing).toContain('\nTCP  [fd00:10:96::213]:80 random\n');
    expect(listing).toContain('\n  -> [fd00:10:244:2::12]:80');
    expect(listing).toContain('\nUDP  [fd00:10:96::53]:53 random\n');
    expect(listing).toContain('\nTCP  [::]:30080 random\n');

    await stopAgent(agent);
    agent = null;
    await vipr('cleanup', '--mode', 'iptables');
    expect(await inNs(`ip6tables-${backend}-save`)).not.toContain('KUBE-');
    expect(await inNs(`iptables-${backend}-save`)).not.toContain('KUBE-');
  });
});

describe('--mode nftables', () => {
  let agent: ChildProcess | null = null;
  afterEach(async () => {
    if (agent !== null) await stopAgent(agent);
    agent = null;
    await vipr('cleanup', '--mode', 'nftables').catch(() => undefined);
  });

  test('table ip and table ip6 kube-proxy; list -n shows both; cleanup deletes both', async () => {
    agent = startAgent('nftables');
    await waitFor('table ip6 kube-proxy', async () => (await inNs('nft', 'list', 'table', 'ip6', 'kube-proxy')).includes('dnat to [fd00:10:244:1::11]:80'));
    const v4 = await inNs('nft', 'list', 'table', 'ip', 'kube-proxy');
    expect(v4).toContain('10.0.0.213 . tcp . 80');
    expect(v4).not.toContain('fd00:');

    const listing = await vipr('list', '-n', '--mode', 'nftables');
    expect(listing).toContain('\nTCP  10.0.0.213:80 random\n');
    expect(listing).toContain('\nTCP  [fd00:10:96::213]:80 random\n');
    expect(listing).toContain('\n  -> [fd00:10:244:1::11]:80');
    expect(listing).toContain('\nUDP  [fd00:10:96::53]:53 random\n');

    await stopAgent(agent);
    agent = null;
    await vipr('cleanup', '--mode', 'nftables');
    const tables = await inNs('nft', 'list', 'tables');
    expect(tables).not.toContain('kube-proxy');
  });
});
