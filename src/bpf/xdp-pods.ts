/*
 * XDP straight to this node's pods (`vipr run --xdp-local-backends redirect`). By default XDP
 * rewrites a frame for a local backend and passes it to the stack, which routes it to the pod:
 * an skb, the IP stack, netfilter's hooks and the veth's transmit, about 2 µs a packet here. With
 * the flag, XDP sends it to the pod's veth itself (XDP_REDIRECT), as Katran sends to its reals;
 * this module tells it where each pod is, in vipr_xdp_pods_v1 (IPv4 pods) and vipr_xdp_pods6_v1
 * (IPv6 pods), both struct vipr_xdp_pod.
 *
 * A pod is listed only when the node's own tables say where it is: the longest-prefix route of
 * the main table of its family to its address goes straight (no gateway) out of a veth, and the
 * node has a neighbour entry (the pod's MAC) on that veth. Anything else (a bridge, a tunnel, no
 * neighbour yet) is left to the stack, as without the flag. The tables are read with `ip -j`
 * when the local backends change, when `ip monitor` reports a change that can move a pod (a
 * link, a route, a backend's neighbour entry appearing, going or changing its MAC: not the
 * REACHABLE/STALE/DELAY cycle every entry goes through, which would have the tables read every
 * few seconds per pod; monitorLineMatters), debounced, and every REFRESH_MS regardless; a pod
 * that goes leaves within that. What the flag skips for these frames (and the operator accepts
 * with it): the host's routing and netfilter, and any TC program on the pod's veth. What it
 * needs, with native XDP: the pod's side of each veth takes XDP frames (GRO or an XDP program on
 * it); veth drops them otherwise, and counts them nowhere but at the xdp_devmap_xmit tracepoint;
 * and a redirect can fail before the veth (the receiving driver's own limits), seen at
 * xdp_redirect_err. The agent counts both per target (XdpDrops, bpf/xdp_drops.bpf.c) and, every
 * DROP_CHECK_MS while pods are listed, a veth whose count grew is taken for one XDP cannot
 * deliver to: its pods go back to the stack (a warning names the pod and the likely fix) until
 * the veth is replaced. A pod that loses frames so costs its clients a SYN retransmission or two.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { run } from '../process/run.js';
import * as libbpf from './libbpf.js';
import { BpfMap } from './map.js';
import { U32 } from './layouts.js';
import { defineStruct } from './codec.js';
import { ConfigError } from '../errors.js';
import { xdpDropsObjectPath } from '../paths.js';
import { componentLogger } from '../log.js';
import { isIpv4 } from './codec.js';
import { canonicalIp, cidrHas, familyOf, parseCidr, type Cidr, type IpFamily } from '../model/ip.js';
import type { MapLike } from './map.js';
import type { XdpPod6KeyT, XdpPodKeyT, XdpPodT } from './layouts.js';
import type { DesiredState } from '../model/types.js';

const log = componentLogger('xdp-pods');

/** The slowest a pod's change reaches XDP when `ip monitor` says nothing of it. */
export const REFRESH_MS = 10_000;
/** How often listed pods' veths are checked for frames XDP could not deliver. */
export const DROP_CHECK_MS = 2_000;
/** Coalesces a burst of `ip monitor` lines into one read of the tables. */
const DEBOUNCE_MS = 250;

const NOT_UNICAST_ROUTE = new Set(['local', 'broadcast', 'multicast', 'anycast', 'unreachable', 'blackhole', 'prohibit', 'throw']);

/**
 * Whether a line of `ip -o monitor link neigh route` can change a local backend's entry: a link
 * line; a route to a prefix or the default one, of either family; a route or neighbour line
 * naming a backend, unless it only restates the MAC its entry already has (`listedMac`). Local,
 * broadcast and multicast routes, and IPv6 link-local ones (fe80::/64 on every link: no pod is
 * reached by a link-local address), never do.
 */
