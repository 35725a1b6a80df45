/*
 * One entry point for `vipr render`: the rules a kube-proxy mode would program for a desired
 * state, as text. Each renderer is pure; applying the text is the dataplane's business.
 */
import type { DesiredState } from '../model/types.js';
import { renderIptables } from './iptables.js';
import { renderIpvs } from './ipvs.js';
import { renderNftables } from './nftables.js';
import type { RenderOptions } from './options.js';

export type RenderMode = 'iptables' | 'nftables' | 'ipvs';

export const RENDER_MODES: readonly RenderMode[] = ['iptables', 'nftables', 'ipvs'];

export type { RenderOptions, IpvsScheduler } from './options.js';
export { renderIptables, iptablesJumpRules, type IptablesJumpRule, type IptablesSyncOptions } from './iptables.js';
export { renderNftables } from './nftables.js';
export { renderIpvs, ipvsIptablesJumpRules, type IpvsRendering, type IpvsJumpRule } from './ipvs.js';

export function render(mode: RenderMode, state: DesiredState, opts: RenderOptions): string {
  switch (mode) {
    case 'iptables':
      return renderIptables(state, opts);
    case 'nftables':
      return renderNftables(state, opts);
    case 'ipvs': {
      const ipvs = renderIpvs(state, opts);
      return [
        '# ipvsadm -R',
        ipvs.ipvsadm,
        '# ipset restore',
        ipvs.ipset,
        '# iptables-restore',
        ipvs.iptables,
        '# kube-ipvs0',
        ...ipvs.addresses.map((a) => `${a}/32`),
        '',
      ].join('\n');
    }
  }
}
