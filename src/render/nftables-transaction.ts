/*
 * kube-proxy's incremental nftables syncs (pkg/proxy/nftables/proxier.go since v1.31), printed
 * from the same model as the full text (nftables.ts). Pure: the writer remembers what it last
 * wrote and plans the next transactions; the dataplane runs them and says whether they applied.
 *
 *   - A ServicePort's chains are rewritten (`add chain` + `flush chain` + its rules) only when
 *     its part of the model differs from what was written, and only Services the change trackers
 *     name are looked at. Its affinity sets are `add`ed, which keeps their elements.
 *   - The dispatch sets and maps (cluster-ips, service-ips, ...) are computed per ServicePort and
 *     written as a difference: `add element` for new keys, `delete element` for gone ones,
 *     delete + add for a changed verdict. A full sync flushes and refills them.
 *   - Chains nothing uses any more are flushed now and deleted in a later sync, at least
 *     STALE_CHAIN_DELAY_MS after (kernels before 6.2 notice a dropped map reference late);
 *     unused affinity sets are deleted at once.
 *   - A full sync also re-asserts the fixed part (base chains, jumps, masquerading) and removes
 *     service chains and affinity sets nothing uses, listed from the kernel.
 *   - With nothing known (the first sync, or after a failed one) every ServicePort is rewritten.
 *     The kernel's work per transaction grows with its length times the anonymous sets (the
 *     `numgen ... vmap { }` of each service chain) it binds, so a rewrite of many ServicePorts
 *     goes in transactions of REWRITE_CHUNK ServicePorts: their chains are not reachable until
 *     the last transaction writes the dispatch elements, and a rewritten chain is replaced
 *     atomically within its own transaction. A sync rewriting fewer is one transaction.
 */
import type { DesiredState } from '../model/types.js';
import type { IpFamily } from '../model/ip.js';
import { plainEqual } from '../model/diff.js';
import {
  NFT_NODEPORT_IPS, NFT_SERVICE_CONTAINERS, nftAddLine, nftFamilyOf, nftServicePort, nftSetup, nftTableRef,
  type NftCommand, type NftElement, type NftFamily, type NftServicePort,
} from './nftables.js';
import { resolveOptions, type RenderOptions, type ResolvedOptions } from './options.js';

/** How long a flushed stale chain waits before it is deleted (kube-proxy: one second). */
export const STALE_CHAIN_DELAY_MS = 1000;

/** ServicePorts per transaction when many are rewritten at once. */
export const REWRITE_CHUNK = 500;

/** Service chains and affinity sets found in the kernel's table (listed on full syncs). */
export interface NftInstalled {
  chains: string[];
  sets: string[];
}

export interface NftSyncRequest {
  state: DesiredState;
  /** Re-assert the fixed part, refill the dispatch sets and maps, remove what nothing uses. */
  full: boolean;
  /** Services (`namespace/name`) that may have changed since the last sync; null: any. */
  changed: ReadonlySet<string> | null;
  /** What the kernel holds, for full syncs (null: not listed, nothing removed by listing). */
  installed: NftInstalled | null;
  /** A monotonic clock in milliseconds, for the stale chains' delay. */
  now: number;
}

export interface NftSyncPlan {
  /** `delete chain` of chains flushed long enough ago; run first, alone (failure is not fatal). */
  cleanup: string | null;
  /** The `nft -f` transactions of the sync, in order; empty when nothing differs. */
  transactions: string[];
  /** ServiceEntry keys whose programming changes (rewritten or removed), sorted. */
  changed: string[];
  /** Rules and elements added; elements, sets and chains deleted or flushed as stale. */
  writes: number;
  deletes: number;
  /** Records the plan as written: call after every transaction applied. */
  commit(): void;
}

interface WrittenElement {
  element: NftElement;
  /** ServicePorts that want it (the ports of one Service share its cluster IP). */
  refs: number;
}

interface Written {
  servicePorts: Map<string, NftServicePort>;
  /** `namespace/name` → its ServicePorts' keys. */
  byService: Map<string, Set<string>>;
  elements: Map<string, WrittenElement>;
}

