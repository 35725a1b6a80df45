import { closeMaps, openPinnedMaps } from '../bpf/datapath.js';
import { flushConntrack, readFlows } from '../bpf/conntrack.js';
import { readServiceNames } from '../bpf/inspect.js';
import { ConfigError } from '../errors.js';
import { serviceOfEntryKey } from '../model/types.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { parseOptions } from './options.js';

export const summary = "list or flush vipr's connection tracking (flows through services)";

const HELP = `usage: vipr conntrack [--json] [--pin-dir DIR]
       vipr conntrack flush [--service NAMESPACE/NAME] [--pin-dir DIR]

Lists the flows vipr balanced: client -> frontend => backend (and the SNAT source the flow
leaves the node with, for NodePort traffic to other nodes and hairpin), state and idle time.
Both families: IPv6 endpoints print as [addr]:port.
TCP flows are 'syn' until the client acknowledges the backend's answer (half-open map), then
'established' (a map no flood of new flows can evict), 'closing' after FIN or RST.
'flush' forgets flows (all, or those of one Service): their next packets are balanced again.
`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseOptions('conntrack', argv, {
    json: { type: 'boolean', default: false },
    service: { type: 'string' },
    'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
    help: { type: 'boolean', short: 'h', default: false },
  }, true);
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const [sub, ...extra] = positionals;
  if (extra.length > 0 || (sub !== undefined && sub !== 'flush')) {
    throw new ConfigError(`vipr conntrack: unknown argument '${sub === 'flush' ? extra[0] : sub}'; see 'vipr conntrack --help'`);
  }
  const pinDir = values['pin-dir'];
  const maps = openPinnedMaps(pinDir);
  try {
    const names = readServiceNames(pinDir);
    if (sub === 'flush') {
      let ids: Set<number> | null = null;
      if (values.service !== undefined) {
        const svc = values.service;
        if (!/^[^/]+\/[^/]+$/.test(svc)) throw new ConfigError(`--service ${svc}: expected NAMESPACE/NAME`);
        // Both families' entries of the Service (`ns/name:port`, `ns/name:port IPv6`, ...).
        ids = new Set([...names].filter(([, n]) => serviceOfEntryKey(n) === svc).map(([id]) => id));
        if (ids.size === 0) throw new ConfigError(`--service ${svc}: no such service is programmed; see 'vipr list'`);
      }
      const n = flushConntrack(maps, maps.backendConns, ids);
      // XDP's flow cache would keep rewriting flushed flows until its entries expire: emptied
      // (its entries do not say their service; other flows are cached again on their next packet).
      for (const [k] of maps.xdpFlows.entries()) maps.xdpFlows.delete(k);
      for (const [k] of maps.xdpFlows6.entries()) maps.xdpFlows6.delete(k);
      process.stdout.write(`flushed ${n} flows\n`);
      return 0;
    }
    const flows = readFlows(maps).map((f) => ({
      protocol: f.protocol, client: f.client, frontend: f.frontend, backend: f.backend, snat: f.snat,
      state: f.state, idleSeconds: Math.round(f.idleSeconds), ageSeconds: Math.round(f.ageSeconds),
      service: names.get(f.svcId) ?? null,
    }));
    if (values.json) {
      process.stdout.write(`${JSON.stringify(flows, null, 2)}\n`);
      return 0;
    }
    process.stdout.write(`${flows.length} flows\n`);
    for (const f of flows) {
      process.stdout.write(
        `${f.protocol.padEnd(4)} ${f.client} -> ${f.frontend} => ${f.backend}${f.snat ? ` via ${f.snat}` : ''} ` +
          `${f.state} idle ${f.idleSeconds}s age ${f.ageSeconds}s${f.service ? `  (${f.service})` : ''}\n`,
      );
    }
  } finally {
    closeMaps(maps);
  }
  return 0;
}
