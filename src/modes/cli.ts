/*
 * What the commands share for kube-proxy's modes: the kube-proxy flags that shape the rules
 * (--cluster-cidr, --masquerade-all, --node-ip, --nodeport-addresses, --ipvs-scheduler),
 * validated once into RenderOptions, and the start of `vipr run --mode iptables|nftables|ipvs`.
 */
import type { ParseArgsConfig } from 'node:util';
import { ConfigError } from '../errors.js';
import { parseIpv4, parseIpv4Cidr } from '../model/ipv4.js';
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

export const RENDER_CLI_HELP = `  --cluster-cidr CIDR        pod CIDR: cluster-IP traffic from outside it is masqueraded
  --masquerade-all           masquerade all service traffic
  --node-ip IP               this node's IPv4 address (repeat for several; the first is primary)
  --nodeport-addresses CIDR  NodePorts only on node addresses in CIDR (repeat; default: all)
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

/** The flags as RenderOptions, each value checked and named in the error when wrong. */
export function renderOptionsFromCli(values: RenderCliValues): RenderOptions {
  const clusterCIDR = values['cluster-cidr'] ?? null;
  if (clusterCIDR !== null) checked('cluster-cidr', clusterCIDR, parseIpv4Cidr);
  const nodeIPs = values['node-ip'] ?? [];
  for (const ip of nodeIPs) checked('node-ip', ip, parseIpv4);
  const nodePortAddresses = values['nodeport-addresses'] ?? [];
  for (const cidr of nodePortAddresses) checked('nodeport-addresses', cidr, parseIpv4Cidr);
  const scheduler = values['ipvs-scheduler'] ?? 'rr';
  if (!(IPVS_SCHEDULERS as readonly string[]).includes(scheduler)) {
    throw new ConfigError(`--ipvs-scheduler ${scheduler}: expected one of ${IPVS_SCHEDULERS.join(', ')}`);
  }
  return {
    clusterCIDR,
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
