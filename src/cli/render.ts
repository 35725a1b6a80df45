import { ConfigError } from '../errors.js';
export const summary = "print the rules kube-proxy's iptables, nftables or IPVS mode would apply";
export async function run(_argv: string[]): Promise<number> {
  throw new ConfigError('vipr render: not built into this version yet');
}