const elementId = (e: NftElement): string => `${e.container} ${e.key}`;

function deleteElementLine(e: NftElement, family: NftFamily): string {
  return `delete element ${nftTableRef(family)} ${e.container} { ${e.key} }`;
}

/** A ServicePort's chains, affinity sets and rules, each chain emptied first. */
function rewriteLines(sp: NftServicePort, family: NftFamily): string[] {
  const T = nftTableRef(family);
  const lines = [`# ${sp.key}`];
  for (const name of sp.chains) lines.push(`add chain ${T} ${name}`, `flush chain ${T} ${name}`);
  for (const set of sp.sets) lines.push(nftAddLine(set, family));
  for (const rule of sp.rules) lines.push(nftAddLine(rule, family));
  return lines;
}

/**
 * The fixed part rewritten in place (kube-proxy's setupNFTables): every chain emptied and its
 * rules re-added, sets and maps declared (which keeps their elements), nodeport-ips refilled.
 * `recreateBaseChains`: also delete and re-create the base chains, so a hook priority changed
 * since the table was made does not fail the transaction (once per process, as kube-proxy).
 */
function setupLines(setup: readonly NftCommand[], recreateBaseChains: boolean, family: NftFamily): string[] {
  const T = nftTableRef(family);
  const lines: string[] = [];
  for (const cmd of setup) {
    if (cmd.kind === 'chain' && cmd.hook !== undefined && recreateBaseChains) {
      lines.push(`add chain ${T} ${cmd.name}`, `delete chain ${T} ${cmd.name}`);
    }
    lines.push(nftAddLine(cmd, family));
    if (cmd.kind === 'chain') lines.push(`flush chain ${T} ${cmd.name}`);
    if (cmd.kind === 'set' && cmd.name === NFT_NODEPORT_IPS) lines.push(`flush set ${T} ${cmd.name}`);
  }
  return lines;
}

function countLines(text: string): { writes: number; deletes: number } {
  let writes = 0;
  let deletes = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('add rule ') || line.startsWith('add element ')) writes++;
    else if (line.startsWith('delete ')) deletes++;
  }
  return { writes, deletes };
}

/**
 * What one family's table (`ip kube-proxy` or `ip6 kube-proxy`) holds as far as this process
 * wrote it, and the next sync's plan. It looks only at its family's ServicePorts.
 */
export class NftTableWriter {
  readonly family: NftFamily;
  private readonly ipFamily: IpFamily;
  private readonly opts: ResolvedOptions;
  private readonly setup: NftCommand[];
  private written: Written | null = null;
  /** Flushed chains waiting to be deleted → when they were flushed. */
  private readonly staleChains = new Map<string, number>();
  private baseChainsRecreated = false;

  constructor(
    options: RenderOptions,
    private readonly chunk = REWRITE_CHUNK,
    family: IpFamily = 'IPv4',
  ) {
    this.ipFamily = family;
    this.family = nftFamilyOf(family);
    this.opts = resolveOptions(options, family);
    this.setup = nftSetup(this.opts);
  }

  /** Whether the writer knows what is installed (false: the next plan rewrites everything). */
  get knowsInstalled(): boolean {
    return this.written !== null;
  }

  /** After a failed transaction nothing written is trusted: the next plan rewrites everything. */
  forget(): void {
    this.written = null;
    this.staleChains.clear();
  }

