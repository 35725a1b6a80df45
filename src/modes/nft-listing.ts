/*
 * Reading back what kube-proxy's nftables mode installed, from `nft -j list table ip kube-proxy`:
 * the `service-ips` and `service-nodeports` verdict maps give the frontends, their `goto` chains
 * lead (through external-/firewall-/service-/local- chains) to endpoint- chains ending in
 * `dnat to IP:PORT`; `ip saddr @affinity-…` sets give ClientIP affinity and their timeout;
 * `no-endpoint-services` lists ports without endpoints. Chain names carry the service name
 * (`service-HASH-ns/name/proto/port`). Pure: JSON in, data out.
 */
import type { ListedBackend, ListedService, Listing } from '../model/listing.js';
import { DataplaneError } from '../errors.js';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

interface NftRule {
  chain: string;
  expr: Json[];
}

interface NftMap {
  name: string;
  elem: Json[];
}

const PROTOCOLS: Record<string, ListedService['protocol']> = { tcp: 'TCP', udp: 'UDP', sctp: 'SCTP' };

function isObject(v: Json | undefined): v is { [key: string]: Json } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Every `jump`/`goto` target inside an expression tree (vmaps included), in order. */
function targetsIn(node: Json | undefined, out: string[]): string[] {
  if (Array.isArray(node)) {
    for (const n of node) targetsIn(n, out);
  } else if (isObject(node)) {
    for (const verdict of ['jump', 'goto']) {
      const v = node[verdict];
      if (isObject(v) && typeof v.target === 'string') out.push(v.target);
    }
    for (const [k, v] of Object.entries(node)) if (k !== 'jump' && k !== 'goto') targetsIn(v, out);
  }
  return out;
}

/** Every `@set` reference inside an expression tree. */
function setRefsIn(node: Json | undefined, out: string[]): string[] {
  if (typeof node === 'string' && node.startsWith('@')) out.push(node.slice(1));
  else if (Array.isArray(node)) for (const n of node) setRefsIn(n, out);
  else if (isObject(node)) for (const v of Object.values(node)) setRefsIn(v, out);
  return out;
}

function dnatIn(node: Json | undefined): { address: string; port: number } | null {
  if (Array.isArray(node)) {
    for (const n of node) {
      const d = dnatIn(n);
      if (d) return d;
    }
  } else if (isObject(node)) {
    const d = node.dnat;
    if (isObject(d) && typeof d.addr === 'string' && typeof d.port === 'number') return { address: d.addr, port: d.port };
    for (const v of Object.values(node)) {
      const found = dnatIn(v);
      if (found) return found;
    }
  }
  return null;
}

/** `service-HASH-ns/name/tcp/port` (or endpoint-/external-/...) → `ns/name:port`. */
export function serviceNameFromChain(chain: string): string | null {
  const m = /^[a-z]+-[A-Z2-7]{8}-([^/]+)\/([^/]+)\/[a-z]+\/([^_]*?)(__.*)?$/.exec(chain);
  if (!m) return null;
  const [, ns, name, port] = m;
  return port === '' ? `${ns}/${name}` : `${ns}/${name}:${port}`;
}

/** An element's key and value: `[key, verdict]`, key possibly wrapped in `{elem: {val, comment}}`. */
function elementParts(e: Json): { key: Json[]; comment: string | null; verdict: Json } | null {
  if (!Array.isArray(e) || e.length !== 2) return null;
  let key = e[0] as Json;
  let comment: string | null = null;
  if (isObject(key) && isObject(key.elem)) {
    comment = typeof key.elem.comment === 'string' ? key.elem.comment : null;
    key = key.elem.val ?? null;
  }
  const parts = isObject(key) && Array.isArray(key.concat) ? key.concat : [key];
  return { key: parts, comment, verdict: e[1] as Json };
}

/**
 * Parses `nft -j list table ip kube-proxy` (or `ip6 kube-proxy`: NodePorts then listed on ::)
 * into the service table `vipr list` prints.
 */
