/*
 * The node's options for which Services (and which of their addresses) it programs, shared by
 * `vipr run`, `vipr render` and `vipr list`, which all build the desired state from a source.
 */
import type { ParseArgsConfig } from 'node:util';
import { ConfigError } from '../errors.js';
import type { BuildOptions } from '../model/build.js';
import { IP_FAMILIES, normalizeCidr } from '../model/ip.js';

/** kube-apiserver's default --service-node-port-range. */
export const DEFAULT_NODE_PORT_RANGE = '30000-32767';

export const SERVICE_CLI_OPTIONS = {
  'external-ip-cidrs': { type: 'string', multiple: true, default: [] as string[] },
  'nodeport-range': { type: 'string', default: DEFAULT_NODE_PORT_RANGE },
} satisfies NonNullable<ParseArgsConfig['options']>;

export const SERVICE_CLI_HELP = `  --external-ip-cidrs CIDR   program spec.externalIPs only inside CIDR (repeat or comma-separate;
                             default: any). externalIPs are written by any Service author
                             (CVE-2020-8554): restrict them to the addresses you route here
  --nodeport-range LO-HI     node ports manifests may use (default ${DEFAULT_NODE_PORT_RANGE}); a port
                             outside it costs only that node port. Ports from the API server are
                             trusted, as kube-proxy trusts its allocation
`;

export interface ServiceCliValues {
  'external-ip-cidrs': string[];
  'nodeport-range': string;
}

function parseNodePortRange(text: string): [number, number] {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(text.trim());
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (m === null || lo < 1 || hi > 65535 || lo > hi) {
    throw new ConfigError(`--nodeport-range ${text}: expected LO-HI with 1 <= LO <= HI <= 65535, e.g. ${DEFAULT_NODE_PORT_RANGE}`);
  }
  return [lo, hi];
}

/** The options as BuildOptions, each value checked; `fromApiServer` trusts its node ports. */
export function buildOptionsFromCli(values: ServiceCliValues, fromApiServer: boolean): BuildOptions {
  const externalIPCIDRs = values['external-ip-cidrs']
    .flatMap((v) => v.split(','))
    .map((c) => c.trim())
    .filter((c) => c !== '')
    .map((c) => {
      try {
        // A bare address is its /32 or /128.
        return normalizeCidr(c);
      } catch {
        throw new ConfigError(`--external-ip-cidrs ${c}: not a CIDR; write it as address/prefix, e.g. 203.0.113.0/24 or 2001:db8::/64`);
      }
    });
  const range = parseNodePortRange(values['nodeport-range']);
  // Both families; `vipr run` narrows them to those the node has an IP of.
  return { externalIPCIDRs, nodePortRange: fromApiServer ? null : range, families: IP_FAMILIES };
}
