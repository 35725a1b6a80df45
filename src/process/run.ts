/*
 * The one way vipr runs a tool to completion: iptables-restore, nft, ipvsadm, ip, ethtool, the
 * bench's load generator, the C compiler. Arguments are always an argv array (no shell), so names
 * and user input are never parsed by a shell; text for the tool goes through stdin.
 *
 * A failure is a ToolError whose fields say what happened, as execa's result does: `code`
 * (`ENOENT`: not installed), `exitCode`, `signal`, `timedOut`, `isCanceled`, `isMaxBuffer`, the
 * start of `stderr`, and `reason` (the tool's own first line of complaint). Callers decide by
 * those fields, never by matching message text. The message is one line naming the command and,
 * where known, the fix: `nft not found: apt-get install nftables`.
 *
 * Every layer may import this module: it imports nothing of vipr's but errors.ts.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { basename } from 'node:path';
import { ToolError, type ToolFailure } from '../errors.js';

/**
 * Default limit on one run. Loading 10,000 services' rules took iptables-nft-restore close to a
 * minute of CPU on a loaded 2-core machine (vipr bench): the default only catches a hung tool.
 */
export const DEFAULT_TIMEOUT_MS = 5 * 60_000;

let defaultTimeoutMs = DEFAULT_TIMEOUT_MS;

/**
 * The limit of every run that sets none, for this process (`vipr run --tool-timeout`): on a slow
 * node a rule tool's load of 10,000 Services can take longer than 5 minutes (iptables-nft-restore
 * did, under emulation), and then every sync would fail the same way.
 */
export function setDefaultToolTimeout(ms: number): void {
  if (!Number.isFinite(ms) || ms <= 0) throw new RangeError(`tool timeout must be a positive number of ms, got ${ms}`);
  defaultTimeoutMs = ms;
}

/** Default limit on stdout and on stderr, each: an iptables-save of 100,000 Services fits. */
export const DEFAULT_MAX_BUFFER = 256 * 1024 * 1024;

/** After a timeout or cancel, SIGTERM; SIGKILL when the tool is still there this much later. */
const KILL_GRACE_MS = 2000;

/** How much of stderr a ToolError keeps. */
const STDERR_KEPT = 8 * 1024;

/** Longest command line and reason shown in a message. */
const SHOWN_MAX = 200;

export interface RunOptions {
  /** Written to the tool's stdin (rule sets for `-restore`, `nft -f -`, `ipset restore`). */
  input?: string;
  timeoutMs?: number;
  /** Limit on stdout and on stderr, each, in bytes; more kills the tool. */
  maxBuffer?: number;
  /** Aborting it kills the tool: the run fails with `isCanceled`. */
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** false: a non-zero exit resolves with its `exitCode` instead of failing. */
  check?: boolean;
  /** How messages name the command (default: the program and its arguments). */
  display?: string;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** 0 unless the run was made with `check: false`. */
  exitCode: number;
}

/** Debian packages providing the tools vipr runs, for the "not found" fix. */
const TOOL_PACKAGES: Record<string, string> = {
  iptables: 'iptables',
  nft: 'nftables',
  ipvsadm: 'ipvsadm',
  ipset: 'ipset',
  ip: 'iproute2',
  tc: 'iproute2',
  modprobe: 'kmod',
  ethtool: 'ethtool',
  nsenter: 'util-linux',
  taskset: 'util-linux',
  runuser: 'util-linux',
  mount: 'mount',
  sysctl: 'procps',
  cc: 'gcc',
  gcc: 'gcc',
  'clang-16': 'clang-16',
  'qemu-system-x86_64': 'qemu-system-x86',
};

/** The Debian package that provides `file`, when vipr knows it. */
export function packageOf(file: string): string | undefined {
  const name = basename(file);
  return TOOL_PACKAGES[name.startsWith('iptables') ? 'iptables' : name];
}

function clip(text: string, max = SHOWN_MAX): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** `file args...` as a user would type it (for messages). */
export function commandLine(file: string, args: readonly string[]): string {
  return clip([file, ...args].join(' '));
}

/**
 * The tool's own one-line complaint: the first meaningful stderr line, without the prefixes tools
 * put in front (`RTNETLINK answers: `, `Error: `, `<tool>: `). Not meaningful: blank lines,
 * iptables-nft-save's warning about the other backend's tables, iptables' "Try `... -h'" hint, and
 * JSON log lines (vipr's own workers log with pino on stderr).
 */
