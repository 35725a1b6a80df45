/*
 * A large `iptables-restore --noflush` input, cut into restores the nf_tables backend applies in
 * linear time. iptables-nft-restore (1.8.9 here) looks each chain up by name in a list of what its
 * own input declared, so one restore of N chains costs O(N²): kube-proxy's rules for 10,000
 * Services (40,000 chains, 100,000 rules) took 211 s from an empty table and 85 s over the same
 * rules, against 1 s for iptables-legacy-restore; the same rules in restores of 1,000 Services
 * took 0.37 s each, 4.6 s in all. (Without --noflush it is linear, but it would flush every
 * other program's rules in the table.)
 *
 * The restores come in an order in which no rule ever jumps to a chain that is not there:
 *   1. the fixed nat chains the Services' chains jump to (KUBE-MARK-MASQ), which jump to none;
 *   2. the Services' chains, each Service's together (KUBE-SVC, -SVL, -EXT, -FW and its KUBE-SEPs,
 *      found by their jumps to each other), so each Service's rules change in one transaction;
 *   3. the chains that lead to Services (KUBE-SERVICES, KUBE-NODEPORTS, ...), the stale chains
 *      flushed and deleted (nothing leads to them any more), and every other table.
 * A full sync is then a sequence of transactions instead of kube-proxy's one: meanwhile a packet
 * meets each Service's old rules or its new ones, never a mix, and a new Service once all its
 * chains are in. An input this cannot order (a fixed chain the Services jump to that leads back to
 * a Service, a command other than -A and -X) is applied in one restore, as before.
 */
import { isIptablesServiceChainName } from '../render/hash.js';

/** Service chains per restore: 1,000 Services of 3 endpoints (0.37 s a restore here). */
export const NFT_RESTORE_CHUNK_CHAINS = 4000;

interface Section {
  table: string;
  /** `:CHAIN POLICY [counters]` lines, by chain, in input order. */
  decls: Map<string, string>;
  /** Every other line of the section but COMMIT, in input order. */
  commands: string[];
}

function parseSections(text: string): Section[] | null {
  const sections: Section[] = [];
  let cur: Section | null = null;
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      if (cur !== null) return null;
      cur = { table: line.slice(1), decls: new Map(), commands: [] };
    } else if (line === 'COMMIT') {
      if (cur === null) return null;
      sections.push(cur);
      cur = null;
    } else if (cur === null) {
      return null;
    } else if (line.startsWith(':')) {
      cur.decls.set(line.slice(1).split(' ')[0] as string, line);
    } else {
      cur.commands.push(line);
    }
  }
  return cur === null ? sections : null;
}

/** The words of a rule, double-quoted ones (comments) kept whole. */
function words(line: string): string[] {
  return line.match(/"(?:[^"\\]|\\.)*"|\S+/g) ?? [];
}

/** Where a rule jumps or goes (`-j`, `-g`), or null. */
function jumpTarget(rule: string): string | null {
  const w = words(rule);
  for (let i = 2; i < w.length - 1; i++) if (w[i] === '-j' || w[i] === '-g') return w[i + 1] as string;
  return null;
}

function sectionText(table: string, decls: string[], commands: string[]): string {
  return `*${table}\n${decls.map((d) => `${d}\n`).join('')}${commands.map((c) => `${c}\n`).join('')}COMMIT\n`;
}

/**
 * `text` as restores to apply one after the other (see the top of this file), or `[text]` when it
 * declares no more than `maxChains` Service chains or cannot be cut safely.
 */
export function restoreChunks(text: string, maxChains = NFT_RESTORE_CHUNK_CHAINS): string[] {
  const sections = parseSections(text);
  if (sections === null) return [text];
  const nat = sections.find((s) => s.table === 'nat');
  if (nat === undefined) return [text];
  const serviceChains = [...nat.decls.keys()].filter(isIptablesServiceChainName);
  if (serviceChains.length <= maxChains) return [text];

  const rules = new Map<string, string[]>();
  const deleted: string[] = [];
  for (const line of nat.commands) {
    const w = line.split(' ');
    const chain = w[1];
    if (chain === undefined || !nat.decls.has(chain)) return [text];
    if (w[0] === '-A') {
      const list = rules.get(chain);
      if (list) list.push(line);
      else rules.set(chain, [line]);
    } else if (w[0] === '-X' && w.length === 2 && isIptablesServiceChainName(chain)) {
      deleted.push(chain);
    } else {
      return [text];
    }
  }
  const stale = new Set(deleted);
  if (deleted.some((c) => rules.has(c))) return [text];
  const active = serviceChains.filter((c) => !stale.has(c));
  const isActive = new Set(active);

  // A Service's chains, by their jumps to each other (union-find over chain indexes).
  const index = new Map(active.map((c, i) => [c, i]));
  const parent = active.map((_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) {
      parent[i] = parent[parent[i] as number] as number;
      i = parent[i] as number;
    }
    return i;
  };
  // The fixed chains Services jump to, and the fixed chains those jump to in turn.
  const first = new Set<string>();
  const pending: string[] = [];
  for (const chain of active) {
    for (const rule of rules.get(chain) ?? []) {
      const target = jumpTarget(rule);
      if (target === null || !nat.decls.has(target)) continue; // a target (DNAT) or a chain not rewritten
      if (stale.has(target)) return [text];
      if (isActive.has(target)) {
        parent[find(index.get(chain) as number)] = find(index.get(target) as number);
      } else if (!first.has(target)) {
        first.add(target);
        pending.push(target);
      }
    }
  }
  while (pending.length > 0) {
    const chain = pending.pop() as string;
    for (const rule of rules.get(chain) ?? []) {
      const target = jumpTarget(rule);
      if (target === null || !nat.decls.has(target)) continue;
      if (isIptablesServiceChainName(target)) return [text];
      if (!first.has(target)) {
        first.add(target);
        pending.push(target);
      }
    }
  }

  const groups = new Map<number, string[]>();
  for (const chain of active) {
    const root = find(index.get(chain) as number);
    const group = groups.get(root);
    if (group) group.push(chain);
    else groups.set(root, [chain]);
  }
  const chunk = (chains: string[]): string =>
    sectionText('nat', chains.map((c) => nat.decls.get(c) as string), chains.flatMap((c) => rules.get(c) ?? []));

  const out: string[] = [];
  const firstChains = [...nat.decls.keys()].filter((c) => first.has(c));
  if (firstChains.length > 0) out.push(chunk(firstChains));
  let batch: string[] = [];
  for (const group of groups.values()) {
    if (batch.length > 0 && batch.length + group.length > maxChains) {
      out.push(chunk(batch));
      batch = [];
    }
    batch.push(...group);
  }
  if (batch.length > 0) out.push(chunk(batch));

  // Last: what leads to the Services, the stale chains (declared to flush them, then deleted),
  // and the other tables as they were.
  const lastChains = [...nat.decls.keys()].filter((c) => !first.has(c) && !isActive.has(c));
  const last = sections
    .map((s) =>
      s !== nat
        ? sectionText(s.table, [...s.decls.values()], s.commands)
        : sectionText('nat', lastChains.map((c) => nat.decls.get(c) as string), [
            ...lastChains.filter((c) => !stale.has(c)).flatMap((c) => rules.get(c) ?? []),
            ...deleted.map((c) => `-X ${c}`),
          ]),
    )
    .join('');
  out.push(last);
  return out;
}