export function monitorLineMatters(line: string, addrs: ReadonlySet<string>, listedMac: (addr: string) => string | null): boolean {
  if (/^\d+: /.test(line)) return true;
  const deleted = line.startsWith('Deleted ');
  const words = (deleted ? line.slice('Deleted '.length) : line).trim().split(/\s+/);
  const first = words[0] ?? '';
  if (first === '' || NOT_UNICAST_ROUTE.has(first) || first.startsWith('fe80:')) return false;
  if (first === 'default' || first.includes('/')) return true;
  if (!addrs.has(first)) return false;
  const lladdr = words[words.indexOf('lladdr') + 1];
  return deleted || !words.includes('lladdr') || lladdr !== listedMac(first);
}

export interface LinkInfo {
  ifindex: number;
  name: string;
  mac: string;
  mtu: number;
  /** rtnetlink's IFLA_INFO_KIND: 'veth', 'bridge', ...; null for a plain device. */
  kind: string | null;
}

export interface RouteInfo {
  /** The route's destination; 'default' is 0.0.0.0/0 or ::/0. */
  cidr: Cidr;
  dev: string;
  gateway: string | null;
}

/** The tables a pod's entry comes from, as `ip -j` prints them. */
export interface NodeTables {
  links: LinkInfo[];
  /** "address dev" → MAC, for entries with a link-layer address that is not FAILED; both families, addresses canonical. */
  neighbours: Map<string, string>;
  /** The main tables of both families. */
  routes: RouteInfo[];
}

export function parseLinks(json: string): LinkInfo[] {
  const rows = JSON.parse(json) as Array<{ ifindex: number; ifname: string; address?: string; mtu: number; linkinfo?: { info_kind?: string } }>;
  return rows.map((r) => ({ ifindex: r.ifindex, name: r.ifname, mac: r.address ?? '', mtu: r.mtu, kind: r.linkinfo?.info_kind ?? null }));
}

export function parseNeighbours(json: string): Map<string, string> {
  const rows = JSON.parse(json) as Array<{ dst: string; dev?: string; lladdr?: string; state?: string[] }>;
  const out = new Map<string, string>();
  for (const r of rows) {
    if (r.dev === undefined || r.lladdr === undefined || (r.state ?? []).some((s) => s === 'FAILED' || s === 'INCOMPLETE')) continue;
    if (familyOf(r.dst) === null) continue;
    out.set(`${canonicalIp(r.dst)} ${r.dev}`, r.lladdr);
  }
  return out;
}

/** `ip -j -4 route` (family IPv4) or `ip -j -6 route` (IPv6): routes of that family with a device. */
export function parseRoutes(json: string, family: IpFamily = 'IPv4'): RouteInfo[] {
  const rows = JSON.parse(json) as Array<{ dst: string; dev?: string; gateway?: string; type?: string }>;
  const out: RouteInfo[] = [];
  for (const r of rows) {
    if (r.dev === undefined || (r.type !== undefined && r.type !== 'unicast')) continue;
    const dst = r.dst === 'default' ? (family === 'IPv4' ? '0.0.0.0/0' : '::/0') : r.dst;
    if (familyOf(dst.split('/')[0] ?? '') !== family) continue;
    out.push({ cidr: parseCidr(dst), dev: r.dev, gateway: r.gateway ?? null });
  }
  return out;
}

/** The main table's longest-prefix route to `addr` (multipath and policy rules aside: CNIs route pods there). */
export function routeTo(routes: readonly RouteInfo[], addr: string): RouteInfo | null {
  let best: RouteInfo | null = null;
  for (const r of routes) if (cidrHas(r.cidr, addr) && (best === null || r.cidr.prefix > best.cidr.prefix)) best = r;
  return best;
}

export interface PodPlan {
  entries: Map<string, XdpPodT>;
  /** Address → why the stack keeps delivering to it. */
  skipped: Map<string, string>;
}

/**
 * Each local backend's entry from the node's tables, or why it has none; `refusing`: veths (by
 * ifindex) XDP could not deliver to, whose pods stay with the stack. Pure.
 */