export function stderrReason(stderr: string, tools: readonly string[] = []): string | null {
  const line = stderr
    .split('\n')
    .map((l) => l.trim())
    .find((l) => l.length > 0 && !l.startsWith('# Warning:') && !l.startsWith('Try `') && !l.startsWith('{'));
  if (line === undefined) return null;
  const prefixes = ['RTNETLINK answers', 'Error', ...tools.map((t) => basename(t))];
  let reason = line;
  for (let stripped = true; stripped; ) {
    stripped = false;
    for (const p of prefixes) {
      if (p.length > 0 && reason.startsWith(`${p}: `) && reason.length > p.length + 2) {
        reason = reason.slice(p.length + 2);
        stripped = true;
      }
    }
  }
  return clip(reason, 300);
}

interface Outcome {
  spawnError: NodeJS.ErrnoException | null;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  isCanceled: boolean;
  isMaxBuffer: boolean;
  stdout: string;
  stderr: string;
}

/** The ToolError for a run that did not start: not found (with the package to install), or why. */
export function spawnError(file: string, args: readonly string[], err: NodeJS.ErrnoException, display?: string): ToolError {
  const code = typeof err.code === 'string' ? err.code : 'ESPAWN';
  let message: string;
  let reason: string;
  if (code === 'ENOENT') {
    const pkg = packageOf(file);
    reason = `${file} not found`;
    message = pkg !== undefined ? `${reason}: apt-get install ${pkg}` : file.includes('/') ? reason : `${reason} on PATH`;
  } else if (code === 'EACCES') {
    reason = `${file} is not executable (EACCES)`;
    message = reason;
  } else {
    reason = clip(err.message.split('\n')[0] ?? code, 300);
    message = `${display ?? commandLine(file, args)} could not start: ${reason}`;
  }
  return new ToolError(
    message,
    { command: file, args: [...args], code, exitCode: null, signal: null, timedOut: false, isCanceled: false, isMaxBuffer: false, stderr: '', reason },
    { cause: err },
  );
}

/** The result, or the ToolError saying why there is none. */
function settle(file: string, args: readonly string[], opts: RunOptions, o: Outcome): RunResult | ToolError {
  if (o.spawnError !== null) return spawnError(file, args, o.spawnError, opts.display);
  const shown = opts.display ?? commandLine(file, args);
  const limit = opts.timeoutMs ?? defaultTimeoutMs;
  let reason: string;
  let message: string;
  if (o.isCanceled) {
    reason = 'canceled';
    message = `${shown} was canceled`;
  } else if (o.timedOut) {
    reason = `timed out after ${limit} ms`;
    // The process-wide limit is the operator's to raise; a caller's own limit is the caller's.
    message = `${shown} ${reason}${opts.timeoutMs === undefined ? ` (a slow node: raise vipr run --tool-timeout)` : ''}`;
  } else if (o.isMaxBuffer) {
    reason = `printed more than ${opts.maxBuffer ?? DEFAULT_MAX_BUFFER} bytes`;
    message = `${shown} ${reason}`;
  } else if (o.signal !== null) {
    reason = `killed by ${o.signal}`;
    message = `${shown} was ${reason}`;
  } else if (o.exitCode !== 0) {
    if (opts.check === false && o.exitCode !== null) return { stdout: o.stdout, stderr: o.stderr, exitCode: o.exitCode };
    reason = stderrReason(o.stderr, [file, shown.split(' ')[0] ?? '']) ?? `exit code ${o.exitCode ?? 'unknown'}`;
    message = `${shown} failed: ${reason}`;
  } else {
    return { stdout: o.stdout, stderr: o.stderr, exitCode: 0 };
  }
  const failure: ToolFailure = {
    command: file,
    args: [...args],
    code: null,
    exitCode: o.exitCode,
    signal: o.signal,
    timedOut: o.timedOut,
    isCanceled: o.isCanceled,
    isMaxBuffer: o.isMaxBuffer,
    stderr: o.stderr.slice(0, STDERR_KEPT),
    reason,
  };
  return new ToolError(message, failure);
}

/** One stream of the child, kept up to `limit` bytes; `onOverflow` once past it. */
function collect(stream: NodeJS.ReadableStream | null, limit: number, onOverflow: () => void): () => string {
  const chunks: Buffer[] = [];
  let size = 0;
  let over = false;
  stream?.on('data', (c: Buffer) => {
    if (over) return;
    size += c.length;
    if (size > limit) {
      over = true;
      onOverflow();
      return;
    }
    chunks.push(c);
  });
  return () => Buffer.concat(chunks).toString('utf8');
}

/** The tools running now (`run`), so a process that stops can end them: they would outlive it. */
const runningTools = new Set<ChildProcess>();

