/*
 * Running the system tools the lab is made with (ip, ethtool, sysctl, nsenter), through the one
 * runner (src/process/run.ts): argv arrays, no shell, so lab names and user commands are never
 * parsed by a shell. A failure is a ToolError, one line naming the command and what the tool said:
 * `ip netns add vipr-client failed: Cannot create namespace file "/run/netns/vipr-client": File exists`.
 */
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { ToolError } from '../errors.js';
import { run as runToCompletion, spawnError, commandLine, type RunResult } from '../process/run.js';
import { inCgroupArgv } from './cgroups.js';

export interface RunOptions {
  /** Run inside this named network namespace (through `nsenter --net=`, never `ip netns exec`). */
  netns?: string;
  timeoutMs?: number;
}

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

/** Runs a tool to completion (in `netns` when given); rejects with a ToolError unless it exits 0. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, argv] = opts.netns === undefined ? [cmd, [...args]] : nsenterArgv(opts.netns, cmd, args);
  const display = opts.netns === undefined ? undefined : `${commandLine(cmd, args)} (in ${opts.netns})`;
  return runToCompletion(file, argv, { timeoutMs: opts.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024, ...(display === undefined ? {} : { display }) });
}

/** Runs a tool, returning its error instead of throwing: for best-effort teardown. */
export async function tryRun(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult | ToolError> {
  try {
    return await run(cmd, args, opts);
  } catch (err) {
    if (err instanceof ToolError) return err;
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
    child.on('error', (err: NodeJS.ErrnoException) => {
      done();
      reject(spawnError(file, args, err, argv.join(' ')));
    });
    child.on('exit', (code, signal) => {
      done();
      resolve(code ?? 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0));
    });
  });
}
