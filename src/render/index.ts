/*
 * One entry point for `vipr render`: the rules a kube-proxy mode would program for a desired
 * state, as text, per family as kube-proxy's two proxiers (IPv4, then IPv6) would. Each renderer is pure; applying the text is the dataplane's business.
 */
import type { DesiredState } from '../model/types.js';
import { familyOf, type IpFamily } from '../model/ip.js';
import { renderIptables } from './iptables.js';
import { hostPrefix, renderIpvs } from './ipvs.js';
import { renderNftables } from './nftables.js';
import type { RenderOptions } from './options.js';

export type RenderMode = 'iptables' | 'nftables' | 'ipvs';

export const RENDER_MODES: readonly RenderMode[] = ['iptables', 'nftables', 'ipvs'];

export type { RenderOptions, IpvsScheduler } from './options.js';
export { renderIptables, iptablesJumpRules, type IptablesJumpRule, type IptablesSyncOptions } from './iptables.js';
export { renderNftables } from './nftables.js';
export { renderIpvs, ipvsIptablesJumpRules, ipsetName, hostPrefix, type IpvsRendering, type IpvsJumpRule } from './ipvs.js';

/**
 * The families `vipr render` prints: IPv4 always (an IPv4-only state prints exactly what it
 * always did), IPv6 too when the state has IPv6 ServicePorts or the node an IPv6 address, as
 * kube-proxy then runs its IPv6 proxier beside the IPv4 one.
 */
export function renderedFamilies(state: DesiredState, opts: RenderOptions): IpFamily[] {
  const v6 = state.services.some((e) => e.service.family === 'IPv6') || opts.nodeIPs.some((ip) => familyOf(ip) === 'IPv6');
  return v6 ? ['IPv4', 'IPv6'] : ['IPv4'];
}

/** One family's text in `mode`, with the tool that applies each part named above it. */
function renderFamily(mode: RenderMode, state: DesiredState, opts: RenderOptions, family: IpFamily): string {
  switch (mode) {
    case 'iptables':
      return renderIptables(state, opts, { family });
    case 'nftables':
      return renderNftables(state, opts, family);
    case 'ipvs': {
      const ipvs = renderIpvs(state, opts, family);
      const v6 = family === 'IPv6';
      return [
        '# ipvsadm -R',
        ipvs.ipvsadm,
        '# ipset restore',
        ipvs.ipset,
        v6 ? '# ip6tables-restore' : '# iptables-restore',
        ipvs.iptables,
        '# kube-ipvs0',
        ...ipvs.addresses.map(hostPrefix),
        '',
      ].join('\n');
    }
  }
}

/** What each family's proxier applies in `mode`; labelled per family when there are two. */
const FAMILY_LABELS: Record<RenderMode, Record<IpFamily, string>> = {
  iptables: { IPv4: 'iptables-restore --noflush', IPv6: 'ip6tables-restore --noflush' },
  nftables: { IPv4: 'nft -f (table ip kube-proxy)', IPv6: 'nft -f (table ip6 kube-proxy)' },
  ipvs: { IPv4: 'IPVS, ipsets and iptables', IPv6: 'IPVS, ipsets and ip6tables' },
};

export function render(mode: RenderMode, state: DesiredState, opts: RenderOptions): string {
  const families = renderedFamilies(state, opts);
  if (families.length === 1) return renderFamily(mode, state, opts, 'IPv4');
  return families
    .map((family) => `# ${family}: kube-proxy's ${family} proxier, ${FAMILY_LABELS[mode][family]}\n${renderFamily(mode, state, opts, family)}`)
    .join('\n');
}