export function planXdpPods(addrs: Iterable<string>, t: NodeTables, refusing: ReadonlySet<number> = new Set()): PodPlan {
  const entries = new Map<string, XdpPodT>();
  const skipped = new Map<string, string>();
  const byName = new Map(t.links.map((l) => [l.name, l]));
  for (const addr of addrs) {
    const route = routeTo(t.routes, addr);
    const link = route === null ? undefined : byName.get(route.dev);
    if (route === null || link === undefined) {
      skipped.set(addr, 'no route to it in the main table');
    } else if (route.gateway !== null) {
      skipped.set(addr, `routed via ${route.gateway}, not on a link of this node`);
    } else if (link.kind !== 'veth') {
      skipped.set(addr, `behind ${link.name} (${link.kind ?? 'not a veth'}): XDP sends to veths only`);
    } else if (refusing.has(link.ifindex)) {
      skipped.set(addr, `frames XDP sent to ${link.name} did not arrive (the pod's side takes no XDP frames, or the redirect failed)`);
    } else {
      const mac = t.neighbours.get(`${addr} ${link.name}`);
      if (mac === undefined) skipped.set(addr, `no neighbour entry on ${link.name} yet`);
      else entries.set(addr, { ifindex: link.ifindex, len_ok: Math.min(link.mtu, 0xffff), pod_mac: mac, host_mac: link.mac });
    }
  }
  return { entries, skipped };
}

/** This node's backends of both families, from a synced state. */
export function localBackendAddrs(state: DesiredState): Set<string> {
  const out = new Set<string>();
  for (const e of state.services) for (const ep of e.endpoints) if (ep.isLocal) out.add(ep.ip);
  return out;
}

/** The maps the pods are listed in: IPv4's, IPv6's (keys are the address as text either way). */
export interface XdpPodMaps {
  ipv4: MapLike<XdpPodKeyT, XdpPodT>;
  ipv6: MapLike<XdpPod6KeyT, XdpPodT>;
}

type PodMap = MapLike<{ addr: string }, XdpPodT>;

const podMapOf = (maps: XdpPodMaps, addr: string): PodMap => (isIpv4(addr) ? maps.ipv4 : maps.ipv6);

/** Every listed pod, IPv4's then IPv6's. */
export function listedXdpPods(maps: XdpPodMaps): Array<[string, XdpPodT]> {
  return [...maps.ipv4.entries(), ...maps.ipv6.entries()].map(([k, v]) => [k.addr, v]);
}

/** Removes every entry (the agent started without the flag: an earlier agent's would keep XDP sending there). */
export function clearXdpPods(maps: XdpPodMaps): void {
  for (const [addr] of listedXdpPods(maps)) podMapOf(maps, addr).delete({ addr });
}

const DropCount = defineStruct('vipr_xdp_drops_value', [['frames', 'u64']] as const);

/**
 * bpf/xdp_drops.bpf.c, loaded and attached for as long as the agent runs: frames XDP_REDIRECT
 * could not deliver, per target interface, since it started.
 */
export class XdpDrops {
  private constructor(
    private readonly obj: libbpf.ObjectHandle,
    private readonly attached: number[],
    private readonly map: BpfMap<number, { frames: bigint }>,
  ) {}

  static load(pinDir: string, objectPath = xdpDropsObjectPath()): XdpDrops {
    if (!existsSync(objectPath)) throw new ConfigError(`BPF object ${objectPath} is missing: run 'make build'`);
    const obj = libbpf.openObject(objectPath, pinDir);
    const attached: number[] = [];
    try {
      libbpf.loadObject(obj, basename(objectPath));
      const fd = libbpf.mapFd(libbpf.findMap(obj, 'vipr_xdp_drops'), 'vipr_xdp_drops');
      const map = new BpfMap({ name: 'vipr_xdp_drops', key: U32, value: DropCount, perCpu: false }, fd);
      for (const [name, tp] of [['vipr_xdp_devmap_xmit', 'xdp_devmap_xmit'], ['vipr_xdp_redirect_err', 'xdp_redirect_err']] as const) {
        attached.push(libbpf.rawTracepointOpen(libbpf.programFd(libbpf.findProgram(obj, name), name), tp));
      }
      return new XdpDrops(obj, attached, map);
    } catch (err) {
      for (const fd of attached) libbpf.closeFd(fd);
      libbpf.closeObject(obj);
      throw err;
    }
  }

  /** Target ifindex → frames that did not arrive so far. */
  read(): Map<number, number> {
    return new Map(this.map.entries().map(([ifindex, v]) => [ifindex, Number(v.frames)]));
  }

