/*
 * Running the system tools the lab is made with (ip, ethtool, sysctl, nsenter). Arguments are
 * always passed as an argv array (execFile, no shell), so lab names and user commands are never
 * parsed by a shell. A failure becomes one line naming the command and what the tool said:
 * `ip netns add vipr-client failed: Cannot create namespace file "/run/netns/vipr-client": File exists`.
 */
import { execFile, spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { inCgroupArgv } from './cgroups.js';

/** A lab command failed; `message` is the one line for the user, the rest is for diagnosis. */
export class CommandError extends Error {
  override readonly name = 'CommandError';
  constructor(
    /** What was run, as the user would type it (namespace entry shown as `in <netns>`). */
    readonly command: string,
    /** Exit code, or null when the process could not start or died from a signal. */
    readonly exitCode: number | null,
    readonly stderr: string,
    reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${command} failed: ${reason}`, options);
  }
}

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Run inside this named network namespace (through `nsenter --net=`, never `ip netns exec`). */
  netns?: string;
  timeoutMs?: number;
}

/** Packages that provide the tools the lab needs, for the "not found" hint. */
const TOOL_PACKAGES: Record<string, string> = {
  ip: 'iproute2',
  ethtool: 'ethtool',
  nsenter: 'util-linux',
  sysctl: 'procps',
};

export function netnsPath(netns: string): string {
  return `/run/netns/${netns}`;
}

/**
 * The argv that runs `cmd args` inside `netns`. `nsenter --net=` switches only the network
 * namespace; `ip netns exec` would also remount /sys, hiding /sys/fs/bpf from the agent.
 */
export function nsenterArgv(netns: string, cmd: string, args: readonly string[]): [string, string[]] {
  return ['nsenter', [`--net=${netnsPath(netns)}`, cmd, ...args]];
}

/** The last meaningful line of a tool's stderr, without the prefixes tools put in front. */
export function toolReason(stderr: string): string | null {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const last = lines[lines.length - 1];
  if (last === undefined) return null;
  return last.replace(/^(RTNETLINK answers|Error|nsenter|sysctl|ethtool): /, '');
}

function describe(cmd: string, args: readonly string[], netns: string | undefined): string {
  const line = [cmd, ...args].join(' ');
  return netns === undefined ? line : `${line} (in ${netns})`;
}

/** Runs a tool to completion; rejects with a CommandError on a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<CommandResult> {
  const shown = describe(cmd, args, opts.netns);
  const [file, argv] = opts.netns === undefined ? [cmd, [...args]] : nsenterArgv(opts.netns, cmd, args);
  return new Promise((resolve, reject) => {
    execFile(
      file,
      argv,
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean; signal?: string };
        if (e.code === 'ENOENT') {
          const pkg = TOOL_PACKAGES[file];
          reject(new CommandError(shown, null, '', `${file} not found${pkg ? ` (install ${pkg})` : ''}`, { cause: err }));
          return;
        }
        if (e.killed || (typeof e.signal === 'string' && e.signal.length > 0)) {
          reject(new CommandError(shown, null, stderr, `killed by ${e.signal ?? 'signal'} (timeout?)`, { cause: err }));
          return;
        }
        const code = typeof e.code === 'number' ? e.code : null;
        const reason = toolReason(stderr) ?? `exit code ${code ?? 'unknown'}`;
        reject(new CommandError(shown, code, stderr, reason, { cause: err }));
      },
    );
  });
}

/** Runs a tool, returning its error instead of throwing: for best-effort teardown. */
export async function tryRun(
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<CommandResult | CommandError> {
  try {
    return await run(cmd, args, opts);
  } catch (err) {
    if (err instanceof CommandError) return err;
    throw err;
  }
}

/**
 * Runs `argv` inside `netns` (and, for a node's hosts, in the node's cgroup) with this process's
 * stdio, for `vipr lab exec`. Resolves to the
 * command's exit code (128 + signal number when a signal ended it, as shells report it).
 */
export function runInteractive(netns: string, argv: readonly string[], cgroup: string | null = null): Promise<number> {
  const [nsFile, nsArgs] = nsenterArgv(netns, argv[0] ?? '', argv.slice(1));
  const [file, args] = cgroup === null ? [nsFile, nsArgs] : inCgroupArgv(cgroup, nsFile, nsArgs);
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: 'inherit' });
    // Ctrl-C reaches the command through the terminal's process group: let it decide, and
    // report its exit code instead of dying first. A SIGTERM for us is passed on.
    const ignore = (): void => undefined;
    const forward = (): void => {
      child.kill('SIGTERM');
    };
    process.on('SIGINT', ignore);
    process.on('SIGTERM', forward);
    const done = (): void => {
      process.off('SIGINT', ignore);
      process.off('SIGTERM', forward);
    };
    child.on('error', (err) => {
      done();
      reject(new CommandError(argv.join(' '), null, '', err.message, { cause: err }));
    });
    child.on('exit', (code, signal) => {
      done();
      resolve(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0));
    });
  });
}
