import { requireRoot } from '../bpf/datapath.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { cleanupMode, parseProxyMode } from '../modes/index.js';
import { parseOptions } from './options.js';

export const summary = 'remove what vipr installed: programs, links, pinned maps, or a mode\'s rules';

const HELP = `usage: vipr cleanup [--mode bpf|iptables|nftables|ipvs] [--pin-dir DIR]

bpf (default): detaches vipr's programs (unpinning its TCX links; clsact filters in this network
namespace) and removes its pinned maps. Tracked connections are forgotten.
iptables: kube-proxy's cleanup, in both backends (legacy and nf_tables) and both families
(iptables, ip6tables): the jump rules from the built-in chains, then every KUBE- chain of the nat
and filter tables.
nftables: the tables ip kube-proxy and ip6 kube-proxy.
ipvs: the iptables rules as above, the virtual servers, the KUBE- (and KUBE-6-) ipsets and kube-ipvs0.
Each only if present. Established connections keep their NAT in conntrack.
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('cleanup', argv, {
    'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
    mode: { type: 'string', default: 'bpf' },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const mode = parseProxyMode(values.mode);
  requireRoot('vipr cleanup');
  const removed = await cleanupMode(mode, { pinDir: values['pin-dir'] });
  if (removed.length === 0) process.stdout.write('nothing to remove\n');
  else for (const line of removed) process.stdout.write(`removed ${line}\n`);
  return 0;
}