  close(): void {
    for (const fd of this.attached) libbpf.closeFd(fd);
    libbpf.closeObject(this.obj);
  }
}

/** The tables; a family's routes only when a backend is of it (a node without IPv6 cannot list IPv6 routes). */
async function readTables(families: ReadonlySet<IpFamily>): Promise<NodeTables> {
  const ip = async (args: string[]): Promise<string> => (await run('ip', ['-j', ...args], { timeoutMs: 10_000 })).stdout;
  const routes = (family: IpFamily): Promise<string> =>
    families.has(family) ? ip([family === 'IPv4' ? '-4' : '-6', 'route', 'show', 'table', 'main']) : Promise.resolve('[]');
  const [links, neighbours, routes4, routes6] = await Promise.all([ip(['-d', 'link', 'show']), ip(['neigh', 'show']), routes('IPv4'), routes('IPv6')]);
  return { links: parseLinks(links), neighbours: parseNeighbours(neighbours), routes: [...parseRoutes(routes4, 'IPv4'), ...parseRoutes(routes6, 'IPv6')] };
}

function sameEntry(a: XdpPodT, b: XdpPodT): boolean {
  return a.ifindex === b.ifindex && a.len_ok === b.len_ok && a.pod_mac === b.pod_mac && a.host_mac === b.host_mac;
}

/** Keeps vipr_xdp_pods_v1 and vipr_xdp_pods6_v1 equal to this node's backends' entries (see the top of this file). */
export class XdpPods {
  private addrs = new Set<string>();
  private monitor: ChildProcess | null = null;
  private timer: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private lastSkipped = new Map<string, string>();
  /** Address → pod MAC of the entries written. */
  private listed = new Map<string, string>();
  /** Listed veths (ifindex) → the frames XdpDrops had counted for them when last read. */
  private dropsSeen = new Map<number, number>();
  /** Veths XDP could not deliver to: their pods stay with the stack. */
  private readonly refusing = new Set<number>();
  private dropTimer: NodeJS.Timeout | null = null;

  /** `readDrops`: XdpDrops' counts (null: not watched, as where the tracepoints cannot be attached). */
  constructor(
    private readonly maps: XdpPodMaps,
    private readonly readNodeTables: (families: ReadonlySet<IpFamily>) => Promise<NodeTables> = readTables,
    private readonly readDrops: (() => Map<number, number>) | null = null,
  ) {}

  /** Starts following the node's tables; entries are written once the first backends arrive. */
  start(): void {
    this.timer = setInterval(() => this.schedule(), REFRESH_MS);
    this.timer.unref();
    if (this.readDrops !== null) {
      this.dropTimer = setInterval(() => {
        void this.checkDrops().catch((err: unknown) => log.error({ err }, 'cannot read the frames XDP could not deliver'));
      }, DROP_CHECK_MS);
      this.dropTimer.unref();
    }
    const proc = spawn('ip', ['-o', 'monitor', 'link', 'neigh', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.monitor = proc;
    let buf = '';
    proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      if (lines.some((l) => monitorLineMatters(l, this.addrs, (a) => this.listed.get(a) ?? null))) this.schedule(DEBOUNCE_MS);
    });
    proc.on('exit', (code) => {
      if (this.monitor !== null) log.error({ code }, `'ip monitor' exited: pods' changes reach XDP within ${REFRESH_MS / 1000} s only`);
    });
  }

  /** The local backends of a synced state. */
  setBackends(addrs: ReadonlySet<string>): void {
    if (addrs.size === this.addrs.size && [...addrs].every((a) => this.addrs.has(a))) return;
    this.addrs = new Set(addrs);
    this.schedule();
  }

  private schedule(delayMs = 0): void {
    if (this.debounce !== null) return;
    this.debounce = setTimeout(() => {
      this.debounce = null;
      void this.refresh().catch((err: unknown) => log.error({ err }, 'cannot update vipr_xdp_pods_v1/vipr_xdp_pods6_v1: frames for local pods go through the stack meanwhile'));
    }, delayMs);
  }