  plan(req: NftSyncRequest): NftSyncPlan {
    const prev = this.written;
    const rewriteAll = prev === null;
    const refill = req.full || rewriteAll;
    const lookAtAll = refill || req.changed === null;

    // Stale chains old enough go first, in their own transaction.
    const cleanupChains = [...this.staleChains].filter(([, at]) => at <= req.now - STALE_CHAIN_DELAY_MS).map(([c]) => c);
    const T = nftTableRef(this.family);
    const cleanup = cleanupChains.length === 0 ? null : `${cleanupChains.map((c) => `delete chain ${T} ${c}`).join('\n')}\n`;

    // The ServicePorts looked at, and which of them differ from what was written.
    const built = new Map<string, NftServicePort>();
    for (const entry of req.state.services) {
      if (entry.service.family !== this.ipFamily) continue;
      if (!lookAtAll && !req.changed?.has(`${entry.service.id.namespace}/${entry.service.id.name}`)) continue;
      const sp = nftServicePort(entry, this.opts);
      built.set(sp.key, sp);
    }
    const rewrite: NftServicePort[] = [];
    for (const sp of built.values()) {
      const old = prev?.servicePorts.get(sp.key);
      if (old === undefined || rewriteAll || !plainEqual(old, sp)) rewrite.push(sp);
    }
    const removed: NftServicePort[] = [];
    if (prev !== null) {
      const candidates = lookAtAll ? prev.servicePorts.keys() : [...(req.changed ?? [])].flatMap((s) => [...(prev.byService.get(s) ?? [])]);
      for (const key of candidates) {
        const old = prev.servicePorts.get(key);
        if (old !== undefined && !built.has(key)) removed.push(old);
      }
    }

    // Chains and sets no longer used.
    const staleChains = new Set<string>();
    const staleSets = new Set<string>();
    const activeChains = new Set<string>();
    const activeSets = new Set<string>();
    for (const sp of rewrite) {
      for (const c of sp.chains) activeChains.add(c);
      for (const s of sp.sets) activeSets.add(s.name);
    }
    const dropUnused = (old: NftServicePort, now: NftServicePort | undefined): void => {
      for (const c of old.chains) if (!now?.chains.includes(c)) staleChains.add(c);
      for (const s of old.sets) if (!now?.sets.some((n) => n.name === s.name)) staleSets.add(s.name);
    };
    for (const sp of rewrite) {
      const old = prev?.servicePorts.get(sp.key);
      if (old !== undefined) dropUnused(old, sp);
    }
    for (const old of removed) dropUnused(old, undefined);
    if (refill && req.installed !== null) {
      const allChains = new Set<string>();
      const allSets = new Set<string>();
      for (const sp of built.values()) {
        for (const c of sp.chains) allChains.add(c);
        for (const s of sp.sets) allSets.add(s.name);
      }
      // Service chains carry a '/' (ns/name); none of the fixed chains does (isServiceChainName).
      for (const c of req.installed.chains) if (c.includes('/') && !allChains.has(c)) staleChains.add(c);
      for (const s of req.installed.sets) if (s.startsWith('affinity-') && !allSets.has(s)) staleSets.add(s);
    }
    for (const c of activeChains) staleChains.delete(c);
    for (const s of activeSets) staleSets.delete(s);
    for (const c of cleanupChains) staleChains.delete(c);
    // Already flushed and waiting: flushing again would only postpone the delete.
    for (const c of this.staleChains.keys()) staleChains.delete(c);

    // Dispatch elements: refilled, or the difference for the ServicePorts that changed.
    const elementLines: string[] = [];
    let nextElements: Map<string, WrittenElement> = new Map();
    /** Element ids whose wanted state changed (null: no ServicePort wants it), applied on commit. */
    let pendingTouched: Map<string, WrittenElement | null> | null = null;
    if (refill) {
      nextElements = new Map();
      for (const sp of built.values()) for (const e of sp.elements) addRef(nextElements, e);
      for (const c of NFT_SERVICE_CONTAINERS) elementLines.push(`flush ${c.map ? 'map' : 'set'} ${T} ${c.name}`);
      for (const { element } of nextElements.values()) elementLines.push(nftAddLine(element, this.family));
    } else {
      const before = prev?.elements ?? new Map<string, WrittenElement>();
      const touched = new Map<string, WrittenElement | null>();
      const current = (id: string): WrittenElement | null => {
        if (touched.has(id)) return touched.get(id) ?? null;
        const w = before.get(id);
        return w === undefined ? null : { ...w };
      };
      const release = (e: NftElement): void => {
        const id = elementId(e);
        const w = current(id);
        touched.set(id, w === null || w.refs <= 1 ? null : { ...w, refs: w.refs - 1 });
      };
      for (const sp of rewrite) for (const e of prev?.servicePorts.get(sp.key)?.elements ?? []) release(e);
      for (const old of removed) for (const e of old.elements) release(e);
      for (const sp of rewrite) {
        for (const e of sp.elements) {
          const id = elementId(e);
          const w = current(id);
          touched.set(id, { element: e, refs: (w?.refs ?? 0) + 1 });
        }
      }
      const deletes: string[] = [];
      const adds: string[] = [];
      for (const [id, after] of touched) {
        const was = before.get(id);
        if (after === null) {
          if (was !== undefined) deletes.push(deleteElementLine(was.element, this.family));
        } else if (was === undefined) {
          adds.push(nftAddLine(after.element, this.family));
        } else if (was.element.value !== after.element.value) {
          deletes.push(deleteElementLine(was.element, this.family));
          adds.push(nftAddLine(after.element, this.family));
        }
      }
      // Loops, not push(...): a full rewrite at 100,000 Services has more lines than a call takes
      // arguments (RangeError: Maximum call stack size exceeded).
      for (const l of deletes) elementLines.push(l);
      for (const l of adds) elementLines.push(l);
      pendingTouched = touched;
    }

    // Transactions: setup with the first chunk, the element changes and stale objects with the last.
    const groups: NftServicePort[][] = [];
    for (let i = 0; i < rewrite.length; i += this.chunk) groups.push(rewrite.slice(i, i + this.chunk));
    if (groups.length === 0) groups.push([]);
    const finalLines = [
      ...elementLines,
      ...[...staleChains].map((c) => `flush chain ${T} ${c}`),
      ...[...staleSets].map((s) => `delete set ${T} ${s}`),
    ];
    const head = refill ? setupLines(this.setup, !this.baseChainsRecreated, this.family) : [];
    const transactions: string[] = [];
    groups.forEach((group, i) => {
      const lines = i === 0 ? [...head] : [];
      for (const sp of group) for (const l of rewriteLines(sp, this.family)) lines.push(l);
      if (i === groups.length - 1) for (const l of finalLines) lines.push(l);
      if (lines.length > 0) transactions.push(`${lines.join('\n')}\n`);
    });

    let writes = 0;
    let deletes = cleanupChains.length + staleChains.size;
    for (const tx of transactions) {
      const n = countLines(tx);
      writes += n.writes;
      deletes += n.deletes;
    }
    const changed = [...new Set([...rewrite.map((s) => s.entryKey), ...removed.map((s) => s.entryKey)])].sort();

    const commit = (): void => {
      let w = this.written;
      if (w === null || rewriteAll) {
        w = { servicePorts: new Map(), byService: new Map(), elements: new Map() };
      }
      for (const old of removed) {
        w.servicePorts.delete(old.key);
        const keys = w.byService.get(old.serviceName);
        keys?.delete(old.key);
        if (keys?.size === 0) w.byService.delete(old.serviceName);
      }
      for (const sp of rewrite) {
        w.servicePorts.set(sp.key, sp);
        const keys = w.byService.get(sp.serviceName) ?? new Set<string>();
        keys.add(sp.key);
        w.byService.set(sp.serviceName, keys);
      }
      if (refill) {
        w.elements = nextElements;
      } else if (pendingTouched !== null) {
        for (const [id, after] of pendingTouched) {
          if (after === null) w.elements.delete(id);
          else w.elements.set(id, after);
        }
      }
      this.written = w;
      for (const c of cleanupChains) this.staleChains.delete(c);
      for (const c of activeChains) this.staleChains.delete(c);
      for (const c of staleChains) this.staleChains.set(c, req.now);
      if (refill) this.baseChainsRecreated = true;
    };
    return { cleanup, transactions, changed, writes, deletes, commit };
  }
}

function addRef(elements: Map<string, WrittenElement>, e: NftElement): void {
  const id = elementId(e);
  const w = elements.get(id);
  elements.set(id, { element: e, refs: (w?.refs ?? 0) + 1 });
}
