/*
 * The lab's long-running processes (backend servers, the agent): started detached inside a
 * namespace with `nsenter --net=` (which execs, so the recorded pid is the server's own), output
 * appended to a log file, and stopped with SIGTERM then SIGKILL. A pid is only ever signalled
 * when its start time still matches the recorded one, so a reused pid is never killed.
 */
import { spawn } from 'node:child_process';
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { nsenterArgv } from './exec.js';
import { inCgroupArgv } from './cgroups.js';
import { spawnError } from '../process/run.js';

export interface StartedProcess {
  pid: number;
  startTime: number;
  /** The full argv, nsenter included. */
  argv: string[];
}

/**
 * Start time of `pid` in clock ticks since boot (field 22 of /proc/<pid>/stat), or null when the
 * process is gone or a zombie (exited, waiting to be reaped: it holds no namespace any more).
 */
export function processStartTime(pid: number): number | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // comm (field 2) may contain spaces and parentheses: fields after it follow the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = rest[0];
  const start = Number(rest[19]);
  if (state === 'Z' || state === 'X' || !Number.isFinite(start)) return null;
  return start;
}

/** Whether the process recorded as (pid, startTime) still runs. */
export function isRunning(pid: number, startTime: number): boolean {
  return processStartTime(pid) === startTime;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export interface StartOptions {
  netns: string;
  argv: string[];
  log: string;
  /**
   * Whether the process is ready, judged from what it has logged so far (polled every 50 ms). Only
   * this process's output is passed: a log appended to across restarts still holds the previous
   * process's readiness line.
   */
  ready: (log: string) => boolean;
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
  /** Run as a process of this cgroup (a node's: its hosts' processes meet its socket LB). */
  cgroup?: string | null;
}

/** Last `n` non-empty lines of a log, for error messages. */
export async function logTail(path: string, n: number): Promise<string[]> {
  try {
    const lines = (await readFile(path, 'utf8')).split('\n').filter((l) => l.trim().length > 0);
    return lines.slice(-n);
  } catch {
    return [];
  }
}

export class ProcessStartError extends Error {
  override readonly name = 'ProcessStartError';
  constructor(
    message: string,
    /** The process, if it is still running (it timed out rather than exited). */
    readonly started: StartedProcess | null,
  ) {
    super(message);
  }
}

/**
 * Starts `argv` detached in `netns` and waits until `ready(log text)` holds. Fails when the
 * process exits first or the timeout passes (the still-running process is reported in the error
 * so the caller can record and stop it).
 */
export async function startInNetns(opts: StartOptions): Promise<StartedProcess> {
  const [nsFile, nsArgs] = nsenterArgv(opts.netns, opts.argv[0] ?? '', opts.argv.slice(1));
  const [file, args] = opts.cgroup ? inCgroupArgv(opts.cgroup, nsFile, nsArgs) : [nsFile, nsArgs];
  const fd = openSync(opts.log, 'a');
  const startOffset = fstatSync(fd).size;
  // Filled in by the child's events while the loop below polls.
  const events: { exit: { code: number | null; signal: string | null } | null; error: NodeJS.ErrnoException | null } = {
    exit: null,
    error: null,
  };
  const child = spawn(file, args, { detached: true, stdio: ['ignore', fd, fd], env: opts.env ?? process.env });
  closeSync(fd);
  child.on('exit', (code, signal) => {
    events.exit = { code, signal };
  });
  child.on('error', (err) => {
    events.error = err;
  });
  const shown = `${opts.argv.join(' ')} (in ${opts.netns})`;
  const deadline = Date.now() + opts.timeoutMs;
  try {
    for (;;) {
      if (events.error !== null) throw new ProcessStartError(spawnError(file, args, events.error, shown).message, null);
      if (events.exit !== null) {
        const { code, signal } = events.exit;
        const tail = (await logTail(opts.log, 3)).join(' | ');
        throw new ProcessStartError(
          `${shown} exited with ${signal ?? `code ${code}`} while starting (log ${opts.log}${tail ? `: ${tail}` : ''})`,
          null,
        );
      }
      const pid = child.pid;
      if (pid !== undefined) {
        let text = '';
        try {
          text = (await readFile(opts.log)).subarray(startOffset).toString('utf8');
        } catch {
          // Not written yet.
        }
        if (opts.ready(text)) {
          const startTime = processStartTime(pid);
          if (startTime !== null) return { pid, startTime, argv: [file, ...args] };
        }
        if (Date.now() > deadline) {
          const startTime = processStartTime(pid);
          const started = startTime === null ? null : { pid, startTime, argv: [file, ...args] };
          // Its last lines say where it stopped (a start-up that stalls rather than fails).
          const tail = (await logTail(opts.log, 3)).join(' | ');
          throw new ProcessStartError(`${shown} not ready after ${opts.timeoutMs} ms (log ${opts.log}${tail ? `: ${tail}` : ''})`, started);
        }
      }
      await sleep(50);
    }
  } finally {
    // The lab outlives this CLI process: never keep it waiting for the child.
    child.unref();
  }
}

/**
 * Stops the given processes: `first` (SIGTERM) to all, up to `graceMs` to exit, then SIGKILL. Returns the
 * pids that were running (and are now stopped). Never throws for processes already gone.
 *
 * SIGTERM goes to the process alone (the agent ends its own rule tools). SIGKILL goes to its whole
 * process group (startInNetns makes each process the leader of one): an agent killed in the middle
 * of an iptables-restore would otherwise leave the tool running with no agent, on through every
 * later measurement. The group is signalled only while its leader is alive, so its id cannot
 * have been handed to anyone else.
 */
export async function stopProcesses(
  procs: { pid: number; startTime: number }[],
  graceMs = 3000,
  first: NodeJS.Signals = 'SIGTERM',
): Promise<number[]> {
  const running = procs.filter((p) => isRunning(p.pid, p.startTime));
  for (const p of running) (first === 'SIGKILL' ? killGroup : signal)(p.pid, first);
  const deadline = Date.now() + graceMs;
  while (running.some((p) => isRunning(p.pid, p.startTime)) && Date.now() < deadline) await sleep(50);
  const stubborn = running.filter((p) => isRunning(p.pid, p.startTime));
  for (const p of stubborn) killGroup(p.pid, 'SIGKILL');
  const killDeadline = Date.now() + 2000;
  while (stubborn.some((p) => isRunning(p.pid, p.startTime)) && Date.now() < killDeadline) await sleep(20);
  return running.map((p) => p.pid);
}

/** `sig` to the process group `pid` leads; to `pid` alone when it leads none. */
function killGroup(pid: number, sig: NodeJS.Signals): void {
  if (!signal(-pid, sig)) signal(pid, sig);
}

/** `sig` to `pid` (negative: that process group); false when there is none (ESRCH). */
function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    return false;
  }
}
