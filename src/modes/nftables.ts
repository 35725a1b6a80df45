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
 */
import type { DesiredState } from '../model/types.js';
import type { Dataplane, SyncResult } from '../model/dataplane.js';
import { NftTableWriter, type NftInstalled } from '../render/nftables-transaction.js';
import type { RenderOptions } from '../render/options.js';
import { componentLogger } from '../log.js';
import { nftObjectNames } from './nft-listing.js';
import { run } from '../process/run.js';
import { countBackends } from './iptables.js';

const log = componentLogger('nftables');

export const NFT_TABLE_FAMILY = 'ip';
export const NFT_TABLE_NAME = 'kube-proxy';

/** Rules and set/map elements an nft transaction adds. */
export function countNftObjects(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('add rule ') || line.startsWith('add element ')) n++;
  return n;
}

/** The service chains and affinity sets `table ip kube-proxy` holds now (none without the table). */
async function listInstalled(): Promise<NftInstalled> {
  const chains = await run('nft', ['-j', '-t', 'list', 'chains', NFT_TABLE_FAMILY]);
  const sets = await run('nft', ['-j', '-t', 'list', 'sets', NFT_TABLE_FAMILY]);
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
}

export class NftablesDataplane implements Dataplane {
  readonly mode = 'nftables';
  private readonly writer: NftTableWriter;
  private readonly now: () => number;

  constructor(render: RenderOptions, opts: NftablesDataplaneOptions = {}) {
    this.writer = new NftTableWriter(render, opts.rewriteChunk);
    this.now = opts.now ?? (() => performance.now());
  }

  async sync(state: DesiredState, full: boolean, changed: ReadonlySet<string> | null = null): Promise<SyncResult> {
    const installed = full || !this.writer.knowsInstalled ? await listInstalled() : null;
    const plan = this.writer.plan({ state, full, changed, installed, now: this.now() });
    if (plan.cleanup !== null) {
      try {
        await run('nft', ['-f', '-'], { input: plan.cleanup });
      } catch (err) {
        // They stay flushed; the next full sync lists them again.
        log.warn({ err: (err as Error).message }, 'deleting stale nftables chains failed; retried after the next full sync');
      }
    }
    try {
      for (const tx of plan.transactions) await run('nft', ['-f', '-'], { input: tx });
    } catch (err) {
      this.writer.forget();
      log.error({ err: (err as Error).message, full }, 'nft -f failed; the next sync rewrites every chain');
      throw err;
    }
    plan.commit();
    return {
      services: state.services.length,
      backends: countBackends(state),
      writes: plan.writes,
      deletes: plan.deletes,
      failed: [],
      changed: plan.changed,
    };
  }

  async close(): Promise<void> {}
}
