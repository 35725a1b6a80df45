/*
 * kube-proxy's nftables mode, applied for real: the renderer's text is one transaction
 * (add table, delete table, re-add everything), so one `nft -f -` replaces `table ip kube-proxy`
 * atomically. A sync whose rendering equals the last applied one writes nothing; a full sync
 * always applies, which also repairs a table someone else edited.
 *
 * Replacing the table resets the affinity sets: a ClientIP service's clients may move to
 * another backend when any service changes (kube-proxy patches the table and keeps them).
 */
import type { DesiredState } from '../model/types.js';
import { diffDesiredState } from '../model/diff.js';
import type { Dataplane, SyncResult } from '../sync/dataplane.js';
import { renderNftables } from '../render/nftables.js';
import type { RenderOptions } from '../render/options.js';
import { runTool } from './tools.js';
import { countBackends } from './iptables.js';

export const NFT_TABLE_FAMILY = 'ip';
export const NFT_TABLE_NAME = 'kube-proxy';

/** Rules and set/map elements an nft transaction adds. */
export function countNftObjects(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('add rule ') || line.startsWith('add element ')) n++;
  return n;
}

export class NftablesDataplane implements Dataplane {
  readonly mode = 'nftables';
  private appliedText: string | null = null;
  private appliedState: DesiredState | null = null;

  constructor(private readonly render: RenderOptions) {}

  async sync(state: DesiredState, full: boolean): Promise<SyncResult> {
    const text = renderNftables(state, this.render);
    const previous = this.appliedState;
    const result: SyncResult = {
      services: state.services.length,
      backends: countBackends(state),
      writes: 0,
      deletes: 0,
      failed: [],
      changed: [],
    };
    if (!full && text === this.appliedText) return result;
    const replaced = this.appliedText === null ? 0 : countNftObjects(this.appliedText);
    this.appliedText = null;
    this.appliedState = null;
    await runTool('nft', ['-f', '-'], { input: text });
    this.appliedText = text;
    this.appliedState = state;
    result.writes = countNftObjects(text);
    result.deletes = replaced;
    if (previous === null) {
      result.changed = state.services.map((e) => e.key);
    } else {
      const diff = diffDesiredState(previous, state);
      result.changed = [...diff.added, ...diff.changed, ...diff.removed].sort();
    }
    return result;
  }

  async close(): Promise<void> {}
}
