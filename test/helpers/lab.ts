/*
 * Shared helpers for end-to-end tests that need a lab: build once, run the real CLI
 * (dist/src/cli/main.js) as a child process, bring a uniquely named lab up and down, run commands
 * in its hosts, and check that nothing of a lab is left behind (namespaces, processes, state, pin
 * dir, routes in the root namespace). `forceCleanLab` removes a lab without the CLI, for
 * afterAll hooks that must clean up even when the CLI itself is what broke.
 *
 * Typical use:
 *   const lab = uniqueLabName('mytest');
 *   beforeAll(async () => { await ensureBuilt(); await labUp(lab, { agent: false }); }, 120_000);
 *   afterAll(() => forceCleanLab(lab), 60_000);
 * Two nodes: `labUp(lab, { nodes: 2, agent: true })`; hosts client, node1, node2, ext, be1..;
 * addresses and pin dirs in `(await labStatus(lab)).nodes` (see src/lab/topology.ts).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { rm, rmdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const VIPR_MAIN = join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
export const FAKE_AGENT = join(REPO_ROOT, 'test', 'helpers', 'fake-agent.mjs');
export const LAB_STATE_ROOT = '/run/vipr/lab';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

/** Runs a program to completion, collecting its output; never rejects for a non-zero exit. */
export function runProgram(file: string, args: string[], opts: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? 128 + (signal === 'SIGKILL' ? 9 : 15), stdout, stderr });
    });
    // A child may exit before reading its input (EPIPE): its exit code is what counts.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs `vipr ARGS...` (the built CLI) as a real process. */
export function vipr(args: string[], opts: RunOptions = {}): Promise<CliResult> {
  return runProgram(process.execPath, [VIPR_MAIN, ...args], opts);
}

let built: Promise<void> | null = null;

/** Files whose compile errors fail the build check: the lab's own (other modules may be mid-edit). */
const MUST_COMPILE = [/^src\/lab\//, /^src\/cli\/lab\.ts/, /^src\/cli\/main\.ts\(\d+,\d+\): error TS(?!2307)/];

/**
 * Whether dist/ holds a build of the sources as they are: every src/**.ts has its .js, written
 * after the .ts was (tsc rewrites every output it emits). `make test` builds before jest does.
 */
function distIsFresh(dir = join(REPO_ROOT, 'src')): boolean {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!distIsFresh(path)) return false;
    } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
      const js = join(REPO_ROOT, 'dist', path.slice(REPO_ROOT.length + 1).replace(/\.ts$/, '.js'));
      if (!existsSync(js) || statSync(js).mtimeMs < statSync(path).mtimeMs) return false;
    }
  }
  return true;
}

/**
 * Compiles the project once per test file (jest gives each file its own modules), unless dist/
 * is already a build of the sources as they are (a tsc run costs ~10 s: in `make test`, which
 * builds first, it was 26 runs, 4 minutes). Serialised with other test processes by a lock.
 * tsc emits even when some file has errors; errors in other people's in-progress files are
 * tolerated, errors in the lab's files are not.
 */
export function ensureBuilt(): Promise<void> {
  built ??= (async () => {
    if (distIsFresh()) return;
    const res = await runProgram(
      'flock',
      ['/tmp/vipr-build.lock', process.execPath, join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(REPO_ROOT, 'tsconfig.json')],
      { timeoutMs: 180_000 },
    );
    const errors = res.stdout
      .split('\n')
      .filter((l) => / error TS\d+/.test(l))
      .filter((l) => MUST_COMPILE.some((re) => re.test(l)));
    if (errors.length > 0) throw new Error(`build failed:\n${errors.join('\n')}`);
    for (const f of [VIPR_MAIN, join(REPO_ROOT, 'dist/src/cli/lab.js'), join(REPO_ROOT, 'dist/src/lab/backend-server.js')]) {
      if (!existsSync(f)) throw new Error(`build did not produce ${f}:\n${res.stdout}`);
    }
  })();
  return built;
}

/** A lab name no other test process uses: short (namespace and log names derive from it). */
export function uniqueLabName(prefix = 't'): string {
  const suffix = `${process.pid.toString(36)}${Math.floor(Math.random() * 36 ** 3).toString(36)}`;
  return `${prefix}-${suffix}`.slice(0, 24).replace(/-+$/, '');
}