export function nftListing(jsonText: string, source: string, family: 'ip' | 'ip6' = 'ip'): Listing {
  const anyAddress = family === 'ip6' ? '::' : '0.0.0.0';
  let doc: Json;
  try {
    doc = JSON.parse(jsonText) as Json;
  } catch (err) {
    throw new DataplaneError(`nft -j: output is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const items = isObject(doc) && Array.isArray(doc.nftables) ? doc.nftables : [];
  const rules = new Map<string, NftRule[]>();
  const maps = new Map<string, NftMap>();
  const setTimeouts = new Map<string, number>();
  for (const item of items) {
    if (!isObject(item)) continue;
    const rule = item.rule;
    if (isObject(rule) && typeof rule.chain === 'string' && Array.isArray(rule.expr)) {
      const list = rules.get(rule.chain) ?? [];
      list.push({ chain: rule.chain, expr: rule.expr });
      rules.set(rule.chain, list);
    }
    const map = item.map;
    if (isObject(map) && typeof map.name === 'string') {
      maps.set(map.name, { name: map.name, elem: Array.isArray(map.elem) ? map.elem : [] });
    }
    const set = item.set;
    if (isObject(set) && typeof set.name === 'string' && typeof set.timeout === 'number') setTimeouts.set(set.name, set.timeout);
  }

  const walk = (chain: string, visited: Set<string>, out: { backends: ListedBackend[]; persistent: number }): void => {
    if (visited.has(chain)) return;
    visited.add(chain);
    for (const rule of rules.get(chain) ?? []) {
      const dnat = dnatIn(rule.expr);
      if (dnat && !out.backends.some((b) => b.address === dnat.address && b.port === dnat.port)) {
        out.backends.push({ ...dnat, forward: 'Masq', weight: 1, activeConn: 0, inactConn: 0, flags: [] });
      }
      for (const ref of setRefsIn(rule.expr, [])) {
        const timeout = setTimeouts.get(ref);
        if (ref.startsWith('affinity-') && timeout !== undefined) out.persistent = Math.max(out.persistent, timeout);
      }
      for (const target of targetsIn(rule.expr, [])) {
        if (target === 'mark-for-masquerade' || target === 'reject-chain') continue;
        walk(target, visited, out);
      }
    }
  };

  const services = new Map<string, ListedService>();
  const add = (proto: string, address: string, port: number, name: string | null, chain: string | null): void => {
    const protocol = PROTOCOLS[proto];
    if (protocol === undefined) return;
    const out = { backends: [] as ListedBackend[], persistent: 0 };
    if (chain !== null) walk(chain, new Set(), out);
    const key = `${protocol}/${address}:${port}`;
    if (services.has(key)) return;
    services.set(key, { protocol, address, port, scheduler: 'random', persistentSeconds: out.persistent, name, backends: out.backends });
  };

  for (const e of maps.get('service-ips')?.elem ?? []) {
    const p = elementParts(e);
    if (!p || p.key.length !== 3) continue;
    const [ip, proto, port] = p.key;
    const chain = targetsIn(p.verdict, [])[0] ?? null;
    if (typeof ip !== 'string' || typeof proto !== 'string' || typeof port !== 'number') continue;
    add(proto, ip, port, chain === null ? null : serviceNameFromChain(chain), chain);
  }
  for (const e of maps.get('service-nodeports')?.elem ?? []) {
    const p = elementParts(e);
    if (!p || p.key.length !== 2) continue;
    const [proto, port] = p.key;
    const chain = targetsIn(p.verdict, [])[0] ?? null;
    if (typeof proto !== 'string' || typeof port !== 'number') continue;
    add(proto, anyAddress, port, chain === null ? null : serviceNameFromChain(chain), chain);
  }
  for (const [mapName, hasAddress] of [['no-endpoint-services', true], ['no-endpoint-nodeports', false]] as const) {
    for (const e of maps.get(mapName)?.elem ?? []) {
      const p = elementParts(e);
      if (!p) continue;
      const [ip, proto, port] = hasAddress ? p.key : [anyAddress, ...p.key];
      if (typeof ip !== 'string' || typeof proto !== 'string' || typeof port !== 'number') continue;
      add(proto, ip, port, p.comment, null);
    }
  }
  return { source, services: [...services.values()] };
}

/**
 * The names of `table`'s chains or sets in `nft -j -t list chains|sets ip` (every table of the
 * family is listed; `-t` leaves set elements out, which at 10,000 services is 5 s against 0.1 s).
 */
export function nftObjectNames(jsonText: string, kind: 'chain' | 'set', table: string): string[] {
  let doc: Json;
  try {
    doc = JSON.parse(jsonText) as Json;
  } catch (err) {
    throw new DataplaneError(`nft -j list ${kind}s: output is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const items = isObject(doc) && Array.isArray(doc.nftables) ? doc.nftables : [];
  const names: string[] = [];
  for (const item of items) {
    if (!isObject(item)) continue;
    const obj = item[kind];
    if (isObject(obj) && obj.table === table && typeof obj.name === 'string') names.push(obj.name);
  }
  return names;
}
