/*
 * Running the tools kube-proxy's modes are applied with (iptables-restore, iptables-save,
 * iptables, nft, ipvsadm, ipset, ip), and choosing the iptables backend as kube-proxy's image
 * does (the iptables-wrapper script): whichever of legacy and nf_tables already holds more
 * Kubernetes rules, else what `iptables --version` says the system default is.
 *
 * Arguments are always an argv array (execFile, no shell); rule text goes through stdin. A
 * failure becomes one DataplaneError line naming the tool and what it said first on stderr.
 */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { DataplaneError } from '../errors.js';

/**
 * How long one tool run may take. Loading 10,000 services' rules took iptables-nft-restore close
 * to a minute of CPU on a loaded 2-core machine (vipr bench): the limit only catches a hung tool.
 */
const TOOL_TIMEOUT_MS = 5 * 60_000;

export interface ToolResult {
  stdout: string;
  stderr: string;
  /** Exit code; 0 unless the call was made with `check: false`. */
  code: number;
}

export interface ToolOptions {
  /** Written to the tool's stdin (rule sets for `-restore`, `nft -f -`, `ipset restore`). */
  input?: string;
  timeoutMs?: number;
  /** false: a non-zero exit is returned in `code` instead of thrown. */
  check?: boolean;
}

/** Debian packages providing each tool, for the "not found" hint. */
const TOOL_PACKAGES: Record<string, string> = {
  iptables: 'iptables',
  nft: 'nftables',
  ipvsadm: 'ipvsadm',
  ipset: 'ipset',
  ip: 'iproute2',
  modprobe: 'kmod',
};

function packageOf(file: string): string | undefined {
  return TOOL_PACKAGES[file.startsWith('iptables') ? 'iptables' : file];
}

/** The first meaningful line of a tool's stderr (iptables-restore puts the cause there). */
export function firstStderrLine(stderr: string): string | null {
  const line = stderr
    .split('\n')
    .map((l) => l.trim())
    // iptables-nft-save warns about the other backend's tables: not a reason for anything.
    .find((l) => l.length > 0 && !l.startsWith('# Warning:'));
  return line ?? null;
}

/** Runs a tool to completion; throws a one-line DataplaneError unless it exits 0 (or check is false). */
export function runTool(file: string, args: readonly string[], opts: ToolOptions = {}): Promise<ToolResult> {
  const shown = [file, ...args].join(' ');
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      { timeout: opts.timeoutMs ?? TOOL_TIMEOUT_MS, maxBuffer: 256 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr, code: 0 });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean; signal?: string | null };
        if (e.code === 'ENOENT') {
          const pkg = packageOf(file);
          reject(new DataplaneError(`${file} not found${pkg ? ` (install the ${pkg} package)` : ''}`, { cause: err }));
          return;
        }
        if (e.killed || (typeof e.signal === 'string' && e.signal.length > 0)) {
          reject(new DataplaneError(`${shown} was killed by ${e.signal ?? 'a signal'} (timeout?)`, { cause: err }));
          return;
        }
        const code = typeof e.code === 'number' ? e.code : 1;
        if (opts.check === false) {
          resolve({ stdout, stderr, code });
          return;
        }
        const reason = firstStderrLine(stderr) ?? `exit code ${code}`;
        reject(new DataplaneError(`${file} failed: ${reason}`, { cause: err }));
      },
    );
    // A tool that exits before reading all of stdin (a usage error) must not crash us with EPIPE.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
}

/** Whether `file` can be run at all (found on PATH). */
export async function toolExists(file: string): Promise<boolean> {
  try {
    await runTool(file, ['--version'], { check: false, timeoutMs: 10_000 });
    return true;
  } catch (err) {
    if (err instanceof DataplaneError && /not found/.test(err.message)) return false;
    throw err;
  }
}

export type IptablesBackend = 'legacy' | 'nft';
export type IptablesBackendChoice = IptablesBackend | 'auto';

export const IPTABLES_BACKENDS: readonly IptablesBackend[] = ['legacy', 'nft'];