export interface LabUpOptions {
  /** Per node. */
  backends?: number;
  /** Default 1 (the one-node lab); 2: node1 and node2 on an underlay, with host `ext`. */
  nodes?: number;
  /** `--ip-family` (the lab's default, dual, when not given). */
  ipFamily?: 'ipv4' | 'ipv6' | 'dual';
  /** Start the agent (default false: tests of the lab itself run without it). */
  agent?: boolean;
  /** The script the agent runs from (default: the built vipr). */
  agentMain?: string;
  manifests?: string;
  env?: NodeJS.ProcessEnv;
}

/** `vipr lab up --name NAME ...`; throws with the CLI's output unless it exits 0. */
export async function labUp(name: string, opts: LabUpOptions = {}): Promise<CliResult> {
  const args = ['lab', 'up', '--name', name];
  if (opts.nodes !== undefined) args.push('--nodes', String(opts.nodes));
  if (opts.backends !== undefined) args.push('--backends', String(opts.backends));
  if (opts.ipFamily !== undefined) args.push('--ip-family', opts.ipFamily);
  if (!opts.agent) args.push('--no-agent');
  if (opts.agentMain !== undefined) args.push('--agent-main', opts.agentMain);
  if (opts.manifests !== undefined) args.push('--manifests', opts.manifests);
  const res = await vipr(args, { ...(opts.env ? { env: opts.env } : {}), timeoutMs: 120_000 });
  if (res.code !== 0) throw new Error(`vipr ${args.join(' ')} exited ${res.code}:\n${res.stdout}${res.stderr}`);
  return res;
}

export function labDown(name: string): Promise<CliResult> {
  return vipr(['lab', 'down', '--name', name], { timeoutMs: 60_000 });
}

/** `vipr lab exec --name NAME HOST -- CMD...`, with optional stdin. */
export function labExec(name: string, host: string, cmd: string[], opts: RunOptions = {}): Promise<CliResult> {
  return vipr(['lab', 'exec', '--name', name, host, '--', ...cmd], opts);
}

export interface LabNodeStatusJson {
  /** Host name (`node`, or `node1`, `node2`). */
  name: string;
  nodeName: string;
  netns: string;
  /** Underlay address of the lab's first family; null in the one-node lab. */
  nodeIp: string | null;
  /** Underlay addresses, IPv4 first (the agent's --node-ip); [] in the one-node lab. */
  nodeIps: string[];
  podCidr: string;
  podCidrs: string[];
  pinDir: string;
  agentIfaces: string[];
  agentLog: string;
  /** The node's cgroup v2 directory (its hosts' processes; the agent's --cgroup-root). */
  cgroup?: string;
  agent: string;
  agentPid: number | null;
}

export interface LabStatusJson {
  name: string;
  ipFamily: 'ipv4' | 'ipv6' | 'dual';
  phase: string;
  /** The first node's pin dir. */
  pinDir: string;
  stateDir: string;
  manifests: string;
  agent: string;
  nodes: LabNodeStatusJson[];
  underlay: { netns: string; bridge: string; cidr: string; cidrs: string[] } | null;
  hosts: {
    name: string;
    role: string;
    netns: string;
    /** The node of a backend (or of the client); null otherwise. */
    node: string | null;
    present: boolean;
    addresses: string[];
    interfaces: { ifname: string; addresses: string[] }[];
  }[];
  processes: { kind: string; host: string; pid: number; running: boolean; log: string }[];
  services: {
    namespace: string;
    name: string;
    type: string;
    clusterIP: string | null;
    clusterIPs: string[];
    externalIPs: string[];
    loadBalancerIPs: string[];
    externalTrafficPolicy: string;
    healthCheckNodePort: number;
    ports: {
      name: string;
      protocol: string;
      port: number;
      nodePort: number;
      endpoints: string[];
      endpointNodes: (string | null)[];
    }[];
  }[];
  problems: string[];
}

export async function labStatus(name: string): Promise<LabStatusJson> {
  const res = await vipr(['lab', 'status', '--name', name, '--json']);
  if (res.code !== 0) throw new Error(`vipr lab status exited ${res.code}: ${res.stderr}`);
  return JSON.parse(res.stdout) as LabStatusJson;
}

