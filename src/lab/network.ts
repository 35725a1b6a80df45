/*
 * Builds and removes the lab's namespaces, veth pairs, addresses and routes from a LabPlan with
 * the real `ip`, `ethtool` and `sysctl`. Every link is created from inside a lab namespace
 * (`ip -n`) with its peer placed straight into the other lab namespace, so nothing ever appears
 * in the root namespace, even for a moment, and deleting the namespaces deletes every link.
 */
import { existsSync } from 'node:fs';
import { ToolError } from '../errors.js';
import { run, tryRun, netnsPath } from './exec.js';
import { planHosts, type LabPlan, type RouteSpec, type VethEnd } from './topology.js';

/** Names of every named network namespace (`ip netns list`), without the `(id: N)` suffix. */
export async function listNetns(): Promise<string[]> {
  const res = await run('ip', ['netns', 'list']);
  return res.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

export function netnsExists(netns: string): boolean {
  return existsSync(netnsPath(netns));
}

/** Pids of the processes whose network namespace is `netns` (`ip netns pids`). */
export async function netnsPids(netns: string): Promise<number[]> {
  const res = await tryRun('ip', ['netns', 'pids', netns]);
  if (res instanceof ToolError) return [];
  return res.stdout
    .split('\n')
    .map((l) => Number.parseInt(l.trim(), 10))
    .filter((n) => Number.isInteger(n) && n > 0);
}

export interface InterfaceAddresses {
  ifname: string;
  /** IPv4 then IPv6 addresses (link-local ones left out) in CIDR notation. */
  addresses: string[];
}

interface IpAddrJson {
  ifname?: string;
  addr_info?: { family?: string; local?: string; prefixlen?: number; scope?: string }[];
}

/**
 * The addresses of every interface but `lo` in `netns`, as the kernel reports them now: IPv4
 * first, then IPv6 without the link-local ones every interface has.
 */
export async function netnsAddresses(netns: string): Promise<InterfaceAddresses[]> {
  const res = await run('ip', ['-j', '-n', netns, 'addr', 'show']);
  const parsed: unknown = JSON.parse(res.stdout.trim() === '' ? '[]' : res.stdout);
  if (!Array.isArray(parsed)) return [];
  const out: InterfaceAddresses[] = [];
  for (const entry of parsed as IpAddrJson[]) {
    if (!entry.ifname || entry.ifname === 'lo') continue;
    const info = (entry.addr_info ?? []).filter((a) => a.local !== undefined);
    const v4 = info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen ?? 32}`);
    const v6 = info.filter((a) => a.family === 'inet6' && a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen ?? 128}`);
    out.push({ ifname: entry.ifname, addresses: [...v4, ...v6] });
  }
  return out;
}

/** IPv6 addresses go in with `nodad`: usable at once, not `tentative` for the next second or two. */
function isIpv6Cidr(cidr: string): boolean {
  return cidr.includes(':');
}

async function configureEnd(end: VethEnd): Promise<void> {
  for (const addr of end.addresses) {
    await run('ip', ['-n', end.netns, 'addr', 'add', addr, 'dev', end.ifname, ...(isIpv6Cidr(addr) ? ['nodad'] : [])]);
  }
  // The lab's traffic is virtual end to end: with tx checksum offload on, veth hands partially
  // computed checksums to the receiver unchecked, and a NAT that forgets the L4 checksum update
  // would still "work". Offload off makes every sender compute full checksums.
  await run('ethtool', ['-K', end.ifname, 'tx', 'off'], { netns: end.netns });
  await run('ip', ['-n', end.netns, 'link', 'set', end.ifname, 'up']);
}

function routeArgs(r: RouteSpec): string[] {
  // `default via <IPv6>` needs the family said: `ip` takes a bare `default` for IPv4.
  const v6 = isIpv6Cidr(r.dest) || (r.via !== null && isIpv6Cidr(r.via));
  const args = ['-n', r.netns, ...(v6 ? ['-6'] : []), 'route', 'add', r.dest];
  if (r.via !== null) args.push('via', r.via);
  args.push('dev', r.dev);
  if (r.onlink) args.push('onlink');
  return args;
}

/**
 * Creates the lab. `onNetnsCreated` is called after each namespace exists, so a caller can record
 * progress and a failed build can be torn down completely.
 */
export async function buildNetwork(plan: LabPlan, onNetnsCreated: (netns: string) => Promise<void>): Promise<void> {
  const namespaces = planHosts(plan).map((h) => h.netns);
  if (plan.underlay) namespaces.push(plan.underlay.netns);
  for (const netns of namespaces) {
    await run('ip', ['netns', 'add', netns]);
    await onNetnsCreated(netns);
    await run('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    if (plan.families.includes('IPv6')) {
      // Before any link exists, so every address, link-local ones included, skips duplicate
      // address detection: a lab address is unique by construction, and a tentative one would
      // refuse to be used for the first second or two after up.
      await run('sysctl', ['-q', '-w', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0'], { netns });
    }
    if (plan.noRedirects.includes(netns)) {
      // Before any link exists: `default` is what each new interface starts with, and an
      // interface sends redirects when either it or `all` says so.
      await run('sysctl', ['-q', '-w', 'net.ipv4.conf.all.send_redirects=0', 'net.ipv4.conf.default.send_redirects=0'], { netns });
    }
  }
  if (plan.underlay) {
    // A plain learning bridge (STP off, so ports forward at once): the underlay's one L2 segment.
    await run('ip', ['-n', plan.underlay.netns, 'link', 'add', plan.underlay.bridge, 'type', 'bridge']);
    await run('ip', ['-n', plan.underlay.netns, 'link', 'set', plan.underlay.bridge, 'up']);
  }
  for (const link of plan.links) {
    await run('ip', [
      '-n', link.local.netns,
      'link', 'add', link.local.ifname,
      'type', 'veth',
      'peer', 'name', link.peer.ifname, 'netns', link.peer.netns,
    ]);
    await configureEnd(link.local);
    await configureEnd(link.peer);
  }
  if (plan.underlay) {
    for (const port of plan.underlay.ports) {
      await run('ip', ['-n', plan.underlay.netns, 'link', 'set', port, 'master', plan.underlay.bridge]);
    }
  }
  for (const ns of plan.forwarding) {
    const settings = [
      ...(plan.families.includes('IPv4') ? ['net.ipv4.ip_forward=1'] : []),
      ...(plan.families.includes('IPv6') ? ['net.ipv6.conf.all.forwarding=1'] : []),
    ];
    await run('sysctl', ['-q', '-w', ...settings], { netns: ns });
  }
  for (const r of plan.routes) {
    await run('ip', routeArgs(r));
  }
}

/** Deletes a namespace (and with it every link inside); false when it was already gone. */
export async function deleteNetns(netns: string): Promise<boolean> {
  if (!netnsExists(netns)) return false;
  const res = await tryRun('ip', ['netns', 'del', netns]);
  if (res instanceof ToolError) {
    if (!netnsExists(netns)) return false;
    throw res;
  }
  return true;
}
