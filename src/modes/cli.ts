/*
 * What the commands share for kube-proxy's modes: the kube-proxy flags that shape the rules
 * (--cluster-cidr, --masquerade-all, --node-ip, --nodeport-addresses, --ipvs-scheduler),
 * validated once into RenderOptions, and the start of `vipr run --mode iptables|nftables|ipvs`.
 */
import type { ParseArgsConfig } from 'node:util';
import { ConfigError } from '../errors.js';
import { canonicalIp, familyOf, parseCidr, type IpFamily } from '../model/ip.js';
import type { IpvsScheduler, RenderOptions } from '../render/options.js';
import type { Dataplane } from '../model/dataplane.js';
import { cleanupOtherModes, createFallbackDataplane, type ProxyMode } from './index.js';
import { detectIptablesBackend, parseIptablesBackendChoice, type IptablesBackend } from './tools.js';

const IPVS_SCHEDULERS: readonly IpvsScheduler[] = ['rr', 'wrr', 'lc', 'wlc', 'sh', 'dh', 'sed', 'nq'];

/** parseArgs specs of the rule-shaping flags (`--node-ip` is declared by each command). */
export const RENDER_CLI_OPTIONS = {
  'cluster-cidr': { type: 'string' },
  'masquerade-all': { type: 'boolean', default: false },
  'nodeport-addresses': { type: 'string', multiple: true, default: [] as string[] },
  'ipvs-scheduler': { type: 'string', default: 'rr' },
  'iptables-backend': { type: 'string', default: 'auto' },
} satisfies NonNullable<ParseArgsConfig['options']>;

export const RENDER_CLI_HELP = `  --cluster-cidr CIDR[,CIDR] pod CIDRs, one per family: cluster-IP traffic from outside is masqueraded
  --masquerade-all           masquerade all service traffic
  --node-ip IP               this node's address (repeat, either family; each family's first is primary)
  --nodeport-addresses CIDR  NodePorts only on node addresses in these CIDRs (comma-separated or
                             repeated, either family; a family with none: all its addresses)
  --ipvs-scheduler S         rr|wrr|lc|wlc|sh|dh|sed|nq (ipvs mode; default rr)
`;

export interface RenderCliValues {
  'cluster-cidr'?: string | undefined;
  'masquerade-all'?: boolean | undefined;
  'node-ip'?: string[] | undefined;
  'nodeport-addresses'?: string[] | undefined;
  'ipvs-scheduler'?: string | undefined;
}

function checked<T>(option: string, value: string, parse: (v: string) => T): T {
  try {
    return parse(value);
  } catch (err) {
    throw new ConfigError(`--${option} ${value}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A CIDR list flag in kube-proxy's form (`10.244.0.0/16,fd00:10:244::/56`; repeating the flag
 * adds to the list), each CIDR checked and named in the error when wrong. `onePerFamily`:
 * kube-proxy's --cluster-cidr takes at most one CIDR of each family.
 */
export function parseCidrList(option: string, values: readonly string[], onePerFamily = false): string[] {
  const out: string[] = [];
  const seen = new Map<IpFamily, string>();
  for (const value of values) {
    for (const raw of value.split(',')) {
      const cidr = raw.trim();
      if (cidr === '') throw new ConfigError(`--${option} ${value}: empty CIDR in the list (write 10.244.0.0/16,fd00:10:244::/56)`);
      const { family } = checked(option, cidr, parseCidr);
      const earlier = seen.get(family);
      if (onePerFamily && earlier !== undefined) {
        throw new ConfigError(`--${option} ${value}: two ${family} CIDRs (${earlier}, ${cidr}); give at most one per family`);
      }
      seen.set(family, cidr);
      out.push(cidr);
    }
  }
  return out;
}

/** --node-ip values of either family, canonical (fd00::0001 is fd00::1). */
export function parseNodeIps(values: readonly string[]): string[] {
  return values.map((ip) => {
    if (familyOf(ip.trim()) === null) throw new ConfigError(`--node-ip ${ip}: not an IPv4 or IPv6 address (give one address per flag, e.g. --node-ip 192.168.60.11 --node-ip fd00:192:168:60::11)`);
    return canonicalIp(ip);
  });
}

/** The flags as RenderOptions, each value checked and named in the error when wrong. */
export function renderOptionsFromCli(values: RenderCliValues): RenderOptions {
  const clusterCIDR = values['cluster-cidr'];
  const clusterCIDRs = clusterCIDR === undefined ? [] : parseCidrList('cluster-cidr', [clusterCIDR], true);
  const nodeIPs = parseNodeIps(values['node-ip'] ?? []);
  const nodePortAddresses = parseCidrList('nodeport-addresses', values['nodeport-addresses'] ?? []);
  const scheduler = values['ipvs-scheduler'] ?? 'rr';
  if (!(IPVS_SCHEDULERS as readonly string[]).includes(scheduler)) {
    throw new ConfigError(`--ipvs-scheduler ${scheduler}: expected one of ${IPVS_SCHEDULERS.join(', ')}`);
  }
  return {
    clusterCIDRs,
    masqueradeAll: values['masquerade-all'] ?? false,
    nodeIPs,
    nodePortAddresses,
    ipvsScheduler: scheduler as IpvsScheduler,
  };
}

export interface ProxyModeStartOptions {
  render: RenderOptions;
  /** --iptables-backend as given: auto, legacy or nft. */
  iptablesBackend: string;
  /** The BPF mode's pin dir, cleaned up when another mode starts. */
  pinDir: string;
}

/**
 * What `vipr run --mode iptables|nftables|ipvs` does before its agent loop: checks the system
 * can run the mode (one clear line if not, before anything is touched), chooses the iptables
 * backend from the rules already there, then removes the other modes' objects.
 */
export async function startProxyMode(mode: Exclude<ProxyMode, 'bpf'>, opts: ProxyModeStartOptions): Promise<Dataplane> {
  const choice = parseIptablesBackendChoice(opts.iptablesBackend);
  // Chosen before anything is cleaned: the rules already installed decide it.
  const backend: IptablesBackend | null = mode === 'nftables' ? null : await detectIptablesBackend(choice);
  const dataplane = await createFallbackDataplane(mode, { render: opts.render, iptablesBackend: backend ?? choice });
  await cleanupOtherModes(mode, { pinDir: opts.pinDir, iptablesBackend: backend });
  return dataplane;
}
