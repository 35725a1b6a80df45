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

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 3: 'ESRCH', 4: 'EINTR', 5: 'EIO', 7: 'E2BIG', 9: 'EBADF', 11: 'EAGAIN',
  12: 'ENOMEM', 13: 'EACCES', 14: 'EFAULT', 16: 'EBUSY', 17: 'EEXIST', 19: 'ENODEV', 22: 'EINVAL',
  24: 'EMFILE', 28: 'ENOSPC', 34: 'ERANGE', 38: 'ENOSYS', 95: 'EOPNOTSUPP', 524: 'ENOTSUPP',
};

export function errnoName(errno: number): string {
  const name = ERRNO_NAMES[errno];
  return name ? `${name} (errno ${errno})` : `errno ${errno}`;
}
