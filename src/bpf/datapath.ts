/*
 * The BPF datapath as one unit: load the object with its maps pinned under the pin dir, attach
 * its programs to interfaces (TCX links where the kernel has them, clsact otherwise), open the
 * pinned maps for the CLI, and remove everything on cleanup.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, writeFileSync, unlinkSync, type Stats } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import * as libbpf from './libbpf.js';
import { BpfMap } from './map.js';
import { CT_ROLES, MAPS, type CtRole, type MapRole } from './layouts.js';
import { CT_SIZE_OF, type CtSizes } from './conntrack.js';
import type { IpFamily } from '../model/ip.js';
import { socketLbRecordPath } from './socket-lb.js';
import { LAYOUT_MIGRATIONS, Migration } from './migrate.js';
import { BpfError, ConfigError } from '../errors.js';
import { runSync } from '../process/run.js';
import { componentLogger } from '../log.js';
import { readJsonFileIfExists, type JsonRecordKind } from '../json-file.js';
import { z } from 'zod';
import { DEFAULT_PIN_DIR, STATE_DIR, serviceNamesPath, tcObjectPath, xdpObjectPath } from '../paths.js';

const log = componentLogger('datapath');

export type DatapathMaps = { [R in MapRole]: BpfMap<ReturnType<(typeof MAPS)[R]['key']['decode']>, ReturnType<(typeof MAPS)[R]['value']['decode']>> };

export const PROG_INGRESS = 'vipr_tc_ingress';
export const PROG_EGRESS = 'vipr_tc_egress';
export const PROG_XDP = 'vipr_xdp_ingress';

/*
 * IPv6 runs in programs of its own that the entry points above tail-call for IPv6 frames (IPv4
 * stays inline in them, see bpf/tc_lb.bpf.c), through a prog array per object, slots as enum
 * vipr_ipv6_prog. A prog array is emptied when its last user reference (fd or pin) goes, and the
 * agent exits while its links stay, so it is pinned like the maps (cleanup removes it as one).
 * It is filled here rather than by libbpf's static `.values` initialisation: libbpf fills a
 * reused pin at load, so the programs still attached would tail-call the new IPv6 programs from
 * then on, before the reconciler has written the new object's maps and the links are swapped.
 * installIpv6Programs puts them in right before the swap instead, on every load (a restart or an
 * upgrade finds the previous object's programs there).
 */
export const IPV6_PROGRAMS = {
  tc: { map: 'vipr_tc_ipv6_progs_v1', slots: [['vipr_tc_ingress6', 0], ['vipr_tc_egress6', 1]] },
  xdp: { map: 'vipr_xdp_ipv6_progs_v1', slots: [['vipr_xdp_ingress6', 0]] },
} as const;

/** Puts an object's IPv6 programs into its pinned prog array; one line on failure. */
function installIpv6Programs(obj: libbpf.ObjectHandle, kind: keyof typeof IPV6_PROGRAMS, pinDir: string): void {
  const { map, slots } = IPV6_PROGRAMS[kind];
  const mapFd = libbpf.mapFd(libbpf.findMap(obj, map), map);
  for (const [program, slot] of slots) {
    const progFd = libbpf.programFd(libbpf.findProgram(obj, program), program);
    const key = Buffer.alloc(4);
    const value = Buffer.alloc(4);
    key.writeUInt32LE(slot);
    value.writeUInt32LE(progFd);
    try {
      libbpf.mapUpdate(mapFd, key, value, 0, `${map}[${slot}] = ${program}`);
    } catch (err) {
      if (!(err instanceof BpfError)) throw err;
      throw new BpfError(err.op, err.errno, err.libbpfMessage, {
        cause: err,
        hint: `IPv6 frames would pass untranslated; if ${join(pinDir, map)} was pinned by another build, run 'vipr cleanup --pin-dir ${pinDir}' (drops tracked connections)`,
      });
    }
  }
}

/** Fails with one clear line unless we run as root (CAP_BPF + CAP_NET_ADMIN in practice). */
export function requireRoot(what: string): void {
  if (libbpf.effectiveUid() !== 0) {
    throw new ConfigError(`${what} needs root (CAP_BPF, CAP_NET_ADMIN): run it with sudo`);
  }
}

