/*
 * The iptables backends kube-proxy's modes are applied with, chosen as kube-proxy's image does
 * (the iptables-wrapper script): whichever of legacy and nf_tables already holds more Kubernetes
 * rules, else what `iptables --version` says the system default is. The tools themselves run
 * through src/process/run.ts (argv arrays, rule text on stdin, a ToolError on failure).
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import type { IpFamily } from '../model/ip.js';
import { DataplaneError, ToolError } from '../errors.js';
import { run, toolExists, type RunResult } from '../process/run.js';

export type IptablesBackend = 'legacy' | 'nft';
export type IptablesBackendChoice = IptablesBackend | 'auto';

export const IPTABLES_BACKENDS: readonly IptablesBackend[] = ['legacy', 'nft'];

export function parseIptablesBackendChoice(value: string): IptablesBackendChoice {
  if (value === 'auto' || value === 'legacy' || value === 'nft') return value;
  throw new DataplaneError(`--iptables-backend ${value}: expected auto, legacy or nft`);
}

/**
 * One iptables backend of one family, through its explicit binaries (never the `iptables`
 * alternative): iptables-legacy / iptables-nft for IPv4, ip6tables-legacy / ip6tables-nft for IPv6.
 */
export class IptablesTools {
  constructor(
    readonly backend: IptablesBackend,
    readonly family: IpFamily = 'IPv4',
  ) {}

  /** The same backend's tools for the other family's tables. */
  forFamily(family: IpFamily): IptablesTools {
    return new IptablesTools(this.backend, family);
  }

  get iptables(): string {
    return `${this.family === 'IPv6' ? 'ip6tables' : 'iptables'}-${this.backend}`;
  }

  /** `iptables-restore` input applied atomically per table; `noflush` keeps chains not declared. */
  async restore(text: string, opts: { noflush: boolean } = { noflush: true }): Promise<void> {
    await run(`${this.iptables}-restore`, opts.noflush ? ['--noflush'] : [], { input: text });
  }

  /** `iptables-save [-t table]`. */
  async save(table?: 'nat' | 'filter'): Promise<string> {
    const { stdout } = await run(`${this.iptables}-save`, table === undefined ? [] : ['-t', table]);
    return stdout;
  }

  /** `iptables -w ARGS`; with check false, the exit code tells (e.g. `-C` finding no rule). */
  run(args: readonly string[], check = true): Promise<RunResult> {
    return run(this.iptables, ['-w', ...args], { check });
  }

  /** Whether this backend's binaries are installed. */
  exists(): Promise<boolean> {
    return toolExists(`${this.iptables}-save`);
  }
}

/** Whether this kernel (and network namespace) has IPv6 at all; without it only IPv4 is programmed. */
export function ipv6Enabled(): boolean {
  return existsSync('/proc/sys/net/ipv6');
}

/** The families the fallback modes program here: IPv4, and IPv6 where the kernel has it. */
export function programmedFamilies(): IpFamily[] {
  return ipv6Enabled() ? ['IPv4', 'IPv6'] : ['IPv4'];
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
    if (err instanceof ToolError) return null;
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
      throw new DataplaneError(`--iptables-backend ${choice}: iptables-${choice}-save not found: apt-get install iptables`);
    }
    return choice;
  }
  const [legacy, nft] = await Promise.all([kubeRulesIn('legacy'), kubeRulesIn('nft')]);
  if (legacy === null && nft === null) {
    throw new DataplaneError('no iptables backend found: neither iptables-legacy-save nor iptables-nft-save runs; apt-get install iptables');
  }
  if (legacy === null) return 'nft';
  if (nft === null) return 'legacy';
  if (legacy > nft) return 'legacy';
  if (nft > legacy) return 'nft';
  const version = await run('iptables', ['--version'], { check: false }).catch(() => null);
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
