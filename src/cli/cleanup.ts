import { cleanupDatapath, requireRoot } from '../bpf/datapath.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { parseOptions } from './options.js';

export const summary = 'remove what vipr installed: programs, links, pinned maps';

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('cleanup', argv, {
    'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
    mode: { type: 'string', default: 'bpf' },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(
      'usage: vipr cleanup [--mode bpf] [--pin-dir DIR]\n\n' +
        'Detaches vipr\'s programs (unpinning its TCX links; clsact filters in this network\n' +
        'namespace) and removes its pinned maps. Tracked connections are forgotten.\n',
    );
    return 0;
  }
  requireRoot('vipr cleanup');
  const removed = cleanupDatapath(values['pin-dir']);
  process.stdout.write(removed.length === 0 ? 'nothing to remove\n' : `removed ${removed.length} objects under ${values['pin-dir']}\n`);
  return 0;
}
