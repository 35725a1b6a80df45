/*
 * kube-proxy's IPVS mode, applied for real where the kernel has IPVS: the kube-ipvs0 dummy
 * link holding every service address, the ipsets and the iptables glue (masquerading, NodePort
 * and firewall rules matching those sets), and the virtual servers themselves, changed
 * incrementally against what `ipvsadm -Sn` reports (src/modes/ipvsadm.ts).
 *
 * Both families, as kube-proxy's two IPVS proxiers: IPv6's virtual servers, KUBE-6- ipsets,
 * /128 kube-ipvs0 addresses and ip6tables glue beside IPv4's (where the kernel has IPv6).
 *
 * Many kernels (this project's CI kernel among them) have no IPVS at all: detectIpvs() tells
 * the user so in one line before anything is touched.
 */
import { existsSync } from 'node:fs';
import type { DesiredState } from '../model/types.js';
import type { IpFamily } from '../model/ip.js';
import { diffDesiredState } from '../model/diff.js';
import type { Dataplane, SyncResult } from '../model/dataplane.js';
import { KUBE_IPVS_DUMMY_DEVICE, hostPrefix, ipvsIptablesJumpRules, renderIpvs } from '../render/ipvs.js';
import { resolveOptions, type RenderOptions } from '../render/options.js';
import { DataplaneError, ToolError } from '../errors.js';
import { componentLogger } from '../log.js';
import { ipvsadmChanges, parseIpvsadmSave } from './ipvsadm.js';
import { ensureJumpRules, countBackends } from './iptables.js';
import { programmedFamilies, setSysctl, type IptablesTools } from './tools.js';
import { run } from '../process/run.js';

const log = componentLogger('ipvs');

export const PROC_IP_VS = '/proc/net/ip_vs';

const NO_IPVS_HINT = 'use --mode bpf, iptables or nftables, or a kernel with CONFIG_IP_VS';

