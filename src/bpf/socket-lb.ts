/*
 * Socket-level load balancing: the cgroup v2 socket programs (bpf/sock_lb.bpf.c, the IPv4 and the
 * IPv6 hooks) loaded beside the TC object, sharing its pinned maps, and attached to one cgroup with
 * BPF links pinned under the pin dir. A new agent swaps its programs into the pinned links with bpf_link_update, so no
 * connect() ever runs without vipr in between; `--socket-lb=off` (and `vipr cleanup`) unpin them.
 *
 * Also the UDP socket destroyer (bpf/sock_destroy.bpf.c, kernel >= 6.5): an iterator the agent runs
 * after each sync, which destroys connected UDP sockets whose backend is gone.
 *
 * Invariant: vipr attaches only to the cgroup it is given (--cgroup-root), or, with no option, to
 * the cgroup v2 root when the agent runs in the machine's own network namespace (a real node).
 * An agent in any other network namespace (a lab node) never guesses a cgroup.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readlinkSync, readSync, rmSync, statSync, statfsSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import * as libbpf from './libbpf.js';
import { SockConfig } from './layouts.js';
import { BpfError, ConfigError } from '../errors.js';
import { componentLogger } from '../log.js';
import { packageRoot, STATE_DIR } from '../paths.js';
import { readJsonFileIfExists, type JsonRecordKind } from '../json-file.js';
import { z } from 'zod';
import { cgroup2Mount } from './cgroup2-mount.js';

export { cgroup2Mount };

const log = componentLogger('socket-lb');

/** The socket-LB object (cgroup sock_addr programs). */
export function sockObjectPath(): string {
  return join(packageRoot(), 'bpf', 'sock_lb.bpf.o');
}

/** The UDP socket destroyer (a socket iterator). */
export function sockDestroyObjectPath(): string {
  return join(packageRoot(), 'bpf', 'sock_destroy.bpf.o');
}

/** The hooks, their programs and attach types. */
export const SOCK_HOOKS = [
  { hook: 'connect4', prog: 'vipr_sock_connect4', attachType: libbpf.BPF_CGROUP_INET4_CONNECT },
  { hook: 'sendmsg4', prog: 'vipr_sock_sendmsg4', attachType: libbpf.BPF_CGROUP_UDP4_SENDMSG },
  { hook: 'recvmsg4', prog: 'vipr_sock_recvmsg4', attachType: libbpf.BPF_CGROUP_UDP4_RECVMSG },
  { hook: 'getpeername4', prog: 'vipr_sock_getpeername4', attachType: libbpf.BPF_CGROUP_INET4_GETPEERNAME },
  { hook: 'connect6', prog: 'vipr_sock_connect6', attachType: libbpf.BPF_CGROUP_INET6_CONNECT },
  { hook: 'sendmsg6', prog: 'vipr_sock_sendmsg6', attachType: libbpf.BPF_CGROUP_UDP6_SENDMSG },
  { hook: 'recvmsg6', prog: 'vipr_sock_recvmsg6', attachType: libbpf.BPF_CGROUP_UDP6_RECVMSG },
  { hook: 'getpeername6', prog: 'vipr_sock_getpeername6', attachType: libbpf.BPF_CGROUP_INET6_GETPEERNAME },
] as const;
export type SockHook = (typeof SOCK_HOOKS)[number]['hook'];

const PROG_DESTROY_UDP = 'vipr_sock_destroy_udp';
const CGROUP2_SUPER_MAGIC = 0x63677270;

export function sockLinkPinPath(pinDir: string, hook: SockHook): string {
  return join(pinDir, 'links', `cgroup_${hook}`);
}

/** What `vipr list` shows: written by the agent beside its other records. */
export function socketLbRecordPath(pinDir: string): string {
  return join(STATE_DIR, `${basename(pinDir)}.socket-lb.json`);
}


/** Whether this process shares the network namespace of pid 1 (the machine's, or the host's with hostNetwork). */
export function inInitialNetns(): boolean {
  try {
    return readlinkSync('/proc/self/ns/net') === readlinkSync('/proc/1/ns/net');
  } catch {
    return false;
  }
}

