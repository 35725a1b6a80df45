/*
 * kube-proxy's iptables mode, applied for real. Each sync is what pkg/proxy/iptables
 * syncProxyRules does:
 *   - on a full sync: make sure the jump rules from the built-in chains exist (`-N` the target
 *     chain, `-C` the rule, `-I` it when missing), and route_localnet for localhost NodePorts;
 *   - render the rules (all services on a full sync; otherwise only the chains of services whose
 *     desired state changed since the last successful sync, the others left as they are);
 *   - read the nat table's chains (`iptables-save -t nat`) so service chains nothing uses any
 *     more are flushed and deleted — every sync, as kube-proxy, except in large clusters where
 *     only full syncs pay for the dump;
 *   - one `iptables-restore --noflush`: each table is replaced atomically; with the nf_tables
 *     backend a large input goes in several, each Service's chains in one
 *     (src/modes/iptables-chunks.ts: iptables-nft-restore is quadratic in the chains it declares).
 * Both families, as kube-proxy's two proxiers: IPv4's ServicePorts with iptables-restore, IPv6's
 * with ip6tables-restore of the same backend, each family's partial sync naming only its own
 * changed ServicePorts (their keys differ by family). After a failure in either family nothing
 * is trusted: the next sync is full for both.
 */
import type { DesiredState } from '../model/types.js';
import type { IpFamily } from '../model/ip.js';
import { diffDesiredState } from '../model/diff.js';
import type { Dataplane, SyncResult } from '../model/dataplane.js';
import { iptablesJumpRules, LARGE_CLUSTER_ENDPOINTS_THRESHOLD, renderIptables, type IptablesJumpRule } from '../render/iptables.js';
import { resolveOptions, type RenderOptions } from '../render/options.js';
import { DataplaneError } from '../errors.js';
import { componentLogger } from '../log.js';
import { chainsOf } from './iptables-save.js';
import { restoreChunks } from './iptables-chunks.js';
import { programmedFamilies, setSysctl, type IptablesTools } from './tools.js';

const log = componentLogger('iptables');

export interface IptablesDataplaneOptions {
  /** Force a full sync after this many partial ones (the agent also asks for one periodically). */
  fullSyncEvery?: number;
  /** The families programmed (default: IPv4, and IPv6 where the kernel has it). */
  families?: IpFamily[];
}

/** Distinct endpoints any traffic may reach, over all services. */
export function countBackends(state: DesiredState): number {
  const seen = new Set<string>();
  for (const e of state.services) for (const ep of e.selection.allReachableEndpoints) seen.add(`${e.service.id.protocol}/${ep.ip}:${ep.port}`);
  return seen.size;
}

/** Rules written and chains deleted by an iptables-restore input. */
export function countRestoreLines(text: string): { writes: number; deletes: number } {
  let writes = 0;
  let deletes = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('-A ') || line.startsWith('-I ')) writes++;
    else if (line.startsWith('-X ') || line.startsWith('-D ')) deletes++;
  }
  return { writes, deletes };
}

/** Ensures kube-proxy's jump rules exist: the target chain first, then the rule at the top. */
export async function ensureJumpRules(tools: IptablesTools, rules: ReadonlyArray<Pick<IptablesJumpRule, 'table' | 'chain' | 'target' | 'args'>>): Promise<number> {
  let inserted = 0;
  const made = new Set<string>();
  for (const rule of rules) {
    const chainKey = `${rule.table}/${rule.target}`;
    if (!made.has(chainKey)) {
      const created = await tools.run(['-t', rule.table, '-N', rule.target], false);
      if (created.exitCode !== 0 && !/already exists/i.test(created.stderr)) {
        throw new DataplaneError(`${tools.iptables} -t ${rule.table} -N ${rule.target} failed: ${created.stderr.trim().split('\n')[0] ?? `exit ${created.exitCode}`}`);
      }
      made.add(chainKey);
    }
    const check = await tools.run(['-t', rule.table, '-C', rule.chain, ...rule.args], false);
    if (check.exitCode === 0) continue;
    await tools.run(['-t', rule.table, '-I', rule.chain, ...rule.args]);
    inserted++;
  }
  return inserted;
}

export class IptablesDataplane implements Dataplane {
  readonly mode: string;
  /** The desired state of the last successful sync; null = the next sync is full. */
  private applied: DesiredState | null = null;
  private partialsSinceFull = 0;
  private readonly fullSyncEvery: number;
  readonly families: IpFamily[];

  constructor(
    private readonly tools: IptablesTools,
    private readonly render: RenderOptions,
    opts: IptablesDataplaneOptions = {},
  ) {
    this.mode = `iptables (${tools.backend})`;
    this.fullSyncEvery = opts.fullSyncEvery ?? 60;
    this.families = opts.families ?? programmedFamilies();
  }

  get backend(): string {
    return this.tools.backend;
  }

  async sync(state: DesiredState, full: boolean): Promise<SyncResult> {
    const previous = this.applied;
    const doFull = full || previous === null || this.partialsSinceFull >= this.fullSyncEvery;
    // Forget the last state until this sync succeeds: a failure halfway leaves unknown rules.
    this.applied = null;
    let writes = 0;
    let changed: string[];
    let onlyChanged: Set<string> | undefined;
    if (doFull) {
      changed = state.services.map((e) => e.key);
      if (previous !== null) changed.push(...diffDesiredState(previous, state).removed);
    } else {
      const diff = diffDesiredState(previous, state);
      changed = [...diff.added, ...diff.changed, ...diff.removed];
      onlyChanged = new Set(changed);
    }

    let deletes = 0;
    for (const family of this.families) {
      const tools = this.tools.forFamily(family);
      if (doFull) {
        writes += await ensureJumpRules(tools, iptablesJumpRules());
        if (resolveOptions(this.render, family).localhostNodePorts) {
          // Localhost NodePorts DNAT 127.0.0.1 to a pod: the kernel drops that without route_localnet.
          await setSysctl('net.ipv4.conf.all.route_localnet', '1');
        }
      }
      const totalEndpoints = state.services.reduce((n, s) => n + (s.service.family === family ? s.endpoints.length : 0), 0);
      const largeCluster = totalEndpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD;
      const existingNatChains = doFull || !largeCluster ? chainsOf(await tools.save('nat'), 'nat') : undefined;

      const text = renderIptables(state, this.render, {
        family,
        ...(onlyChanged === undefined ? {} : { onlyChanged }),
        ...(existingNatChains === undefined ? {} : { existingNatChains }),
      });
      try {
        const chunks = tools.backend === 'nft' ? restoreChunks(text) : [text];
        if (chunks.length > 1) log.info({ family, restores: chunks.length, full: doFull }, `${tools.iptables}-restore input cut into restores (each Service's chains in one)`);
        for (const chunk of chunks) await tools.restore(chunk, { noflush: true });
      } catch (err) {
        log.error({ err: (err as Error).message, full: doFull, family }, `${tools.iptables}-restore failed; the next sync is full`);
        throw err;
      }
      const counts = countRestoreLines(text);
      writes += counts.writes;
      deletes += counts.deletes;
    }
    this.applied = state;
    this.partialsSinceFull = doFull ? 0 : this.partialsSinceFull + 1;
    return {
      services: state.services.length,
      backends: countBackends(state),
      writes,
      deletes,
      failed: [],
      changed: [...new Set(changed)].sort(),
    };
  }

  async close(): Promise<void> {}
}