/** Why IPVS cannot be used here: the kernel has none, or ipvsadm cannot talk to it. */
export class NoIpvsError extends DataplaneError {
  constructor(
    readonly missing: 'kernel' | 'ipvsadm',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What a tool said: its own complaint, or (not installed) the line naming the package. */
function reasonOf(err: unknown): string {
  if (err instanceof ToolError) return err.notFound ? err.message : err.reason;
  return err instanceof Error ? err.message : String(err);
}

/**
 * Fails with one line (a NoIpvsError) unless IPVS can be used: /proc/net/ip_vs exists (after
 * trying to load the module, as kube-proxy does) and ipvsadm can talk to it.
 */
export async function detectIpvs(procPath = PROC_IP_VS): Promise<void> {
  if (!existsSync(procPath)) {
    let loadError: string | null = null;
    try {
      await run('modprobe', ['ip_vs'], { timeoutMs: 20_000 });
    } catch (err) {
      loadError = reasonOf(err);
    }
    if (!existsSync(procPath)) {
      const why = loadError === null ? "'modprobe ip_vs' succeeded but it is still missing" : `'modprobe ip_vs' failed: ${loadError}`;
      throw new NoIpvsError('kernel', `--mode ipvs: this kernel has no IPVS (${procPath} missing, ${why}); ${NO_IPVS_HINT}`);
    }
  }
  try {
    await run('ipvsadm', ['-Ln'], { timeoutMs: 20_000 });
  } catch (err) {
    throw new NoIpvsError('ipvsadm', `--mode ipvs: ipvsadm cannot use IPVS (${reasonOf(err)}); ${NO_IPVS_HINT}`, { cause: err });
  }
}

/** Addresses of both families bound to a link (`ip -o addr show dev LINK`), without prefix length. */
export function parseLinkAddresses(ipOutput: string): string[] {
  const out: string[] = [];
  for (const m of ipOutput.matchAll(/\binet6? ([0-9a-fA-F:.]+)\/\d+/g)) {
    const ip = (m[1] as string).toLowerCase();
    // The kernel's own link-local address of the link is not a Service address.
    if (!ip.startsWith('fe80:')) out.push(ip);
  }
  return out;
}

/** `ip -n NETNS` where `netns` is given (a lab's or a test's namespace), `ip` otherwise. */
function ipArgs(netns: string | undefined, args: readonly string[]): string[] {
  return netns === undefined ? [...args] : ['-n', netns, ...args];
}

/** The addresses bound to `link`, both families, link-local left out. */
export async function linkAddresses(link: string, netns?: string): Promise<string[]> {
  return parseLinkAddresses((await run('ip', ipArgs(netns, ['-o', 'addr', 'show', 'dev', link]))).stdout);
}

/**
 * Adds or deletes host routes' addresses (/32, /128) on `link`, all in one `ip -batch`: one
 * process whatever the count. kube-proxy binds each Service address with a netlink call; one
 * `ip addr add` process per address took over 30 minutes for 10,000 Services in the VM lab.
 * Without -force, ip stops at the first line that fails and exits non-zero, naming the line.
 */
export async function changeLinkAddresses(op: 'add' | 'del', link: string, ips: readonly string[], netns?: string): Promise<void> {
  if (ips.length === 0) return;
  const lines = ips.map((ip) => `addr ${op} ${hostPrefix(ip)} dev ${link}`);
  try {
    await run('ip', ipArgs(netns, ['-batch', '-']), { input: `${lines.join('\n')}\n` });
  } catch (err) {
    // ip names the failing line's number ("Command failed -:N") on a line of its own.
    const n = err instanceof ToolError ? Number(/Command failed -:(\d+)/.exec(err.stderr)?.[1] ?? 0) : 0;
    if (!(err instanceof ToolError) || n < 1 || n > lines.length) throw err;
    throw new ToolError(`ip ${lines[n - 1]} failed: ${err.reason} (line ${n} of ${lines.length} in one ip -batch; the lines before it were applied)`, err, { cause: err });
  }
}

export class IpvsDataplane implements Dataplane {
  readonly mode = 'ipvs';
  private prepared = false;
  private applied: DesiredState | null = null;

  constructor(
    private readonly tools: IptablesTools,
    private readonly render: RenderOptions,
    readonly families: IpFamily[] = programmedFamilies(),
  ) {}

  /** The dummy link, the sysctls IPVS + iptables need, and the jump rules. */
  private async prepare(): Promise<number> {
    const link = await run('ip', ['link', 'show', KUBE_IPVS_DUMMY_DEVICE], { check: false });
    if (link.exitCode !== 0) await run('ip', ['link', 'add', KUBE_IPVS_DUMMY_DEVICE, 'type', 'dummy']);
    // IPVS connections must be tracked for the masquerade rules; expire connections to removed
    // real servers instead of black-holing them.
    await setSysctl('net.ipv4.vs.conntrack', '1');
    await setSysctl('net.ipv4.vs.expire_nodest_conn', '1');
    await setSysctl('net.ipv4.vs.expire_quiescent_template', '1');
    await setSysctl('net.ipv4.ip_forward', '1');
    if (this.families.includes('IPv6')) await setSysctl('net.ipv6.conf.all.forwarding', '1');
    let inserted = 0;
    for (const family of this.families) inserted += await ensureJumpRules(this.tools.forFamily(family), ipvsIptablesJumpRules());
    return inserted;
  }

  async sync(state: DesiredState, full: boolean): Promise<SyncResult> {
    let writes = 0;
    let deletes = 0;
    const previous = this.applied;
    this.applied = null;
    if (full || !this.prepared) {
      this.prepared = false;
      writes += await this.prepare();
      this.prepared = true;
    }
    const renderings = this.families.map((family) => renderIpvs(state, this.render, family));
    for (const rendering of renderings) {
      // Sets before the rules that match them.
      await run('ipset', ['restore', '-exist'], { input: rendering.ipset });
      await this.tools.forFamily(rendering.family).restore(rendering.iptables, { noflush: true });
    }

    const bound = await linkAddresses(KUBE_IPVS_DUMMY_DEVICE);
    const addresses = renderings.flatMap((r) => r.addresses);
    const wanted = new Set(addresses);
    const boundSet = new Set(bound);
    // Bind before the virtual servers appear, unbind after they are gone.
    const toBind = addresses.filter((ip) => !boundSet.has(ip));
    await changeLinkAddresses('add', KUBE_IPVS_DUMMY_DEVICE, toBind);
    writes += toBind.length;
    const nodePortIPs = this.families.flatMap((family) => resolveOptions(this.render, family).nodePortIPs);
    const owned = new Set([...bound, ...addresses, ...nodePortIPs]);
    const current = parseIpvsadmSave((await run('ipvsadm', ['-Sn'])).stdout);
    const desired = renderings.flatMap((r) => parseIpvsadmSave(r.ipvsadm));
    const changes = ipvsadmChanges(current, desired, owned);
    if (changes.length > 0) await run('ipvsadm', ['-R'], { input: `${changes.join('\n')}\n` });
    for (const line of changes) {
      if (/^-[AEae] /.test(line)) writes++;
      else deletes++;
    }
    const toUnbind = bound.filter((ip) => !wanted.has(ip));
    await changeLinkAddresses('del', KUBE_IPVS_DUMMY_DEVICE, toUnbind);
    deletes += toUnbind.length;
    log.debug({ changes: changes.length }, 'ipvs synced');
    this.applied = state;
    const diff = previous === null ? null : diffDesiredState(previous, state);
    return {
      services: state.services.length,
      backends: countBackends(state),
      writes,
      deletes,
      failed: [],
      changed: diff === null ? state.services.map((e) => e.key) : [...diff.added, ...diff.changed, ...diff.removed].sort(),
    };
  }

  async close(): Promise<void> {}
}