export function isCgroup2Dir(dir: string): boolean {
  try {
    return statSync(dir).isDirectory() && Number(statfsSync(dir).type) === CGROUP2_SUPER_MAGIC;
  } catch {
    return false;
  }
}

export type SocketLbChoice = 'on' | 'off' | 'auto';

export function parseSocketLbChoice(value: string | undefined): SocketLbChoice {
  if (value === undefined) return 'auto';
  if (value === 'on' || value === 'off') return value;
  throw new ConfigError(`--socket-lb ${value}: expected on or off`);
}

/** Socket LB on (and where) or off (and why), as the agent decides and logs it. */
export type SocketLbDecision = { on: true; cgroup: string } | { on: false; reason: string };

/**
 * Decides where socket LB attaches. `on` fails with one line when it cannot be; the default
 * (auto) turns it on where it is safe to and says why not otherwise.
 */
export function decideSocketLb(choice: SocketLbChoice, cgroupRoot: string | undefined): SocketLbDecision {
  if (choice === 'off') return { on: false, reason: '--socket-lb=off' };
  let cgroup = cgroupRoot ?? null;
  if (cgroup === null) {
    const mount = cgroup2Mount();
    if (mount === null) {
      if (choice === 'on') throw new ConfigError('--socket-lb=on: no cgroup v2 hierarchy is mounted; mount one (mount -t cgroup2 none /sys/fs/cgroup) or use --socket-lb=off');
      return { on: false, reason: 'no cgroup v2 hierarchy mounted' };
    }
    if (!inInitialNetns()) {
      // A lab node or a test: the machine's root cgroup holds far more than this node's processes.
      if (choice === 'on') throw new ConfigError(`--socket-lb=on: this agent runs in a network namespace of its own, so the cgroup v2 root ${mount} is not this node's; give --cgroup-root DIR (the cgroup of this node's processes)`);
      return { on: false, reason: `the agent runs in a network namespace of its own: give --cgroup-root for this node's cgroup` };
    }
    cgroup = mount;
  }
  if (!isCgroup2Dir(cgroup)) {
    throw new ConfigError(`--cgroup-root ${cgroup}: not a cgroup v2 directory; give a directory of the cgroup2 mount (${cgroup2Mount() ?? 'none mounted'})`);
  }
  return { on: true, cgroup };
}

export interface SocketLbSettings {
  /** Translate only sockets of the agent's network namespace (Cilium's socketLB.hostNamespaceOnly). */
  hostNsOnly: boolean;
  /** NodePorts also answer on 127.0.0.0/8 (kube-proxy's localhost NodePorts). */
  nodePortLoopback: boolean;
}

export interface SocketLbRecord {
  cgroup: string;
  hostNsOnly: boolean;
}

function openAndLoad(path: string, pinDir: string, prepare: (obj: libbpf.ObjectHandle) => void): libbpf.ObjectHandle {
  if (!existsSync(path)) throw new ConfigError(`BPF object ${path} is missing: run 'make build'`);
  const obj = libbpf.openObject(path, pinDir);
  try {
    prepare(obj);
    libbpf.loadObject(obj, basename(path));
    return obj;
  } catch (err) {
    libbpf.closeObject(obj);
    throw err;
  }
}

/** The loaded socket programs; the maps are the TC object's, pinned by name in `pinDir`. */
export class SocketLb {
  private destroyer: UdpSocketDestroyer | null = null;

  private constructor(
    private readonly obj: libbpf.ObjectHandle,
    readonly pinDir: string,
    readonly settings: SocketLbSettings,
    private readonly progs: ReadonlyMap<SockHook, number>,
  ) {}