export function parseIptablesBackendChoice(value: string): IptablesBackendChoice {
  if (value === 'auto' || value === 'legacy' || value === 'nft') return value;
  throw new DataplaneError(`--iptables-backend ${value}: expected auto, legacy or nft`);
}

/** One iptables backend, through its explicit binaries (never the `iptables` alternative). */
export class IptablesTools {
  constructor(readonly backend: IptablesBackend) {}

  get iptables(): string {
    return `iptables-${this.backend}`;
  }

  /** `iptables-restore` input applied atomically per table; `noflush` keeps chains not declared. */
  async restore(text: string, opts: { noflush: boolean } = { noflush: true }): Promise<void> {
    await runTool(`iptables-${this.backend}-restore`, opts.noflush ? ['--noflush'] : [], { input: text });
  }

  /** `iptables-save [-t table]`. */
  async save(table?: 'nat' | 'filter'): Promise<string> {
    const { stdout } = await runTool(`iptables-${this.backend}-save`, table === undefined ? [] : ['-t', table]);
    return stdout;
  }

  /** `iptables -w ARGS`; with check false, the exit code tells (e.g. `-C` finding no rule). */
  run(args: readonly string[], check = true): Promise<ToolResult> {
    return runTool(this.iptables, ['-w', ...args], { check });
  }

  /** Whether this backend's binaries are installed. */
  exists(): Promise<boolean> {
    return toolExists(`iptables-${this.backend}-save`);
  }
}

/** Lines of an iptables-save dump that belong to Kubernetes (rules and chains named KUBE-*). */
export function countKubeRules(save: string): number {
  let n = 0;
  for (const line of save.split('\n')) {
    if (line.startsWith(':KUBE-') || / -j KUBE-/.test(line) || line.startsWith('-A KUBE-')) n++;
  }
  return n;
}

async function kubeRulesIn(backend: IptablesBackend): Promise<number | null> {
  const tools = new IptablesTools(backend);
  try {
    return countKubeRules(await tools.save());
  } catch (err) {
    // A backend whose binaries are missing (or whose kernel side cannot load) holds nothing.
    if (err instanceof DataplaneError) return null;
    throw err;
  }
}

/**
 * Picks the backend as the iptables-wrapper does: an explicit choice wins; otherwise the
 * backend already holding more KUBE- rules (so a restarted or replaced proxy keeps using the
 * tables traffic is really going through); with none anywhere, nf_tables when the system's
 * `iptables --version` says so, else legacy.
 */
export async function detectIptablesBackend(choice: IptablesBackendChoice): Promise<IptablesBackend> {
  if (choice !== 'auto') {
    if (!(await new IptablesTools(choice).exists())) {
      throw new DataplaneError(`--iptables-backend ${choice}: iptables-${choice}-save not found (install the iptables package)`);
    }
    return choice;
  }
  const [legacy, nft] = await Promise.all([kubeRulesIn('legacy'), kubeRulesIn('nft')]);
  if (legacy === null && nft === null) {
    throw new DataplaneError('no iptables backend found: neither iptables-legacy-save nor iptables-nft-save runs (install the iptables package)');
  }
  if (legacy === null) return 'nft';
  if (nft === null) return 'legacy';
  if (legacy > nft) return 'legacy';
  if (nft > legacy) return 'nft';
  const version = await runTool('iptables', ['--version'], { check: false }).catch(() => null);
  return version !== null && /nf_tables/.test(version.stdout) ? 'nft' : 'legacy';
}

/** Writes a sysctl under /proc/sys (per network namespace for net.*) when it differs. */
export async function setSysctl(name: string, value: string): Promise<void> {
  const path = `/proc/sys/${name.replaceAll('.', '/')}`;
  try {
    if ((await readFile(path, 'utf8')).trim() === value) return;
    await writeFile(path, value);
  } catch (err) {
    throw new DataplaneError(`setting ${name}=${value} failed: ${(err as Error).message}`, { cause: err });
  }
}