function isBpffs(dir: string): boolean {
  const mounts = readFileSync('/proc/self/mounts', 'utf8');
  return mounts.split('\n').some((l) => {
    const [, mnt, type] = l.split(' ');
    return type === 'bpf' && mnt === dir;
  });
}

/** The bpffs mount that holds `pinDir` (normally /sys/fs/bpf). */
function bpffsRootOf(pinDir: string): string {
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'bpf')
    .map((f) => f[1] as string);
  const match = mounts.filter((m) => pinDir === m || pinDir.startsWith(`${m}/`)).sort((a, b) => b.length - a.length);
  return match[0] ?? '';
}

/** Mounts bpffs at /sys/fs/bpf when absent (the agent only; the CLI just reports it). */
export function ensureBpffs(pinDir: string): void {
  if (bpffsRootOf(pinDir) !== '') return;
  const root = '/sys/fs/bpf';
  if (!pinDir.startsWith(`${root}/`)) {
    throw new ConfigError(`--pin-dir ${pinDir} is not on a bpffs mount: use a directory under ${root}`);
  }
  if (!isBpffs(root)) {
    log.info({ root }, 'mounting bpffs');
    try {
      runSync('mount', ['-t', 'bpf', 'bpf', root], { timeoutMs: 10_000 });
    } catch (err) {
      throw new ConfigError(`bpffs is not mounted at ${root} and mounting it failed: run 'mount -t bpf bpf ${root}'`, { cause: err });
    }
  }
}

/* What vipr pins, and so all that cleanup may remove: its maps in any layout, its TCX links. */
const MAP_PIN = /^vipr_[a-z0-9_]+_v\d+$/;
const LINKS_DIR = 'links';
const LINK_PIN = /^(tcx_.+_(ingress|egress)|cgroup_(connect|sendmsg|recvmsg|getpeername)[46])$/;

