import { closeMaps, openPinnedMaps } from '../bpf/datapath.js';
import { readCounters } from '../bpf/inspect.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { parseOptions } from './options.js';

export const summary = 'datapath counters: packets by event and drop reason';

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('stats', argv, {
    json: { type: 'boolean', default: false },
    'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write('usage: vipr stats [--json] [--pin-dir DIR]\n\nCounters summed over CPUs since the maps were created.\n');
    return 0;
  }
  const maps = openPinnedMaps(values['pin-dir']);
  try {
    const counters = readCounters(maps);
    if (values.json) {
      process.stdout.write(`${JSON.stringify(counters, null, 2)}\n`);
      return 0;
    }
    process.stdout.write(`${'counter'.padEnd(20)} ${'packets'.padStart(12)} ${'bytes'.padStart(14)}\n`);
    for (const [name, c] of Object.entries(counters)) {
      process.stdout.write(`${name.padEnd(20)} ${String(c.packets).padStart(12)} ${String(c.bytes).padStart(14)}\n`);
    }
  } finally {
    closeMaps(maps);
  }
  return 0;
}
