import { formatListing, sortListing } from '../model/listing.js';
import { ConfigError } from '../errors.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { detectInstalledMode, parseProxyMode, readListing } from '../modes/index.js';
import { parseIptablesBackendChoice } from '../modes/tools.js';
import { parseOptions } from './options.js';

export const summary = 'list services and backends like ipvsadm -Ln (read from the dataplane)';

const HELP = `usage: vipr list [-n] [--json] [--mode MODE] [--pin-dir DIR] [--iptables-backend B]

Reads the running dataplane and prints it as ipvsadm -Ln does:
  Prot LocalAddress:Port Scheduler Flags
    -> RemoteAddress:Port Forward Weight ActiveConn InActConn
In bpf mode connection counts come from vipr's conntrack (ActiveConn: TCP flows not closing).
In the iptables and nftables modes the table is read back from the installed rules
(iptables-save, nft list); NodePorts show as 0.0.0.0:PORT (every local address).

  -n, --numeric            addresses and ports only (without it, each service also shows its name)
  --json                   the same content as JSON
  --mode MODE              bpf, iptables, nftables or ipvs (default: bpf when maps are pinned,
                           else the mode whose rules are installed)
  --pin-dir DIR            where the maps are pinned (default ${DEFAULT_PIN_DIR})
  --iptables-backend B     auto|legacy|nft (iptables mode; default auto)
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('list', argv, {
    numeric: { type: 'boolean', short: 'n', default: false },
    json: { type: 'boolean', default: false },
    mode: { type: 'string' },
    'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
    'iptables-backend': { type: 'string', default: 'auto' },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const pinDir = values['pin-dir'];
  const iptablesBackend = parseIptablesBackendChoice(values['iptables-backend']);
  const mode = values.mode === undefined ? await detectInstalledMode(pinDir) : parseProxyMode(values.mode);
  if (mode === null) {
    throw new ConfigError(`nothing is installed: no vipr maps pinned in ${pinDir} and no iptables, nftables or IPVS rules; start the agent with 'vipr run'`);
  }
  const listing = sortListing(await readListing(mode, { pinDir, iptablesBackend }));
  process.stdout.write(values.json ? `${JSON.stringify(listing, null, 2)}\n` : formatListing(listing, { numeric: values.numeric }));
  return 0;
}