const ROOT_UID = 0;
const GROUP_OTHER_WRITE = 0o022;
const GROUP_OTHER_ANY = 0o077;
const STICKY = 0o1000;

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8)}`;
}

/**
 * vipr trusts what its pin dir holds: the loader reuses pinned maps by name. bpffs is usually
 * world-writable with the sticky bit (1777), so anyone could make the directory first and plant
 * maps in it. Hence: never the bpffs root itself (shared with every BPF user, and what cleanup
 * would then touch), only a directory owned by root that no one else may write to, under
 * ancestors no one else may rename; `create` makes it root-owned 0700. A root-owned directory
 * others may only read (what vipr made before 0700) is tightened to 0700. Throws ConfigError.
 */
export function preparePinDir(pinDir: string, opts: { create: boolean }): void {
  const dir = resolve(pinDir);
  const root = bpffsRootOf(dir);
  if (root === '') {
    throw new ConfigError(`--pin-dir ${dir} is not on a bpffs mount: use a directory under /sys/fs/bpf such as ${DEFAULT_PIN_DIR}`);
  }
  if (dir === root) {
    throw new ConfigError(
      `--pin-dir ${dir} is the root of the BPF filesystem, shared with every other BPF user: give vipr a directory of its own such as ${DEFAULT_PIN_DIR}`,
    );
  }
  for (let up = dirname(dir); up !== root && up.startsWith(`${root}/`); up = dirname(up)) {
    const st = lstatOrNull(up);
    if (st === null) continue;
    if (!st.isDirectory() || st.uid !== ROOT_UID || ((st.mode & GROUP_OTHER_WRITE) !== 0 && (st.mode & STICKY) === 0)) {
      throw new ConfigError(
        `--pin-dir ${dir}: ${up} is not a directory only root may change (uid ${st.uid}, mode ${octal(st.mode)}): use a pin dir directly under ${root} such as ${DEFAULT_PIN_DIR}`,
      );
    }
  }
  const st = lstatOrNull(dir);
  if (st === null) {
    if (!opts.create) return;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    return;
  }
  if (!st.isDirectory()) {
    throw new ConfigError(`--pin-dir ${dir} is not a directory${st.isSymbolicLink() ? ' (a symbolic link)' : ''}: remove it or choose another pin dir`);
  }
  if (st.uid !== ROOT_UID) {
    throw new ConfigError(
      `--pin-dir ${dir} is owned by uid ${st.uid}, not root, so anyone could have planted maps there: remove it ('rm -r ${dir}') or, if you know its contents, 'chown root:root ${dir} && chmod 0700 ${dir}'`,
    );
  }
  if ((st.mode & GROUP_OTHER_WRITE) !== 0) {
    throw new ConfigError(
      `--pin-dir ${dir} has mode ${octal(st.mode)}, so others may write there: remove it ('rm -r ${dir}') or, if you know its contents, 'chmod 0700 ${dir}'`,
    );
  }
  if (opts.create && (st.mode & GROUP_OTHER_ANY) !== 0) {
    chmodSync(dir, 0o700);
    log.info({ pinDir: dir, was: octal(st.mode) }, 'pin dir tightened to mode 0700');
  }
}

/**
 * Sizes the conntrack maps of an opened object. A map pinned already has the size asked for
 * (Migration.plan moved one of another size aside, to be copied into the new one) or, when none
 * was asked, keeps its size (openObject adopted it: libbpf would refuse the pin otherwise).
 */
/** The size asked for a conntrack role: one CtSizes for both families, or each family's own. */
function ctSizeOf(sizes: CtSizes | Record<IpFamily, CtSizes> | undefined, role: CtRole): number | undefined {
  if (sizes === undefined) return undefined;
  const family: IpFamily = role.endsWith('6') ? 'IPv6' : 'IPv4';
  const s = 'IPv4' in sizes ? sizes[family] : sizes;
  return s[CT_SIZE_OF[role]];
}

function sizeConntrack(obj: libbpf.ObjectHandle, pinDir: string, sizes: CtSizes | Record<IpFamily, CtSizes> | undefined, names: Record<MapRole, string>): Record<CtRole, number> {
  const out = {} as Record<CtRole, number>;
  for (const role of CT_ROLES) {
    const name = names[role];
    const map = libbpf.findMap(obj, name);
    const want = name === MAPS[role].name ? ctSizeOf(sizes, role) : undefined;
    if (want !== undefined && libbpf.pinnedMaxEntries(join(pinDir, name)) === null) libbpf.mapSetMaxEntries(map, want, name);
    out[role] = libbpf.mapMaxEntries(map);
  }
  return out;
}

/**
 * The pinned name each role has in the object: the current one, or, in an object of the previous
 * layout (a test build, see LAYOUT_MIGRATIONS), the map of that layout feeding the role.
 */
function mapNamesOf(objectPath: string): { names: Record<MapRole, string>; layout: 'current' | 'previous' } {
  const declared = new Set(libbpf.declaredMaps(objectPath).map((m) => m.name));
  const names = {} as Record<MapRole, string>;
  let layout: 'current' | 'previous' = 'current';
  for (const role of Object.keys(MAPS) as MapRole[]) {
    const previous = LAYOUT_MIGRATIONS.find((m) => m.roles.includes(role) && declared.has(m.from));
    if (!declared.has(MAPS[role].name) && previous !== undefined) {
      names[role] = previous.from;
      layout = 'previous';
    } else {
      names[role] = MAPS[role].name;
    }
  }
  return { names, layout };
}

/** A loaded datapath object: programs ready to attach, maps pinned. */
export class LoadedDatapath {
  private constructor(
    private readonly obj: libbpf.ObjectHandle,
    readonly pinDir: string,
    readonly maps: DatapathMaps,
    readonly programs: { ingress: number; egress: number },
    /** max_entries of each conntrack map as loaded (a pinned map keeps its size). */
    readonly ctMaxEntries: Record<CtRole, number>,
    /**
     * Pinned state of another layout or size being carried into this object's maps: call
     * `refresh()` right before the programs are swapped in and `finish()` right after
     * (src/bpf/migrate.ts). Null when nothing needed migrating.
     */
    readonly migration: Migration | null,
    /** 'previous': a test build of the previous map layout (no conntrack GC for it). */
    readonly layout: 'current' | 'previous',
  ) {}

  /**
   * `ctSizes`: conntrack map sizes, for both families or each its own (default: the compiled-in
   * sizes); a pinned map of another size is migrated into one of this size.
   */
  static load(pinDir: string, objectPath = tcObjectPath(), opts: { ctSizes?: CtSizes | Record<IpFamily, CtSizes> } = {}): LoadedDatapath {
    requireRoot('loading the BPF datapath');
    if (!existsSync(objectPath)) {
      throw new ConfigError(`BPF object ${objectPath} is missing: run 'make build'`);
    }
    ensureBpffs(pinDir);
    preparePinDir(pinDir, { create: true });
    const { names, layout } = mapNamesOf(objectPath);
    const ctNames = new Set(CT_ROLES.map((r) => MAPS[r].name));
    const asked = new Map<string, number>();
    for (const role of CT_ROLES) {
      const want = ctSizeOf(opts.ctSizes, role);
      if (want !== undefined) asked.set(MAPS[role].name, want);
    }
    // Pins of another layout or size: planned (resized maps' pins moved aside) before libbpf
    // opens the object, so it creates the new maps instead of adopting or refusing the old.
    const migration = Migration.plan(pinDir, objectPath, { sizes: asked, adopt: ctNames });
    let obj: libbpf.ObjectHandle;
    try {
      obj = libbpf.openObject(objectPath, pinDir);
    } catch (err) {
      migration?.abort();
      throw err;
    }
    try {
      const ctMaxEntries = sizeConntrack(obj, pinDir, opts.ctSizes, names);
      try {
        libbpf.loadObject(obj, basename(objectPath));
      } catch (err) {
        if (err instanceof BpfError && /reuse pinned map/.test(err.libbpfMessage ?? '')) {
          throw new BpfError(err.op, err.errno, err.libbpfMessage, {
            cause: err,
            hint: `maps pinned in ${pinDir} have another layout; run 'vipr cleanup --pin-dir ${pinDir}' (drops tracked connections)`,
          });
        }
        if (err instanceof BpfError && err.errno === 1) {
          throw new BpfError(err.op, err.errno, err.libbpfMessage, { cause: err, hint: 'loading BPF programs needs CAP_BPF and CAP_NET_ADMIN (run as root)' });
        }
        throw err;
      }
      const maps = {} as Record<MapRole, BpfMap<unknown, unknown>>;
      for (const [role, spec] of Object.entries(MAPS) as Array<[MapRole, (typeof MAPS)[MapRole]]>) {
        const name = names[role];
        const fd = libbpf.mapFd(libbpf.findMap(obj, name), name);
        maps[role] = new BpfMap({ ...spec, name } as never, fd);
      }
      const programs = {
        ingress: libbpf.programFd(libbpf.findProgram(obj, PROG_INGRESS), PROG_INGRESS),
        egress: libbpf.programFd(libbpf.findProgram(obj, PROG_EGRESS), PROG_EGRESS),
      };
      // Before anything reads the maps (the reconciler restores its ids from them).
      migration?.copyAll((name) => libbpf.mapFd(libbpf.findMap(obj, name), name));
      log.info({ object: objectPath, pinDir, ...(layout === 'current' ? {} : { layout }) }, 'datapath loaded');
      return new LoadedDatapath(obj, pinDir, maps as unknown as DatapathMaps, programs, ctMaxEntries, migration, layout);
    } catch (err) {
      migration?.abort();
      libbpf.closeObject(obj);
      throw err;
    }
  }

  private xdp: { obj: libbpf.ObjectHandle; fd: number } | null = null;
  /**
   * Puts the IPv6 programs into the pinned prog arrays (see IPV6_PROGRAMS): this object's TC ones,
   * and the XDP one once xdpProgram loaded it (which puts it in itself). attachInterface does it
   * before it swaps an interface's links, tests before they run the programs. Putting the same
   * programs in again changes nothing.
   */
  installIpv6Programs(): void {
    installIpv6Programs(this.obj, 'tc', this.pinDir);
    if (this.xdp) installIpv6Programs(this.xdp.obj, 'xdp', this.pinDir);
  }

  /** The fd of one of this object's IPv6 TC programs (IPV6_PROGRAMS.tc's names). */
  ipv6ProgramFd(name: (typeof IPV6_PROGRAMS.tc.slots)[number][0]): number {
    return libbpf.programFd(libbpf.findProgram(this.obj, name), name);
  }

  /**
   * The XDP program (its own object, sharing the pinned maps), loaded on first use with its IPv6
   * program put into vipr_xdp_ipv6_progs_v1, as attachXdp is about to attach it.
   */
  xdpProgram(objectPath = xdpObjectPath()): number {
    if (this.xdp) return this.xdp.fd;
    if (!existsSync(objectPath)) throw new ConfigError(`BPF object ${objectPath} is missing: run 'make build'`);
    const obj = libbpf.openObject(objectPath, this.pinDir);
    try {
      libbpf.loadObject(obj, basename(objectPath));
      const fd = libbpf.programFd(libbpf.findProgram(obj, PROG_XDP), PROG_XDP);
      installIpv6Programs(obj, 'xdp', this.pinDir);
      this.xdp = { obj, fd };
      return fd;
    } catch (err) {
      libbpf.closeObject(obj);
      throw err;
    }
  }

  /** Closes the objects; pinned maps and attached programs stay, so traffic keeps flowing. */
  close(): void {
    if (this.xdp) libbpf.closeObject(this.xdp.obj);
    libbpf.closeObject(this.obj);
  }
}

/** Opens the pinned maps of a running (or stopped) agent, for the CLI. */
export function openPinnedMaps(pinDir: string): DatapathMaps {
  requireRoot('reading vipr\'s maps');
  if (bpffsRootOf(pinDir) === '') {
    throw new ConfigError(`bpffs is not mounted (no bpf filesystem holds ${pinDir}): mount it with 'mount -t bpf bpf /sys/fs/bpf' and start 'vipr run'`);
  }
  if (!existsSync(join(pinDir, MAPS.services.name))) {
    throw new ConfigError(`nothing is loaded: no vipr maps pinned in ${pinDir}; start the agent with 'vipr run'`);
  }
  const maps = {} as Record<MapRole, BpfMap<unknown, unknown>>;
  for (const [role, spec] of Object.entries(MAPS) as Array<[MapRole, (typeof MAPS)[MapRole]]>) {
    const fd = libbpf.objGet(join(pinDir, spec.name));
    const m = new BpfMap(spec as never, fd);
    m.checkLayout();
    maps[role] = m;
  }
  return maps as unknown as DatapathMaps;
}

export function closeMaps(maps: DatapathMaps): void {
  for (const m of Object.values(maps)) m.close();
}

export type AttachMode = 'auto' | 'tcx' | 'tc';
export type Direction = 'ingress' | 'egress';

export interface Attachment {
  iface: string;
  direction: Direction | 'xdp';
  how: 'tcx' | 'tc' | 'xdp-native' | 'xdp-generic';
}

/* clsact fallback: a fixed handle and priority so re-attaching replaces only our filter. */
const TC_HANDLE = 0x7669; // "vi"
const TC_PRIORITY = 1;

function linkPinPath(pinDir: string, iface: string, dir: Direction): string {
  return join(pinDir, LINKS_DIR, `tcx_${iface}_${dir}`);
}

function clsactRecordPath(pinDir: string): string {
  return join(STATE_DIR, `${basename(pinDir)}.clsact.json`);
}

function writeRecord(pinDir: string, a: Attachment): void {
  const rec = readClsactRecord(pinDir).filter((x) => !(x.iface === a.iface && x.direction === a.direction));
  rec.push(a);
  mkdirSync(STATE_DIR, { recursive: true });
  writeFileSync(clsactRecordPath(pinDir), JSON.stringify(rec));
}

/** What vipr attached outside pinned links (clsact filters, XDP programs), for cleanup to remove. */
const CLSACT_RECORD: JsonRecordKind<Attachment[]> = {
  what: 'attachment record',
  schema: z.array(
    z.object({
      iface: z.string().min(1),
      direction: z.enum(['ingress', 'egress', 'xdp']),
      how: z.enum(['tcx', 'tc', 'xdp-native', 'xdp-generic']),
    }),
  ),
  fix: "delete it, then remove vipr's clsact filters and XDP programs it listed by hand (tc filter del dev IFACE ..., ip link set dev IFACE xdp off)",
};

function readClsactRecord(pinDir: string): Attachment[] {
  return readJsonFileIfExists(clsactRecordPath(pinDir), CLSACT_RECORD) ?? [];
}

/**
 * Attaches the ingress (DNAT) and egress (reverse NAT) programs to `iface`. With TCX the links
 * are pinned: they outlive the agent, and a new agent swaps its programs in atomically with
 * bpf_link_update, so no packet ever sees an interface without vipr.
 */
export function attachInterface(dp: LoadedDatapath, iface: string, mode: AttachMode): Attachment[] {
  const ifindex = libbpf.ifNameToIndex(iface);
  if (ifindex === 0) throw new ConfigError(`--iface ${iface}: no such interface in this network namespace`);
  // The IPv6 programs the entry points tail-call: this object's, before its entry points go in.
  dp.installIpv6Programs();
  const out: Attachment[] = [];
  for (const direction of ['ingress', 'egress'] as const) {
    const progFd = direction === 'ingress' ? dp.programs.ingress : dp.programs.egress;
    const what = `${iface} ${direction}`;
    let how: 'tcx' | 'tc' | null = null;
    if (mode !== 'tc') {
      const pin = linkPinPath(dp.pinDir, iface, direction);
      if (existsSync(pin)) {
        const linkFd = libbpf.objGet(pin);
        try {
          libbpf.linkUpdate(linkFd, progFd, what);
          how = 'tcx';
        } catch (err) {
          // The pinned link is dead (its interface went away and came back): replace it.
          log.warn({ err, iface, direction }, 'pinned TCX link unusable, re-creating it');
          unlinkSync(pin);
        } finally {
          libbpf.closeFd(linkFd);
        }
      }
      if (how === null) {
        try {
          const type = direction === 'ingress' ? libbpf.BPF_TCX_INGRESS : libbpf.BPF_TCX_EGRESS;
          const linkFd = libbpf.linkCreate(progFd, ifindex, type, what);
          mkdirSync(join(dp.pinDir, LINKS_DIR), { recursive: true, mode: 0o700 });
          libbpf.objPin(linkFd, pin);
          libbpf.closeFd(linkFd);
          how = 'tcx';
        } catch (err) {
          if (mode === 'tcx') throw err;
          log.info({ iface, direction, err: (err as Error).message }, 'TCX links unavailable, using clsact');
        }
      }
    }
    if (how === null) {
      const point = direction === 'ingress' ? libbpf.BPF_TC_INGRESS : libbpf.BPF_TC_EGRESS;
      libbpf.tcHookCreate(ifindex, point, what);
      libbpf.tcAttach(ifindex, point, progFd, TC_HANDLE, TC_PRIORITY, what);
      how = 'tc';
      writeRecord(dp.pinDir, { iface, direction, how });
    }
    out.push({ iface, direction, how });
  }
  log.info({ iface, how: out.map((a) => a.how) }, 'attached');
  return out;
}

/** `vipr run --xdp-mode`: which XDP attach mode to use. */
export type XdpMode = 'auto' | 'native' | 'generic';
export const XDP_MODES: readonly XdpMode[] = ['auto', 'native', 'generic'];

/**
 * Attaches the XDP program to `iface` and returns how. `auto`: native (driver) mode where the
 * driver has it, generic (skb) mode otherwise, and generic on veth; where XDP cannot attach at
 * all, TC alone serves the traffic (the TC programs on the same interface handle whatever XDP
 * passes on). `native` / `generic`: that mode or a ConfigError naming the interface and why.
 */
export function attachXdp(dp: LoadedDatapath, iface: string, mode: XdpMode = 'auto'): Attachment['how'] {
  const ifindex = libbpf.ifNameToIndex(iface);
  if (ifindex === 0) throw new ConfigError(`--xdp ${iface}: no such interface in this network namespace`);
  const fd = dp.xdpProgram();
  const modes = [[libbpf.XDP_FLAGS_DRV_MODE, 'xdp-native'], [libbpf.XDP_FLAGS_SKB_MODE, 'xdp-generic']] as const;
  const driver = interfaceDriver(iface);
  // veth's native XDP_TX and XDP_REDIRECT hand frames to the peer's NAPI poll: with no XDP
  // program and GRO off on the peer there is none, and the frames are dropped (a forwarded SYN
  // never arrives). Generic mode sends skbs, which any peer takes. `native` is for labs that
  // give the peers NAPI (ethtool -K PEER gro on), as a NIC's receive side always has.
  const auto = driver === 'veth' ? modes.slice(1) : modes;
  const tried = mode === 'native' ? modes.slice(0, 1) : mode === 'generic' ? modes.slice(1) : auto;
  if (mode === 'auto' && driver === 'veth') log.info({ iface }, 'veth: using generic XDP (native XDP_TX on veth needs NAPI on the peer)');
  // Native and generic programs exclude each other: drop ours in the mode we are not using.
  const prev = readClsactRecord(dp.pinDir).find((a) => a.iface === iface && a.direction === 'xdp');
  let lastError: unknown = null;
  for (const [flags, how] of tried) {
    if (prev && prev.how !== how) {
      libbpf.xdpDetach(ifindex, prev.how === 'xdp-native' ? libbpf.XDP_FLAGS_DRV_MODE : libbpf.XDP_FLAGS_SKB_MODE, iface);
    }
    try {
      libbpf.xdpAttach(ifindex, fd, flags, `${iface} ${how}`);
      writeRecord(dp.pinDir, { iface, direction: 'xdp', how });
      log.info({ iface, how }, 'XDP attached');
      return how;
    } catch (err) {
      lastError = err;
      log.info({ iface, how, err: (err as Error).message }, 'XDP mode unavailable');
    }
  }
  if (mode !== 'auto') {
    throw new ConfigError(
      `--xdp-mode ${mode}: XDP cannot attach to ${iface} in ${mode} mode (${(lastError as Error).message}); use --xdp-mode auto`,
      { cause: lastError },
    );
  }
  log.warn({ iface }, 'XDP cannot attach here; TC alone handles this interface');
  return 'tc';
}

/** Unpins the TCX links of an interface that is gone (the kernel already detached them). */
export function forgetInterface(pinDir: string, iface: string): void {
  for (const dir of ['ingress', 'egress'] as const) rmSync(linkPinPath(pinDir, iface, dir), { force: true });
}

/** The interface's driver as `ethtool -i` reports it, or null. */
function interfaceDriver(iface: string): string | null {
  try {
    const out = runSync('ethtool', ['-i', iface], { timeoutMs: 10_000 }).stdout;
    return /^driver: (\S+)/m.exec(out)?.[1] ?? null;
  } catch {
    return null;
  }
}

/**
 * Removes what vipr made: clsact filters and XDP programs it recorded (in this network namespace),
 * its state files, and under the pin dir only its own pins: maps named `vipr_<what>_v<layout>`
 * and TCX links in links/ (unpinning a link detaches it, since the pin holds the last reference).
 * Anything else in the pin dir is left alone, and so is the directory then. Returns what it removed.
 */
export function cleanupDatapath(pinDir: string): string[] {
  preparePinDir(pinDir, { create: false });
  const dir = resolve(pinDir);
  const removed: string[] = [];
  for (const a of readClsactRecord(dir)) {
    const ifindex = libbpf.ifNameToIndex(a.iface);
    if (a.direction === 'xdp') {
      const flags = a.how === 'xdp-native' ? libbpf.XDP_FLAGS_DRV_MODE : libbpf.XDP_FLAGS_SKB_MODE;
      if (ifindex !== 0 && libbpf.xdpDetach(ifindex, flags, a.iface)) removed.push(`XDP program on ${a.iface}`);
      continue;
    }
    const point = a.direction === 'ingress' ? libbpf.BPF_TC_INGRESS : libbpf.BPF_TC_EGRESS;
    if (ifindex !== 0 && libbpf.tcDetach(ifindex, point, TC_HANDLE, TC_PRIORITY, `${a.iface} ${a.direction}`)) {
      removed.push(`clsact filter ${a.iface} ${a.direction}`);
    }
  }
  rmSync(clsactRecordPath(dir), { force: true });
  rmSync(serviceNamesPath(dir), { force: true });
  rmSync(socketLbRecordPath(dir), { force: true });
  if (lstatOrNull(dir) === null) return removed;
  const removePins = (where: string, pattern: RegExp): void => {
    for (const f of readdirSync(where)) {
      const p = join(where, f);
      if (!pattern.test(f) || lstatSync(p).isDirectory()) continue;
      unlinkSync(p);
      removed.push(p);
    }
  };
  removePins(dir, MAP_PIN);
  const links = join(dir, LINKS_DIR);
  if (lstatOrNull(links)?.isDirectory()) {
    removePins(links, LINK_PIN);
    if (readdirSync(links).length === 0) rmdirSync(links);
  }
  const left = readdirSync(dir);
  if (left.length === 0) rmdirSync(dir);
  else log.warn({ pinDir: dir, left }, 'pin dir kept: it holds objects vipr did not make');
  return removed;
}