/** Brings a lab up, runs `fn`, and always removes the lab afterwards. */
export async function withLab<T>(name: string, opts: LabUpOptions, fn: (name: string) => Promise<T>): Promise<T> {
  try {
    await labUp(name, opts);
    return await fn(name);
  } finally {
    await forceCleanLab(name);
  }
}

function labNetnsPattern(name: string): RegExp {
  return new RegExp(`^${name.replace(/-/g, '\\-')}-(client|node(\\d+)?|be\\d+|ext\\d*|net)$`);
}

export async function labNamespaces(name: string): Promise<string[]> {
  const { stdout } = await execFileP('ip', ['netns', 'list']);
  const pattern = labNetnsPattern(name);
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((ns) => pattern.test(ns));
}

/** Pids of processes holding a file under the lab's state dir (servers and agent log there). */
export function processesUsingStateDir(name: string): number[] {
  const dir = `${LAB_STATE_ROOT}/${name}/`;
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${entry}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${entry}/fd/${fd}`).startsWith(dir)) {
          pids.push(Number(entry));
          break;
        }
      } catch {
        // The fd closed meanwhile.
      }
    }
  }
  return pids;
}

/** Whether `pid` runs (a zombie does not: it has exited and holds no namespace). */
export function processAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  return state !== 'Z' && state !== 'X';
}

export function defaultPinDirOf(name: string): string {
  return name === 'vipr' ? '/sys/fs/bpf/vipr' : `/sys/fs/bpf/vipr-${name}`;
}

/** The pin dir of a multi-node lab's node (`node1`, `node2`...). */
export function nodePinDirOf(name: string, node: string): string {
  return `/sys/fs/bpf/vipr-${name}-${node}`;
}

/** Every pin dir lab `name` may have: the one-node lab's and each node's of a multi-node lab. */
export function labPinDirsOf(name: string): string[] {
  const prefix = `vipr-${name}-node`;
  let entries: string[] = [];
  try {
    entries = readdirSync('/sys/fs/bpf');
  } catch {
    // No BPF filesystem mounted: nothing pinned.
  }
  const nodeDirs = entries.filter((e) => e.startsWith(prefix) && /^\d+$/.test(e.slice(prefix.length)));
  return [defaultPinDirOf(name), ...nodeDirs.map((e) => `/sys/fs/bpf/${e}`)];
}

/**
 * Everything of lab `name` still present, one line each; [] when the lab is fully gone.
 * `knownPids`: processes the lab ran (from status before `down`), checked to be gone too.
 */
export async function labLeftovers(name: string, knownPids: number[] = []): Promise<string[]> {
  const left: string[] = [];
  for (const ns of await labNamespaces(name)) left.push(`netns ${ns}`);
  for (const pid of knownPids) if (processAlive(pid)) left.push(`process ${pid}`);
  for (const pid of processesUsingStateDir(name)) if (!knownPids.includes(pid)) left.push(`process ${pid} (holds a file in the state dir)`);
  if (existsSync(`${LAB_STATE_ROOT}/${name}`)) left.push(`state dir ${LAB_STATE_ROOT}/${name}`);
  for (const dir of labPinDirsOf(name)) if (existsSync(dir)) left.push(`pin dir ${dir}`);
  const cgroup = labCgroupDirOf(name);
  if (cgroup !== null && existsSync(cgroup)) left.push(`cgroup ${cgroup}`);
  const { stdout: links } = await execFileP('ip', ['-o', 'link', 'show']);
  for (const line of links.split('\n')) if (line.includes(name)) left.push(`root-namespace link: ${line.trim()}`);
  return left;
}

/** The cgroup v2 directory holding lab `name`'s node cgroups (see src/lab/cgroups.ts), or null. */
export function labCgroupDirOf(name: string): string | null {
  const mount = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2')?.[1];
  return mount === undefined ? null : `${mount}/vipr-lab-${name}`;
}

/** Routes of the root namespace towards the lab's address ranges of both families (there must never be any). */
export async function rootRoutesToLab(): Promise<string[]> {
  const { stdout } = await execFileP('ip', ['-4', 'route', 'show', 'table', 'all']);
  const { stdout: six } = await execFileP('ip', ['-6', 'route', 'show', 'table', 'all']);
  return [
    ...stdout.split('\n').filter((l) => /^(local |broadcast )?(172\.30\.|10\.244\.|10\.0\.0\.|10\.250\.|192\.168\.60\.)/.test(l.trim())),
    ...six.split('\n').filter((l) => /^(local |anycast |multicast )?fd00:(172:30|10:244|10:96|10:250|192:168:60):/.test(l.trim())),
  ];
}

/**
 * Removes lab `name` without relying on state or the CLI: kills every process in its namespaces
 * and every process logging into its state dir, deletes the namespaces, the pin dir and the state
 * dir. Never throws.
 */
export async function forceCleanLab(name: string): Promise<void> {
  try {
    await labDown(name);
  } catch {
    // The CLI may be what is broken: carry on by hand.
  }
  try {
    const namespaces = await labNamespaces(name);
    const pids = new Set(processesUsingStateDir(name));
    const cgroup = labCgroupDirOf(name);
    for (const dir of cgroup !== null && existsSync(cgroup) ? [cgroup, ...readdirSync(cgroup, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => `${cgroup}/${e.name}`)] : []) {
      for (const l of readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n')) if (/^\d+$/.test(l.trim())) pids.add(Number(l.trim()));
    }
    for (const ns of namespaces) {
      try {
        const { stdout } = await execFileP('ip', ['netns', 'pids', ns]);
        for (const l of stdout.split('\n')) if (/^\d+$/.test(l.trim())) pids.add(Number(l.trim()));
      } catch {
        // Gone already.
      }
    }
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
    for (const ns of namespaces) await execFileP('ip', ['netns', 'del', ns]).catch(() => undefined);
  } catch {
    // Best effort.
  }
  await rm(`${LAB_STATE_ROOT}/${name}`, { recursive: true, force: true }).catch(() => undefined);
  for (const dir of labPinDirsOf(name)) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  const cgroup = labCgroupDirOf(name);
  if (cgroup !== null && existsSync(cgroup)) {
    // Node cgroups first, then the lab's; a cgroup is removed with rmdir once its processes are gone.
    for (let i = 0; i < 20 && existsSync(cgroup); i++) {
      for (const e of readdirSync(cgroup, { withFileTypes: true })) if (e.isDirectory()) await rmdir(`${cgroup}/${e.name}`).catch(() => undefined);
      await rmdir(cgroup).catch(() => new Promise((r) => setTimeout(r, 100)));
    }
  }
}

/**
 * Opens a TCP connection from `host` to ip:port and says how it went: `connected`, or the error
 * code (`ECONNREFUSED`: the peer's kernel answered with a RST, so it is reachable; `ENETUNREACH` /
 * `EHOSTUNREACH`: no route; `ETIMEDOUT`: nothing answered within `timeoutMs`). The lab has no
 * ping; a refused connection is the same round-trip proof.
 */
export async function labTcpConnect(name: string, host: string, ip: string, port: number, timeoutMs = 3000): Promise<string> {
  const script = `
    const s = require('node:net').connect(${port}, ${JSON.stringify(ip)});
    const t = setTimeout(() => { process.stdout.write('ETIMEDOUT'); process.exit(0); }, ${timeoutMs});
    s.on('connect', () => { process.stdout.write('connected'); clearTimeout(t); s.destroy(); });
    s.on('error', (e) => { process.stdout.write(String(e.code)); clearTimeout(t); });`;
  const res = await labExec(name, host, [process.execPath, '-e', script]);
  if (res.code !== 0) throw new Error(`TCP ${ip}:${port} from ${host}: exit ${res.code}: ${res.stderr.trim()}`);
  return res.stdout;
}

/**
 * Sends one UDP datagram from `host` of lab `name` to ip:port and returns the first reply as
 * text (rejects after `timeoutMs` without one). Uses node inside the namespace: socat would wait
 * out its whole timeout after the reply.
 */
export async function labUdpRequest(
  name: string,
  host: string,
  ip: string,
  port: number,
  payload: string,
  timeoutMs = 3000,
): Promise<string> {
  const script = `
    const s = require('node:dgram').createSocket(${JSON.stringify(ip.includes(':') ? 'udp6' : 'udp4')});
    const t = setTimeout(() => { process.stderr.write('no reply\\n'); process.exit(3); }, ${timeoutMs});
    s.on('message', (m) => { process.stdout.write(m); clearTimeout(t); s.close(); });
    s.send(process.argv[1], ${port}, ${JSON.stringify(ip)});`;
  const res = await labExec(name, host, [process.execPath, '-e', script, payload]);
  if (res.code !== 0) throw new Error(`UDP ${ip}:${port} from ${host}: exit ${res.code}: ${res.stderr.trim()}`);
  return res.stdout;
}

/**
 * The checksum errors a host's kernel counted on receive: TCP (one counter for both families),
 * UDP over IPv4 and UDP over IPv6 (/proc/net/snmp, /proc/net/snmp6). A NAT that forgets an L4
 * checksum update shows here (the lab's senders compute full checksums).
 */
export async function labChecksumErrors(name: string, host: string): Promise<{ tcp: number; udp: number; udp6: number }> {
  const snmp = (await labExec(name, host, ['cat', '/proc/net/snmp'])).stdout.split('\n');
  const counter = (proto: string): number => {
    for (let i = 0; i + 1 < snmp.length; i += 2) {
      const head = (snmp[i] as string).split(/\s+/);
      if (head[0] !== proto) continue;
      return Number((snmp[i + 1] as string).split(/\s+/)[head.indexOf('InCsumErrors')]);
    }
    throw new Error(`no ${proto} InCsumErrors in /proc/net/snmp of ${host}`);
  };
  const six = (await labExec(name, host, ['cat', '/proc/net/snmp6'])).stdout;
  const udp6 = /^Udp6InCsumErrors\s+(\d+)$/m.exec(six)?.[1];
  if (udp6 === undefined) throw new Error(`no Udp6InCsumErrors in /proc/net/snmp6 of ${host}`);
  return { tcp: counter('Tcp:'), udp: counter('Udp:'), udp6: Number(udp6) };
}

/** A `vipr run` in a lab node's namespace, started by a test instead of the lab. */
export interface NodeAgent {
  readonly process: ChildProcess;
  /** Everything it printed so far (stdout and stderr). */
  log(): string;
  /** Resolves with its exit code once it has exited. */
  readonly exited: Promise<number | null>;
  /** SIGKILL unless it already exited; resolves once it has. */
  kill(): Promise<void>;
}

/**
 * Starts `vipr run ARGS` in `netns` exactly as the lab's agent runs (nsenter --net, so only that
 * namespace's tables change) and waits for "agent running"; throws with its log when it exits or
 * does not get there in time.
 */
export async function startNodeAgent(netns: string, args: string[], timeoutMs = 30_000): Promise<NodeAgent> {
  const proc = spawn('nsenter', [`--net=/run/netns/${netns}`, process.execPath, VIPR_MAIN, 'run', ...args]);
  let log = '';
  proc.stdout?.on('data', (d: Buffer) => (log += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const agent: NodeAgent = {
    process: proc,
    log: () => log,
    exited,
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
  const deadline = Date.now() + timeoutMs;
  while (!log.includes('"msg":"agent running"')) {
    if (Date.now() > deadline || proc.exitCode !== null) {
      await agent.kill();
      throw new Error(`vipr run ${args.join(' ')} in ${netns} did not start:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return agent;
}

/** Retries until `fn` resolves (an agent's first sync, a neighbour entry), at most `ms`. */
export async function eventually<T>(fn: () => Promise<T>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

/** A datapath counter's packets (`vipr stats --json`) in the maps pinned at `pinDir`. */
export async function datapathCounter(pinDir: string, name: string): Promise<number> {
  const res = await vipr(['stats', '--pin-dir', pinDir, '--json']);
  if (res.code !== 0) throw new Error(`vipr stats: ${res.stderr}`);
  const c = (JSON.parse(res.stdout) as Record<string, { packets: number } | undefined>)[name];
  if (!c) throw new Error(`no counter ${name} in vipr stats --json`);
  return c.packets;
}