  /** Loads the programs; the TC datapath must be loaded first (it creates the pinned maps). */
  static load(pinDir: string, settings: SocketLbSettings, objectPath = sockObjectPath()): SocketLb {
    const config = SockConfig.encode({
      host_netns_cookie: settings.hostNsOnly ? libbpf.netnsCookie() : 0n,
      host_ns_only: settings.hostNsOnly ? 1 : 0,
      nodeport_loopback: settings.nodePortLoopback ? 1 : 0,
    });
    const obj = openAndLoad(objectPath, pinDir, (o) => libbpf.mapSetInitialValue(libbpf.findMap(o, '.rodata'), config, 'sock_lb .rodata'));
    const progs = new Map<SockHook, number>();
    try {
      for (const h of SOCK_HOOKS) progs.set(h.hook, libbpf.programFd(libbpf.findProgram(obj, h.prog), h.prog));
    } catch (err) {
      libbpf.closeObject(obj);
      throw err;
    }
    const lb = new SocketLb(obj, pinDir, settings, progs);
    lb.loadDestroyer();
    return lb;
  }

  private loadDestroyer(): void {
    try {
      this.destroyer = UdpSocketDestroyer.load(this.pinDir);
    } catch (err) {
      // Socket LB works without it; connected UDP sockets then keep a removed backend until closed.
      log.warn({ err: (err as Error).message }, 'UDP socket destroyer unavailable (needs kernel >= 6.5, bpf_sock_destroy): connected UDP sockets keep a removed backend');
    }
  }

  /** Whether connected UDP sockets to removed backends are destroyed. */
  get destroysStaleUdp(): boolean {
    return this.destroyer !== null;
  }

  /**
   * Attaches every hook to `cgroup` through links pinned in the pin dir: a pinned link on the same
   * cgroup gets the new program (bpf_link_update, atomic); one on another cgroup, or whose cgroup
   * is gone, is replaced.
   */
  attach(cgroup: string): void {
    if (!isCgroup2Dir(cgroup)) throw new ConfigError(`--cgroup-root ${cgroup}: not a cgroup v2 directory`);
    const cgroupId = statSync(cgroup, { bigint: true }).ino;
    mkdirSync(join(this.pinDir, 'links'), { recursive: true });
    const how: string[] = [];
    for (const h of SOCK_HOOKS) {
      const progFd = this.progs.get(h.hook) as number;
      const pin = sockLinkPinPath(this.pinDir, h.hook);
      const what = `${h.hook} on ${cgroup}`;
      if (existsSync(pin) && this.updatePinned(pin, progFd, cgroupId, h.attachType, what)) {
        how.push(`${h.hook}: updated`);
        continue;
      }
      const cgFd = openSync(cgroup, 'r');
      try {
        const linkFd = libbpf.linkCreate(progFd, cgFd, h.attachType, what);
        try {
          libbpf.objPin(linkFd, pin);
        } finally {
          libbpf.closeFd(linkFd);
        }
      } finally {
        closeSync(cgFd);
      }
      how.push(`${h.hook}: created`);
    }
    mkdirSync(STATE_DIR, { recursive: true });
    const record: SocketLbRecord = { cgroup, hostNsOnly: this.settings.hostNsOnly };
    writeFileSync(socketLbRecordPath(this.pinDir), JSON.stringify(record));
    log.info({ cgroup, hostNsOnly: this.settings.hostNsOnly, links: how }, 'socket LB attached');
  }

  /** Swaps the program of a pinned link on this cgroup; false (pin removed) when it is not one. */
  private updatePinned(pin: string, progFd: number, cgroupId: bigint, attachType: number, what: string): boolean {
    const linkFd = libbpf.objGet(pin);
    try {
      const info = libbpf.linkInfo(linkFd, what);
      if (info.type === libbpf.BPF_LINK_TYPE_CGROUP && info.cgroupId === cgroupId && info.attachType === attachType) {
        libbpf.linkUpdate(linkFd, progFd, what);
        return true;
      }
      log.info({ pin, cgroupId: String(info.cgroupId) }, 'pinned socket link is on another cgroup (or its cgroup is gone): replacing it');
    } catch (err) {
      if (!(err instanceof BpfError)) throw err;
      log.warn({ err, pin }, 'pinned socket link unusable: replacing it');
    } finally {
      libbpf.closeFd(linkFd);
    }
    rmSync(pin, { force: true });
    return false;
  }

