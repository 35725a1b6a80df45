/*
 * The proxy modes as one unit for the CLI: build the dataplane of a kube-proxy mode, remove
 * what a mode installed (kube-proxy's --cleanup), clean up the other modes when one starts
 * ("starting one mode cleans up the others", as kube-proxy does), and read back what is
 * installed into the table `vipr list` prints.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Dataplane } from '../model/dataplane.js';
import type { Listing } from '../model/listing.js';
import type { RenderOptions } from '../render/options.js';
import { KUBE_IPVS_DUMMY_DEVICE } from '../render/ipvs.js';
import { MAPS } from '../bpf/layouts.js';
import { DataplaneError, ToolError } from '../errors.js';
import { run } from '../process/run.js';
import { componentLogger } from '../log.js';
import { IptablesDataplane } from './iptables.js';
import { NftablesDataplane, NFT_TABLE_FAMILIES, NFT_TABLE_NAME } from './nftables.js';
import { IpvsDataplane, PROC_IP_VS, detectIpvs } from './ipvs.js';
import { iptablesListing, parseIptablesSave, type SavedTable } from './iptables-save.js';
import { nftListing } from './nft-listing.js';
import { ipvsListing } from './ipvsadm.js';
import {
  IPTABLES_BACKENDS, IptablesTools, detectIptablesBackend, programmedFamilies, type IptablesBackend, type IptablesBackendChoice,
} from './tools.js';

const log = componentLogger('modes');

export type ProxyMode = 'bpf' | 'iptables' | 'nftables' | 'ipvs';
export const PROXY_MODES: readonly ProxyMode[] = ['bpf', 'iptables', 'nftables', 'ipvs'];

export function parseProxyMode(value: string): ProxyMode {
  if ((PROXY_MODES as readonly string[]).includes(value)) return value as ProxyMode;
  throw new DataplaneError(`--mode ${value}: expected bpf, iptables, nftables or ipvs`);
}

export interface FallbackOptions {
  render: RenderOptions;
  iptablesBackend: IptablesBackendChoice;
}

/**
 * The dataplane of a kube-proxy mode, after checking the system can run it (IPVS present, the
 * iptables backend chosen). Throws a one-line DataplaneError otherwise.
 */
export async function createFallbackDataplane(mode: Exclude<ProxyMode, 'bpf'>, opts: FallbackOptions): Promise<Dataplane> {
  switch (mode) {
    case 'iptables':
      return new IptablesDataplane(new IptablesTools(await detectIptablesBackend(opts.iptablesBackend)), opts.render);
    case 'nftables':
      return new NftablesDataplane(opts.render);
    case 'ipvs':
      await detectIpvs();
      return new IpvsDataplane(new IptablesTools(await detectIptablesBackend(opts.iptablesBackend)), opts.render);
  }
}

/** Chains kubelet owns in the nat and filter tables: never ours to delete. */
const KUBELET_CHAINS = new Set(['KUBE-KUBELET-CANARY', 'KUBE-IPTABLES-HINT']);

/** Chains only kube-proxy's iptables mode makes (the IPVS mode never does). */
const IPTABLES_MODE_CHAIN = /^(KUBE-(SVC|SVL|SEP|EXT|FW)-|KUBE-EXTERNAL-SERVICES$|KUBE-NODEPORTS$)/;
/** Chains only kube-proxy's IPVS mode makes. */
const IPVS_MODE_CHAIN = /^KUBE-(NODE-PORT|LOAD-BALANCER|SOURCE-RANGES-FIREWALL)$/;

