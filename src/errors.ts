/*
 * The few error classes vipr raises. Each carries what a user needs to act: the thing that failed
 * and, where known, the fix. The CLI prints `message` as one line and exits non-zero.
 */

/** A libbpf or bpf(2) call failed. */
export class BpfError extends Error {
  override readonly name = 'BpfError';
  constructor(
    /** The operation, e.g. `bpf_map_update_elem(vipr_services_v1)`. */
    readonly op: string,
    /** Positive errno. */
    readonly errno: number,
    /** libbpf's last log line for this operation, if any. */
    readonly libbpfMessage: string | null,
    options?: { cause?: unknown; hint?: string },
  ) {
    super(
      `${op} failed: ${errnoName(errno)}` +
        (libbpfMessage ? ` (${libbpfMessage})` : '') +
        (options?.hint ? `; ${options.hint}` : ''),
      options?.cause === undefined ? undefined : { cause: options.cause },
    );
  }
}

/** Bad input from the user: options, manifests, files. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** The Kubernetes API failed or answered something vipr cannot use. */
export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A tool a mode depends on (iptables-restore, nft, ipvsadm, the kernel's IPVS) is missing or failed. */
export class DataplaneError extends Error {
  override readonly name = 'DataplaneError';
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** What happened to a tool run (the fields of a ToolError), as execa's result says it. */
export interface ToolFailure {
  /** The program, as given (`nft`, `nsenter`, `/usr/bin/node`). */
  command: string;
  args: readonly string[];
  /** Why it could not run at all (`ENOENT`: not found, `EACCES`, ...); null once it ran. */
  code: string | null;
  /** Its exit code; null when it did not start or a signal ended it. */
  exitCode: number | null;
  /** The signal that ended it (ours on a timeout or cancel, or anyone's). */
  signal: NodeJS.Signals | null;
  /** Killed because it ran longer than the timeout. */
  timedOut: boolean;
  /** Killed because the caller's AbortSignal fired. */
  isCanceled: boolean;
  /** Killed because it printed more than the output limit. */
  isMaxBuffer: boolean;
  /** What it wrote to stderr, the first few KiB. */
  stderr: string;
  /** The short cause, one line: the tool's own complaint, or what ended it. */
  reason: string;
}

/**
 * A tool run to completion (src/process/run.ts) did not succeed. Decide by the fields, never by
 * the message text; `message` is one line naming the command and, where known, the fix.
 */
export class ToolError extends Error implements ToolFailure {
  override readonly name = 'ToolError';
  declare readonly command: string;
  declare readonly args: readonly string[];
  declare readonly code: string | null;
  declare readonly exitCode: number | null;
  declare readonly signal: NodeJS.Signals | null;
  declare readonly timedOut: boolean;
  declare readonly isCanceled: boolean;
  declare readonly isMaxBuffer: boolean;
  declare readonly stderr: string;
  declare readonly reason: string;

  constructor(message: string, failure: ToolFailure, options?: { cause?: unknown }) {
    super(message, options);
    Object.assign(this, failure);
  }

  /** The program is not installed (or not on PATH). */
  get notFound(): boolean {
    return this.code === 'ENOENT';
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 3: 'ESRCH', 4: 'EINTR', 5: 'EIO', 7: 'E2BIG', 9: 'EBADF', 11: 'EAGAIN',
  12: 'ENOMEM', 13: 'EACCES', 14: 'EFAULT', 16: 'EBUSY', 17: 'EEXIST', 19: 'ENODEV', 22: 'EINVAL',
  24: 'EMFILE', 28: 'ENOSPC', 34: 'ERANGE', 38: 'ENOSYS', 95: 'EOPNOTSUPP', 524: 'ENOTSUPP',
};

export function errnoName(errno: number): string {
  const name = ERRNO_NAMES[errno];
  return name ? `${name} (errno ${errno})` : `errno ${errno}`;
}
