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
 */
import { spawn, execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { rm } from 'node:fs/promises';
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
 * Compiles the project once per test process (serialised with other test processes by a lock).
 * tsc emits even when some file has errors; errors in other people's in-progress files are
 * tolerated, errors in the lab's files are not.
 */
export function ensureBuilt(): Promise<void> {
  built ??= (async () => {
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
  backends?: number;
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
  if (opts.backends !== undefined) args.push('--backends', String(opts.backends));
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

export interface LabStatusJson {
  name: string;
  phase: string;
  pinDir: string;
  stateDir: string;
  manifests: string;
  agent: string;
  hosts: { name: string; role: string; netns: string; present: boolean; addresses: string[] }[];
  processes: { kind: string; host: string; pid: number; running: boolean; log: string }[];
  services: {
    namespace: string;
    name: string;
    type: string;
    clusterIP: string | null;
    ports: { name: string; protocol: string; port: number; endpoints: string[] }[];
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
  return new RegExp(`^${name.replace(/-/g, '\\-')}-(client|node(\\d+)?|be\\d+|ext\\d*)$`);
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
  if (existsSync(defaultPinDirOf(name))) left.push(`pin dir ${defaultPinDirOf(name)}`);
  const { stdout: links } = await execFileP('ip', ['-o', 'link', 'show']);
  for (const line of links.split('\n')) if (line.includes(name)) left.push(`root-namespace link: ${line.trim()}`);
  return left;
}

/** Routes of the root namespace towards the lab's address ranges (there must never be any). */
export async function rootRoutesToLab(): Promise<string[]> {
  const { stdout } = await execFileP('ip', ['-4', 'route', 'show', 'table', 'all']);
  return stdout.split('\n').filter((l) => /^(local |broadcast )?(172\.30\.|10\.244\.|10\.0\.0\.)/.test(l.trim()));
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
  await rm(defaultPinDirOf(name), { recursive: true, force: true }).catch(() => undefined);
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
    const s = require('node:dgram').createSocket('udp4');
    const t = setTimeout(() => { process.stderr.write('no reply\\n'); process.exit(3); }, ${timeoutMs});
    s.on('message', (m) => { process.stdout.write(m); clearTimeout(t); s.close(); });
    s.send(process.argv[1], ${port}, ${JSON.stringify(ip)});`;
  const res = await labExec(name, host, [process.execPath, '-e', script, payload]);
  if (res.code !== 0) throw new Error(`UDP ${ip}:${port} from ${host}: exit ${res.code}: ${res.stderr.trim()}`);
  return res.stdout;
}
