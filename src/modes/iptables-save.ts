/*
 * Reading back what kube-proxy's iptables mode installed, from `iptables-save` text: the chains
 * of each table (to delete stale service chains) and the service table `vipr list` prints,
 * followed the way packets go: KUBE-SERVICES / KUBE-NODEPORTS → KUBE-EXT / KUBE-FW → KUBE-SVC /
 * KUBE-SVL → KUBE-SEP's `DNAT --to-destination`. Rule comments carry the service names;
 * `-m recent --rcheck --seconds N` is ClientIP affinity. Pure: text in, data out.
 */
import type { ListedBackend, ListedService, Listing } from '../model/listing.js';
import type { IpFamily } from '../model/ip.js';

export interface SavedRule {
  chain: string;
  /** The rule's arguments after `-A CHAIN`, unquoted. */
  args: string[];
}

export interface SavedTable {
  /** Chains in declaration order (built-in chains included). */
  chains: string[];
  rules: SavedRule[];
}

/** Splits one iptables-save line into arguments, honouring double quotes and backslash escapes. */
export function splitRuleLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inToken = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (quoted) {
      if (c === '\\' && i + 1 < line.length) {
        cur += line[++i];
      } else if (c === '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c === '"') {
      quoted = true;
      inToken = true;
    } else if (c === ' ' || c === '\t') {
      if (inToken) out.push(cur);
      cur = '';
      inToken = false;
    } else {
      cur += c;
      inToken = true;
    }
  }
  if (inToken) out.push(cur);
  return out;
}

/** Parses `iptables-save` output into its tables. */
export function parseIptablesSave(text: string): Map<string, SavedTable> {
  const tables = new Map<string, SavedTable>();
  let table: SavedTable | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      table = { chains: [], rules: [] };
      tables.set(line.slice(1), table);
    } else if (line === 'COMMIT') {
      table = null;
    } else if (table !== null && line.startsWith(':')) {
      table.chains.push(line.slice(1).split(' ')[0] as string);
    } else if (table !== null && line.startsWith('-A ')) {
      const args = splitRuleLine(line);
      table.rules.push({ chain: args[1] as string, args: args.slice(2) });
    }
  }
  return tables;
}

/** The chains of one table in an `iptables-save -t TABLE` (or full) dump. */
export function chainsOf(save: string, table: 'nat' | 'filter'): string[] {
  return parseIptablesSave(save).get(table)?.chains ?? [];
}

/** What a rule matches and does, as far as the listing needs it. Negated matches are skipped. */
export interface RuleFacts {
  destination: string | null;
  protocol: string | null;
  dport: number | null;
  target: string | null;
  comment: string | null;
  toDestination: string | null;
  /** `-m recent --rcheck --seconds N`: the affinity timeout. */
  recentSeconds: number | null;
  /** `-m addrtype --dst-type LOCAL`. */
  dstLocal: boolean;
}

export function ruleFacts(args: readonly string[]): RuleFacts {
  const facts: RuleFacts = {
    destination: null, protocol: null, dport: null, target: null, comment: null,
    toDestination: null, recentSeconds: null, dstLocal: false,
  };
  let rcheck = false;
  let seconds: number | null = null;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const next = args[i + 1];
    if (a === '!') {
      // `! -s X`, `! --mark M`...: a negated match says nothing about the service; skip it.
      i += next !== undefined && next.startsWith('-') && args[i + 2] !== undefined && !args[i + 2]?.startsWith('-') ? 2 : 1;
      continue;
    }
    switch (a) {
      case '-d':
      case '--destination':
        // iptables-save writes single addresses as /32, ip6tables-save as /128.
        facts.destination = (next ?? '').replace(/\/(32|128)$/, '');
        i++;
        break;
      case '-p':
      case '--protocol':
        facts.protocol = (next ?? '').toLowerCase();
        i++;
        break;
      case '--dport':
      case '--destination-port':
        facts.dport = Number(next);
        i++;
        break;
      case '-j':
      case '--jump':
      case '-g':
      case '--goto':
        facts.target = next ?? null;
        i++;
        break;
      case '--comment':
        facts.comment = next ?? null;
        i++;
        break;
      case '--to-destination':
        facts.toDestination = next ?? null;
        i++;
        break;
      case '--rcheck':
        rcheck = true;
        break;
      case '--seconds':
        seconds = Number(next);
        i++;
        break;
      case '--dst-type':
        facts.dstLocal = next === 'LOCAL';
        i++;
        break;
      default:
        break;
    }
  }
  if (rcheck && seconds !== null) facts.recentSeconds = seconds;
  return facts;
}

const PROTOCOLS: Record<string, ListedService['protocol']> = { tcp: 'TCP', udp: 'UDP', sctp: 'SCTP' };

/** Chains whose rules only mark or filter: never part of the path to a backend. */
const NOT_A_PATH = new Set(['KUBE-MARK-MASQ', 'KUBE-MARK-DROP', 'RETURN', 'ACCEPT', 'DROP', 'REJECT', 'DNAT', 'MARK', 'MASQUERADE']);