  /**
   * Runs the UDP socket destroyer over the sockets of this network namespace: connected UDP
   * sockets whose backend is gone fail their next call and reconnect. No-op without it.
   */
  destroyStaleUdp(): void {
    this.destroyer?.run();
  }

  /** Closes the objects; the pinned links keep the programs attached. */
  close(): void {
    this.destroyer?.close();
    this.destroyer = null;
    libbpf.closeObject(this.obj);
  }
}

/**
 * The UDP socket destroyer: an iterator over the UDP sockets of the network namespace of the
 * process that runs it. Connected sockets translated by socket LB whose backend id no longer maps
 * to the address they are connected to (vipr_sock_rev_v1 vs vipr_backends_v1; IPv6:
 * vipr_sock_rev6_v1 vs vipr_backends6_v1; an AF_INET6 socket connected to ::ffff:a.b.c.d as IPv4)
 * are destroyed.
 */
export class UdpSocketDestroyer {
  private constructor(
    private readonly obj: libbpf.ObjectHandle,
    private readonly linkFd: number,
  ) {}

  static load(pinDir: string, objectPath = sockDestroyObjectPath()): UdpSocketDestroyer {
    const obj = openAndLoad(objectPath, pinDir, () => undefined);
    try {
      const fd = libbpf.programFd(libbpf.findProgram(obj, PROG_DESTROY_UDP), PROG_DESTROY_UDP);
      return new UdpSocketDestroyer(obj, libbpf.linkCreate(fd, 0, libbpf.BPF_TRACE_ITER, 'UDP socket iterator'));
    } catch (err) {
      libbpf.closeObject(obj);
      throw err;
    }
  }

  /** One pass over this network namespace's UDP sockets (reading the iterator runs the program). */
  run(): void {
    const fd = libbpf.iterCreate(this.linkFd, 'UDP socket iterator');
    try {
      const buf = Buffer.alloc(4096);
      while (readSync(fd, buf) > 0);
    } finally {
      closeSync(fd);
    }
  }

  close(): void {
    libbpf.closeFd(this.linkFd);
    libbpf.closeObject(this.obj);
  }
}

/** Unpins the socket links (which detaches them) and forgets the record; returns what it removed. */
export function detachSocketLb(pinDir: string): string[] {
  const removed: string[] = [];
  for (const h of SOCK_HOOKS) {
    const pin = sockLinkPinPath(pinDir, h.hook);
    if (existsSync(pin)) {
      rmSync(pin, { force: true });
      removed.push(pin);
    }
  }
  rmSync(socketLbRecordPath(pinDir), { force: true });
  return removed;
}

export type SocketLbStatus = { on: false } | { on: true; cgroup: string | null; hostNsOnly: boolean | null; hooks: SockHook[] };

/** Whether socket LB is attached for this pin dir (its pinned links), and where. */
/** Where the agent attached socket LB (written on attach). */
const SOCKET_LB_RECORD: JsonRecordKind<Partial<SocketLbRecord>> = {
  what: 'socket LB record',
  schema: z.object({ cgroup: z.string().min(1), hostNsOnly: z.boolean() }).partial(),
  fix: 'delete it: the agent writes it again when it attaches socket LB',
};

export function socketLbStatus(pinDir: string): SocketLbStatus {
  const hooks = SOCK_HOOKS.map((h) => h.hook).filter((h) => existsSync(sockLinkPinPath(pinDir, h)));
  if (hooks.length === 0) return { on: false };
  // Links pinned by hand or the record lost: on, somewhere.
  const record = readJsonFileIfExists(socketLbRecordPath(pinDir), SOCKET_LB_RECORD) ?? {};
  return { on: true, cgroup: record.cgroup ?? null, hostNsOnly: record.hostNsOnly ?? null, hooks };
}

/** One line for people: `on (cgroup /sys/fs/cgroup/x, every namespace)` or `off`. */
export function describeSocketLb(s: SocketLbStatus): string {
  if (!s.on) return 'off';
  const scope = s.hostNsOnly === null ? '' : s.hostNsOnly ? ', host namespace only' : ', every namespace';
  return `on (cgroup ${s.cgroup ?? 'unknown'}${scope})`;
}
