import { closeMaps, openPinnedMaps } from '../bpf/datapath.js';
import { readBpfListing } from '../bpf/inspect.js';
import { formatListing, sortListing } from '../model/listing.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { parseOptions } from './options.js';

export const summary = 'list services and backends like ipvsadm -Ln (read from the dataplane)';

const HELP = `usage: vipr list [-n] [--json] [--pin-dir DIR]

Reads the running dataplane and prints it as ipvsadm -Ln does:
  Prot LocalAddress:Port Scheduler Flags
    -> RemoteAddress:Port Forward Weight ActiveConn InActConn
Connection counts come from vipr's conntrack (ActiveConn: TCP flows not closing).

  -n, --numeric   addresses and ports only (without it, each service also shows its name)
  --json          the same content as JSON
  --pin-dir DIR   where the maps are pinned (default ${DEFAULT_PIN_DIR})
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('list', argv, {
    numeric: { type: 'boolean', short: 'n', default: false },
    json: { type: 'boolean', default: false },
    'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const pinDir = values['pin-dir'];
  const maps = openPinnedMaps(pinDir);
  try {
    const listing = sortListing(readBpfListing(maps, pinDir));
    process.stdout.write(values.json ? `${JSON.stringify(listing, null, 2)}\n` : formatListing(listing, { numeric: values.numeric }));
  } finally {
    closeMaps(maps);
  }
  return 0;
}
