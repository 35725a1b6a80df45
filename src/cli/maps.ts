import { closeMaps, openPinnedMaps } from '../bpf/datapath.js';
import { dumpMaps } from '../bpf/inspect.js';
import { ConfigError } from '../errors.js';
import { MAPS } from '../bpf/layouts.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { parseOptions } from './options.js';

export const summary = 'dump vipr\'s BPF maps, every entry decoded';

const HELP = `usage: vipr maps [NAME] [--json] [--pin-dir DIR]

NAME is a pinned map name (${Object.values(MAPS).map((m) => m.name).join(', ')})
or its short form (${Object.values(MAPS).map((m) => shortName(m.name)).join(', ')}).
`;

/** `vipr_node_ips_v1` → `node_ips`. */
function shortName(name: string): string {
  return name.replace(/^vipr_/, '').replace(/_v\d+$/, '');
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions('maps', argv, {
    json: { type: 'boolean', default: false },
    'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
    help: { type: 'boolean', short: 'h', default: false },
  }, true);
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const only = positionals[0] ?? null;
  if (only !== null && !Object.values(MAPS).some((m) => m.name === only || m.name.startsWith(`vipr_${only}_`))) {
    throw new ConfigError(`vipr maps: no map named '${only}'; known: ${Object.values(MAPS).map((m) => shortName(m.name)).join(', ')}`);
  }
  const maps = openPinnedMaps(values['pin-dir']);
  try {
    const dump = dumpMaps(maps, only);
    if (values.json) {
      process.stdout.write(`${JSON.stringify(dump, null, 2)}\n`);
      return 0;
    }
    for (const [name, entries] of Object.entries(dump)) {
      process.stdout.write(`${name} (${entries.length} entries)\n`);
      for (const e of entries) process.stdout.write(`  ${JSON.stringify(e.key)} => ${JSON.stringify(e.value)}\n`);
    }
  } finally {
    closeMaps(maps);
  }
  return 0;
}