function quoteArg(arg: string): string {
  return /^[^\s"\\']+$/.test(arg) ? arg : `"${arg.replace(/(["\\])/g, '\\$1')}"`;
}

function targetOf(args: readonly string[]): string | null {
  const i = args.findIndex((a) => a === '-j' || a === '-g' || a === '--jump' || a === '--goto');
  return i >= 0 ? (args[i + 1] ?? null) : null;
}

/**
 * The iptables-restore input removing every KUBE-* chain of `tables` (kubelet's excepted) and
 * every rule elsewhere that jumps to one: declaring a chain flushes it, `-D` removes the jumps,
 * `-X` then deletes the emptied, unreferenced chains, all in one transaction per table.
 */
export function iptablesCleanupInput(tables: Map<string, SavedTable>): string {
  const lines: string[] = [];
  for (const name of ['nat', 'filter']) {
    const table = tables.get(name);
    if (table === undefined) continue;
    const kube = table.chains.filter((c) => c.startsWith('KUBE-') && !KUBELET_CHAINS.has(c));
    if (kube.length === 0) continue;
    const ours = new Set(kube);
    lines.push(`*${name}`);
    for (const chain of kube) lines.push(`:${chain} - [0:0]`);
    for (const rule of table.rules) {
      const target = targetOf(rule.args);
      if (!ours.has(rule.chain) && target !== null && ours.has(target)) {
        lines.push(['-D', rule.chain, ...rule.args.map(quoteArg)].join(' '));
      }
    }
    for (const chain of kube) lines.push(`-X ${chain}`);
    lines.push('COMMIT');
  }
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** kube-proxy's iptables cleanup in one backend, both families; returns what it removed (one line each). */
async function cleanupIptablesBackend(backend: IptablesBackend, only?: (tables: Map<string, SavedTable>) => boolean): Promise<string[]> {
  const removed: string[] = [];
  for (const family of programmedFamilies()) removed.push(...(await cleanupIptablesTables(new IptablesTools(backend, family), only)));
  return removed;
}

/** kube-proxy's iptables cleanup in one backend's tables of one family. */
async function cleanupIptablesTables(tools: IptablesTools, only?: (tables: Map<string, SavedTable>) => boolean): Promise<string[]> {
  const backend = tools.backend;
  if (!(await tools.exists())) return [];
  let save: string;
  try {
    save = await tools.save();
  } catch (err) {
    log.warn({ err: (err as Error).message, backend, family: tools.family }, `cannot read ${tools.iptables}; skipping its cleanup`);
    return [];
  }
  const tables = parseIptablesSave(save);
  if (only !== undefined && !only(tables)) return [];
  const input = iptablesCleanupInput(tables);
  if (input === '') return [];
  await tools.restore(input, { noflush: true });
  const chains = input.split('\n').filter((l) => l.startsWith('-X ')).length;
  const jumps = input.split('\n').filter((l) => l.startsWith('-D ')).length;
  return [`${tools.iptables}: ${chains} KUBE- chains and ${jumps} jump rules`];
}

function hasChain(tables: Map<string, SavedTable>, pattern: RegExp): boolean {
  for (const t of tables.values()) if (t.chains.some((c) => pattern.test(c))) return true;
  return false;
}

/** Deletes `table ip kube-proxy` and `table ip6 kube-proxy`, whichever exist. */
async function cleanupNftables(): Promise<string[]> {
  const removed: string[] = [];
  for (const family of NFT_TABLE_FAMILIES) {
    const table = [family, NFT_TABLE_NAME];
    let listed;
    try {
      listed = await run('nft', ['list', 'table', ...table], { check: false });
    } catch (err) {
      if (err instanceof ToolError && err.notFound) return removed;
      throw err;
    }
    if (listed.exitCode !== 0) continue;
    await run('nft', ['delete', 'table', ...table]);
    removed.push(`nftables: table ${table.join(' ')}`);
  }
  return removed;
}

/** IPVS's own objects: virtual servers, KUBE- ipsets, the kube-ipvs0 link (not the iptables glue). */
async function cleanupIpvsObjects(): Promise<string[]> {
  const removed: string[] = [];
  if (existsSync(PROC_IP_VS)) {
    const saved = await run('ipvsadm', ['-Sn'], { check: false }).catch(() => null);
    if (saved !== null && saved.exitCode === 0 && saved.stdout.trim() !== '') {
      await run('ipvsadm', ['-C']);
      removed.push('ipvs: virtual servers');
    }
  }
  const sets = await run('ipset', ['list', '-n'], { check: false }).catch(() => null);
  if (sets !== null && sets.exitCode === 0) {
    const kube = sets.stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('KUBE-'));
    for (const set of kube) await run('ipset', ['destroy', set]);
    if (kube.length > 0) removed.push(`ipset: ${kube.length} KUBE- sets`);
  }
  const link = await run('ip', ['link', 'show', KUBE_IPVS_DUMMY_DEVICE], { check: false }).catch(() => null);
  if (link !== null && link.exitCode === 0) {
    await run('ip', ['link', 'del', KUBE_IPVS_DUMMY_DEVICE]);
    removed.push(`link ${KUBE_IPVS_DUMMY_DEVICE}`);
  }
  return removed;
}

async function cleanupBpf(pinDir: string): Promise<string[]> {
  if (!existsSync(pinDir)) return [];
  // Loaded only when there is something to remove: the iptables modes need no libbpf.
  const { cleanupDatapath } = await import('../bpf/datapath.js');
  const removed = cleanupDatapath(pinDir);
  return removed.length === 0 ? [] : [`bpf: ${removed.length} objects under ${pinDir}`];
}

export interface CleanupOptions {
  /** The BPF mode's pin dir. */
  pinDir: string;
}

/** Removes everything `mode` installed in this network namespace; returns one line per kind. */
export async function cleanupMode(mode: ProxyMode, opts: CleanupOptions): Promise<string[]> {
  switch (mode) {
    case 'bpf':
      return cleanupBpf(opts.pinDir);
    case 'iptables': {
      const removed: string[] = [];
      for (const backend of IPTABLES_BACKENDS) removed.push(...(await cleanupIptablesBackend(backend)));
      return removed;
    }
    case 'nftables':
      return cleanupNftables();
    case 'ipvs': {
      // The iptables glue first: its rules reference the ipsets.
      const removed: string[] = [];
      for (const backend of IPTABLES_BACKENDS) removed.push(...(await cleanupIptablesBackend(backend)));
      removed.push(...(await cleanupIpvsObjects()));
      return removed;
    }
  }
}

/**
 * What `vipr run --mode MODE` removes before its first sync: every other mode's objects, and
 * the other iptables backend's KUBE- rules (left there, they would still see every packet).
 * The chosen backend's rules stay when they are this mode's own, so a restart moves nothing.
 */
export async function cleanupOtherModes(
  mode: ProxyMode,
  opts: CleanupOptions & { iptablesBackend: IptablesBackend | null },
): Promise<string[]> {
  const removed: string[] = [];
  if (mode !== 'bpf') removed.push(...(await cleanupBpf(opts.pinDir)));
  if (mode !== 'nftables') removed.push(...(await cleanupNftables()));
  for (const backend of IPTABLES_BACKENDS) {
    if ((mode !== 'iptables' && mode !== 'ipvs') || backend !== opts.iptablesBackend) {
      removed.push(...(await cleanupIptablesBackend(backend)));
    } else if (mode === 'iptables') {
      removed.push(...(await cleanupIptablesBackend(backend, (t) => hasChain(t, IPVS_MODE_CHAIN))));
    } else {
      removed.push(...(await cleanupIptablesBackend(backend, (t) => hasChain(t, IPTABLES_MODE_CHAIN))));
    }
  }
  if (mode !== 'ipvs') removed.push(...(await cleanupIpvsObjects()));
  for (const line of removed) log.info({ mode }, `removed another mode's leftovers: ${line}`);
  return removed;
}

export interface ListOptions {
  pinDir: string;
  iptablesBackend: IptablesBackendChoice;
}

/** Reads what `mode` has installed into the `vipr list` table. */
export async function readListing(mode: ProxyMode, opts: ListOptions): Promise<Listing> {
  switch (mode) {
    case 'bpf': {
      const { openPinnedMaps, closeMaps } = await import('../bpf/datapath.js');
      const { readBpfListing } = await import('../bpf/inspect.js');
      const maps = openPinnedMaps(opts.pinDir);
      try {
        return readBpfListing(maps, opts.pinDir);
      } finally {
        closeMaps(maps);
      }
    }
    case 'iptables': {
      const backend = await detectIptablesBackend(opts.iptablesBackend);
      const listings: Listing[] = [];
      for (const family of programmedFamilies()) {
        const tools = new IptablesTools(backend, family);
        if (family === 'IPv6' && !(await tools.exists())) continue;
        listings.push(iptablesListing(await tools.save(), tools.iptables, family));
      }
      return mergeListings(`iptables (${backend})`, listings);
    }
    case 'nftables': {
      const listings: Listing[] = [];
      for (const family of NFT_TABLE_FAMILIES) {
        const res = await run('nft', ['-j', 'list', 'table', family, NFT_TABLE_NAME], { check: false });
        if (res.exitCode === 0) listings.push(nftListing(res.stdout, `table ${family} ${NFT_TABLE_NAME}`, family));
      }
      if (listings.length === 0) {
        throw new DataplaneError(`nothing installed: no nftables table ip ${NFT_TABLE_NAME} or ip6 ${NFT_TABLE_NAME}; start 'vipr run --mode nftables'`);
      }
      return mergeListings(`nftables (${listings.map((l) => l.source).join(', ')})`, listings);
    }
    case 'ipvs': {
      await detectIpvs();
      return ipvsListing((await run('ipvsadm', ['-Sn'])).stdout, 'ipvs');
    }
  }
}

/** One listing of both families' services (vipr list sorts them: IPv4, then IPv6). */
function mergeListings(source: string, listings: readonly Listing[]): Listing {
  return { source, services: listings.flatMap((l) => l.services) };
}

/**
 * The mode whose objects are installed here: bpf when its maps are pinned, else nftables,
 * ipvs (kube-ipvs0 exists), iptables (a KUBE-SERVICES chain in nat); null when none.
 */
export async function detectInstalledMode(pinDir: string): Promise<ProxyMode | null> {
  if (existsSync(join(pinDir, MAPS.services.name))) return 'bpf';
  for (const family of NFT_TABLE_FAMILIES) {
    const nft = await run('nft', ['list', 'table', family, NFT_TABLE_NAME], { check: false }).catch(() => null);
    if (nft !== null && nft.exitCode === 0) return 'nftables';
  }
  const link = await run('ip', ['link', 'show', KUBE_IPVS_DUMMY_DEVICE], { check: false }).catch(() => null);
  if (link !== null && link.exitCode === 0) return 'ipvs';
  for (const backend of IPTABLES_BACKENDS) {
    for (const family of programmedFamilies()) {
      const tools = new IptablesTools(backend, family);
      if (!(await tools.exists())) continue;
      const save = await tools.save('nat').catch(() => '');
      if (parseIptablesSave(save).get('nat')?.chains.includes('KUBE-SERVICES')) return 'iptables';
    }
  }
  return null;
}