/**
 * Sends SIGTERM to every tool `run` started that is still running and returns how many. The
 * agent calls it when told to stop: a tool left running would go on loading rules after the agent
 * is gone, on a slow node for minutes. iptables-restore and nft -f killed halfway change nothing
 * (they commit at the end); ipvsadm and ipset apply line by line, and the next agent's first
 * sync is a full one.
 */
export function killRunningTools(): number {
  for (const c of runningTools) c.kill('SIGTERM');
  return runningTools.size;
}

/**
 * Runs `file args` to completion. Resolves with its output when it exits 0 (or with any exit code
 * when `check` is false); rejects with a ToolError when it could not start, exited non-zero, was
 * killed by a signal, timed out, was canceled, or printed more than `maxBuffer`.
 */
export function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const argv = [...args];
  return new Promise((resolve, reject) => {
    const outcome: Outcome = {
      spawnError: null, exitCode: null, signal: null, timedOut: false, isCanceled: false, isMaxBuffer: false, stdout: '', stderr: '',
    };
    let child: ChildProcess;
    try {
      child = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? process.env });
    } catch (err) {
      // Invalid arguments (a NUL byte in one) fail synchronously.
      reject(spawnError(file, argv, err as NodeJS.ErrnoException, opts.display));
      return;
    }
    runningTools.add(child);
    let killTimer: NodeJS.Timeout | null = null;
    const kill = (): void => {
      if (killTimer !== null || child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      killTimer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
      killTimer.unref();
    };
    const limit = opts.maxBuffer ?? DEFAULT_MAX_BUFFER;
    const overflow = (): void => {
      outcome.isMaxBuffer = true;
      kill();
    };
    const stdout = collect(child.stdout, limit, overflow);
    const stderr = collect(child.stderr, limit, overflow);
    const timer = setTimeout(() => {
      outcome.timedOut = true;
      kill();
    }, opts.timeoutMs ?? defaultTimeoutMs);
    const onAbort = (): void => {
      outcome.isCanceled = true;
      kill();
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      runningTools.delete(child);
      clearTimeout(timer);
      if (killTimer !== null) clearTimeout(killTimer);
      opts.signal?.removeEventListener('abort', onAbort);
      outcome.stdout = stdout();
      outcome.stderr = stderr();
      const r = settle(file, argv, opts, outcome);
      if (r instanceof ToolError) reject(r);
      else resolve(r);
    };
    child.on('error', (err: NodeJS.ErrnoException) => {
      // Only a failed spawn ends the run here; a failed kill leaves it to 'close'.
      if (child.pid !== undefined) return;
      outcome.spawnError = err;
      finish();
    });
    child.on('close', (code, signal) => {
      outcome.exitCode = code;
      outcome.signal = signal;
      finish();
    });
    // A tool that exits before reading all of stdin (a usage error) must not crash us with EPIPE.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
    if (opts.signal?.aborted) onAbort();
  });
}

/**
 * `run` for the few callers that must not yield (reading links while attaching, mounting bpffs at
 * start): the same result and the same ToolError. Blocks the event loop: short tools only.
 */
export function runSync(file: string, args: readonly string[], opts: Omit<RunOptions, 'signal'> = {}): RunResult {
  const argv = [...args];
  const r = spawnSync(file, argv, {
    input: opts.input ?? '',
    env: opts.env ?? process.env,
    timeout: opts.timeoutMs ?? defaultTimeoutMs,
    maxBuffer: opts.maxBuffer ?? DEFAULT_MAX_BUFFER,
    killSignal: 'SIGKILL',
    encoding: 'utf8',
  });
  const err = r.error as NodeJS.ErrnoException | undefined;
  const outcome: Outcome = {
    spawnError: err !== undefined && r.pid === 0 ? err : null,
    exitCode: r.status,
    signal: r.signal,
    timedOut: err?.code === 'ETIMEDOUT',
    isCanceled: false,
    isMaxBuffer: err?.code === 'ENOBUFS',
    stdout: r.stdout ?? '',
    stderr: r.stderr ?? '',
  };
  const res = settle(file, argv, opts, outcome);
  if (res instanceof ToolError) throw res;
  return res;
}

/** Whether `file` can be run at all (found, executable): `file --version` starts. */
export async function toolExists(file: string): Promise<boolean> {
  try {
    await run(file, ['--version'], { check: false, timeoutMs: 10_000 });
    return true;
  } catch (err) {
    if (err instanceof ToolError && err.code !== null) return false;
    throw err;
  }
}