  /** Reads the tables and writes what changed; one at a time (a call during one runs after it). */
  async refresh(): Promise<void> {
    if (this.running !== null) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.refreshOnce();
      } while (this.again);
    })().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /**
   * Compares the frames listed veths did not get with the last read: a veth whose count grew is
   * one XDP cannot deliver to (see the top of this file), and its pods leave the map at once.
   * Returns those veths.
   */
  async checkDrops(): Promise<number[]> {
    if (this.readDrops === null) return [];
    const entries = listedXdpPods(this.maps);
    const listedVeths = new Set(entries.map(([, v]) => v.ifindex));
    const drops = this.readDrops();
    const found: number[] = [];
    for (const ifindex of listedVeths) {
      const now = drops.get(ifindex) ?? 0;
      const before = this.dropsSeen.get(ifindex);
      if (before !== undefined && now > before && !this.refusing.has(ifindex)) {
        this.refusing.add(ifindex);
        found.push(ifindex);
        const pods = entries.filter(([, v]) => v.ifindex === ifindex).map(([addr]) => addr);
        log.warn(
          { ifindex, pods, lost: now - before },
          `${now - before} frames XDP sent to the veth of pod ${pods.join(', ')} did not arrive; its frames go through the stack again ` +
            "(most likely its pod side takes no XDP frames: turn GRO on for the pod's eth0, 'ethtool -K eth0 gro on' in the pod, or attach an XDP program there; the CNI's setting)",
        );
      }
      this.dropsSeen.set(ifindex, now);
    }
    for (const ifindex of [...this.dropsSeen.keys()]) if (!listedVeths.has(ifindex)) this.dropsSeen.delete(ifindex);
    if (found.length > 0) await this.refresh();
    return found;
  }

  private async refreshOnce(): Promise<void> {
    const families = new Set([...this.addrs].map((a) => (isIpv4(a) ? 'IPv4' : 'IPv6') as IpFamily));
    const tables = this.addrs.size === 0 ? { links: [], neighbours: new Map<string, string>(), routes: [] } : await this.readNodeTables(families);
    // A veth XDP could not deliver to that is gone (its pod recreated: a new veth, a new ifindex) is forgotten.
    if (this.addrs.size > 0) {
      const present = new Set(tables.links.map((l) => l.ifindex));
      for (const ifindex of [...this.refusing]) if (!present.has(ifindex)) this.refusing.delete(ifindex);
    }
    const plan = planXdpPods(this.addrs, tables, this.refusing);
    let written = 0;
    let removed = 0;
    for (const [addr, old] of listedXdpPods(this.maps)) {
      const next = plan.entries.get(addr);
      if (next === undefined) {
        if (podMapOf(this.maps, addr).delete({ addr })) removed++;
      } else if (sameEntry(old, next)) {
        plan.entries.delete(addr);
      }
    }
    for (const [addr, pod] of plan.entries) {
      const map = podMapOf(this.maps, addr);
      try {
        map.update({ addr }, pod);
        written++;
      } catch (err) {
        // Full (more local pods of the family than VIPR_XDP_POD_ENTRIES) or refused: this pod stays with the stack.
        plan.skipped.set(addr, `not written to ${map.name} (${err instanceof Error ? err.message : String(err)})`);
      }
    }
    for (const [addr, why] of plan.skipped) {
      if (this.lastSkipped.get(addr) !== why) log.info({ addr, why }, 'local backend left to the stack');
    }
    this.lastSkipped = plan.skipped;
    this.listed = new Map(listedXdpPods(this.maps).map(([addr, v]) => [addr, v.pod_mac]));
    if (written > 0 || removed > 0) log.info({ written, removed, leftToStack: plan.skipped.size }, 'vipr_xdp_pods_v1/vipr_xdp_pods6_v1 updated: XDP sends these pods their frames itself');
  }

  /** Stops following; the entries stay (the attached program keeps using them, as every pinned map). */
  stop(): void {
    const proc = this.monitor;
    this.monitor = null;
    proc?.kill();
    if (this.timer !== null) clearInterval(this.timer);
    if (this.dropTimer !== null) clearInterval(this.dropTimer);
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.timer = null;
    this.dropTimer = null;
    this.debounce = null;
  }
}