/** The service name in a kube-proxy comment: `ns/name:port cluster IP` → `ns/name:port`. */
function serviceNameOf(comment: string | null): string | null {
  if (comment === null) return null;
  const name = comment.replace(/ (cluster IP|external IP|loadbalancer IP|has no endpoints|has no local endpoints)$/, '');
  return /^[^ /]+\/[^ ]+$/.test(name) ? name : null;
}

/** DNAT's `--to-destination`: `10.0.0.1:80`, or `[fd00::1]:80` for IPv6. */
function parseEndpoint(dest: string): { address: string; port: number } | null {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(dest) ?? /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(dest);
  return m ? { address: (m[1] as string).toLowerCase(), port: Number(m[2]) } : null;
}

interface Walk {
  backends: ListedBackend[];
  persistentSeconds: number;
}

function walkChain(rulesByChain: Map<string, SavedRule[]>, chain: string, visited: Set<string>, out: Walk): void {
  if (visited.has(chain)) return;
  visited.add(chain);
  for (const rule of rulesByChain.get(chain) ?? []) {
    const f = ruleFacts(rule.args);
    if (f.recentSeconds !== null) out.persistentSeconds = Math.max(out.persistentSeconds, f.recentSeconds);
    if (f.target === 'DNAT' && f.toDestination !== null) {
      const ep = parseEndpoint(f.toDestination);
      if (ep && !out.backends.some((b) => b.address === ep.address && b.port === ep.port)) {
        out.backends.push({ ...ep, forward: 'Masq', weight: 1, activeConn: 0, inactConn: 0, flags: [] });
      }
    } else if (f.target !== null && !NOT_A_PATH.has(f.target) && rulesByChain.has(f.target)) {
      walkChain(rulesByChain, f.target, visited, out);
    }
  }
}

/**
 * The services an iptables-save (or ip6tables-save, `family` IPv6) dump (nat and, when present,
 * filter) programs. NodePorts are listed on 0.0.0.0 or :: (every local address, as kube-proxy's
 * default --nodeport-addresses); services that only have a REJECT/DROP rule (no endpoints) are
 * listed without backends.
 */
export function iptablesListing(save: string, source: string, family: IpFamily = 'IPv4'): Listing {
  const anyAddress = family === 'IPv6' ? '::' : '0.0.0.0';
  const tables = parseIptablesSave(save);
  const nat = tables.get('nat') ?? { chains: [], rules: [] };
  const filter = tables.get('filter') ?? { chains: [], rules: [] };
  const rulesByChain = new Map<string, SavedRule[]>();
  for (const chain of nat.chains) rulesByChain.set(chain, []);
  for (const rule of nat.rules) {
    const list = rulesByChain.get(rule.chain) ?? [];
    list.push(rule);
    rulesByChain.set(rule.chain, list);
  }

  const services = new Map<string, ListedService>();
  const add = (protocol: string | null, address: string, port: number | null, name: string | null, walk: Walk): void => {
    const proto = protocol === null ? undefined : PROTOCOLS[protocol];
    if (proto === undefined || port === null || !Number.isInteger(port)) return;
    const key = `${proto}/${address}:${port}`;
    const existing = services.get(key);
    if (existing) {
      for (const b of walk.backends) {
        if (!existing.backends.some((x) => x.address === b.address && x.port === b.port)) existing.backends.push(b);
      }
      existing.persistentSeconds = Math.max(existing.persistentSeconds, walk.persistentSeconds);
      existing.name ??= name;
      return;
    }
    services.set(key, {
      protocol: proto, address, port, scheduler: 'random', persistentSeconds: walk.persistentSeconds, name, backends: walk.backends,
    });
  };

  for (const rule of rulesByChain.get('KUBE-SERVICES') ?? []) {
    const f = ruleFacts(rule.args);
    if (f.target === null || f.destination === null || !rulesByChain.has(f.target) || NOT_A_PATH.has(f.target)) continue;
    const walk: Walk = { backends: [], persistentSeconds: 0 };
    walkChain(rulesByChain, f.target, new Set(), walk);
    add(f.protocol, f.destination, f.dport, serviceNameOf(f.comment), walk);
  }
  for (const rule of rulesByChain.get('KUBE-NODEPORTS') ?? []) {
    const f = ruleFacts(rule.args);
    // The nfacct twin of a NodePort rule (localhost only) leads to the same chain.
    if (f.target === null || !rulesByChain.has(f.target) || f.destination === '127.0.0.0/8') continue;
    const walk: Walk = { backends: [], persistentSeconds: 0 };
    walkChain(rulesByChain, f.target, new Set(), walk);
    add(f.protocol, anyAddress, f.dport, serviceNameOf(f.comment), walk);
  }
  // Ports without usable endpoints are refused in the filter table.
  for (const rule of filter.rules) {
    if (rule.chain !== 'KUBE-SERVICES' && rule.chain !== 'KUBE-EXTERNAL-SERVICES') continue;
    const f = ruleFacts(rule.args);
    if (f.target !== 'REJECT' && f.target !== 'DROP') continue;
    const address = f.destination ?? (f.dstLocal ? anyAddress : null);
    if (address === null) continue;
    add(f.protocol, address, f.dport, serviceNameOf(f.comment), { backends: [], persistentSeconds: 0 });
  }
  return { source, services: [...services.values()] };
}
