/*
 * kube-proxy's nftables mode, applied for real with `nft -f -`, incrementally as kube-proxy's
 * nftables proxier does (the plan and its reasons: src/render/nftables-transaction.ts):
 *   - a partial sync rewrites the chains of the Services the agent names as changed, and only
 *     those whose rules differ, and writes the dispatch sets and maps by difference, in one
 *     transaction; a sync where nothing differs runs nothing;
 *   - a full sync also re-asserts the fixed part, refills the dispatch sets and maps, and lists
 *     the kernel's chains and sets to remove service chains and affinity sets nothing uses;
 *   - the first sync, and the one after a failure, rewrite every chain (no table delete);
 *   - chains nothing uses are flushed, then deleted in a sync at least a second later.
 * Affinity sets are never re-created, so ClientIP clients keep their backend across syncs.
 * Two tables, as kube-proxy's two proxiers: `ip kube-proxy` for IPv4's ServicePorts and
 * `ip6 kube-proxy` for IPv6's (where the kernel has IPv6), each planned and written on its own.
 */
import type { DesiredState } from '../model/types.js';
import type { IpFamily } from '../model/ip.js';
import type { Dataplane, SyncResult } from '../model/dataplane.js';
import { NftTableWriter, type NftInstalled } from '../render/nftables-transaction.js';
import type { NftFamily } from '../render/nftables.js';
import type { RenderOptions } from '../render/options.js';
import { componentLogger } from '../log.js';
import { nftObjectNames } from './nft-listing.js';
import { run } from '../process/run.js';
import { countBackends } from './iptables.js';
import { programmedFamilies } from './tools.js';

const log = componentLogger('nftables');

export const NFT_TABLE_FAMILY = 'ip';
export const NFT_TABLE_NAME = 'kube-proxy';
/** The families kube-proxy's nftables tables live in: IPv4's, then IPv6's. */
export const NFT_TABLE_FAMILIES: readonly NftFamily[] = ['ip', 'ip6'];

/** Rules and set/map elements an nft transaction adds. */
export function countNftObjects(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('add rule ') || line.startsWith('add element ')) n++;
  return n;
}

/** The service chains and affinity sets `table ip|ip6 kube-proxy` holds now (none without the table). */
async function listInstalled(family: NftFamily): Promise<NftInstalled> {
  const chains = await run('nft', ['-j', '-t', 'list', 'chains', family]);
  const sets = await run('nft', ['-j', '-t', 'list', 'sets', family]);
  return {
    chains: nftObjectNames(chains.stdout, 'chain', NFT_TABLE_NAME),
    sets: nftObjectNames(sets.stdout, 'set', NFT_TABLE_NAME),
  };
}

export interface NftablesDataplaneOptions {
  /** Monotonic milliseconds (tests move it to age stale chains). */
  now?: () => number;
  /** ServicePorts per transaction when many are rewritten (REWRITE_CHUNK). */
  rewriteChunk?: number;
  /** The families programmed (default: IPv4, and IPv6 where the kernel has it). */
  families?: IpFamily[];
}

export class NftablesDataplane implements Dataplane {
  readonly mode = 'nftables';
  /** One writer per table: `ip kube-proxy`, then `ip6 kube-proxy`. */
  private readonly writers: NftTableWriter[];
  private readonly now: () => number;

  constructor(render: RenderOptions, opts: NftablesDataplaneOptions = {}) {
    this.writers = (opts.families ?? programmedFamilies()).map((family) => new NftTableWriter(render, opts.rewriteChunk, family));
    this.now = opts.now ?? (() => performance.now());
  }

  async sync(state: DesiredState, full: boolean, changed: ReadonlySet<string> | null = null): Promise<SyncResult> {
    let writes = 0;
    let deletes = 0;
    const changedKeys: string[] = [];
    for (const writer of this.writers) {
      const installed = full || !writer.knowsInstalled ? await listInstalled(writer.family) : null;
      const plan = writer.plan({ state, full, changed, installed, now: this.now() });
      if (plan.cleanup !== null) {
        try {
          await run('nft', ['-f', '-'], { input: plan.cleanup });
        } catch (err) {
          // They stay flushed; the next full sync lists them again.
          log.warn({ err: (err as Error).message, table: writer.family }, 'deleting stale nftables chains failed; retried after the next full sync');
        }
      }
      try {
        for (const tx of plan.transactions) await run('nft', ['-f', '-'], { input: tx });
      } catch (err) {
        for (const w of this.writers) w.forget();
        log.error({ err: (err as Error).message, full, table: writer.family }, 'nft -f failed; the next sync rewrites every chain');
        throw err;
      }
      plan.commit();
      writes += plan.writes;
      deletes += plan.deletes;
      changedKeys.push(...plan.changed);
    }
    return {
      services: state.services.length,
      backends: countBackends(state),
      writes,
      deletes,
      failed: [],
      changed: [...new Set(changedKeys)].sort(),
    };
  }

  async close(): Promise<void> {}
}
