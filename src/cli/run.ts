import { hostname } from 'node:os';
import { LoadedDatapath, attachInterface, requireRoot, type AttachMode } from '../bpf/datapath.js';
import { BpfDataplane } from '../sync/bpf-dataplane.js';
import { Agent } from '../sync/agent.js';
import { ManifestSource } from '../sources/manifest.js';
import { ConfigError } from '../errors.js';
import { componentLogger, setLogLevel } from '../log.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { isIpv4 } from '../bpf/codec.js';
import { parseOptions } from './options.js';
import { parseDuration } from './duration.js';

export const summary = 'run the node agent: follow Services and program the dataplane';

const HELP = `usage: vipr run --manifests DIR --iface IF [--iface IF ...] [options]

Loads vipr's BPF programs, attaches them to each --iface (TC ingress: DNAT to a backend,
TC egress: reverse NAT of the replies), and keeps the maps in sync with the Services and
EndpointSlices (or legacy Endpoints) in DIR, which is watched for changes.

On SIGTERM the agent exits and leaves programs and pinned maps in place, so traffic keeps
flowing; a new agent takes over without moving a connection. 'vipr cleanup' removes everything.

  --manifests DIR            Kubernetes YAML/JSON files (multi-document, kind: List)
  --iface IF                 interface to attach to (repeat for several)
  --pin-dir DIR              where maps and links are pinned (default ${DEFAULT_PIN_DIR})
  --attach auto|tcx|tc       TCX links (kernel >= 6.6) or clsact filters (default auto)
  --node-name NAME           this node's name, for local endpoints (default: the hostname)
  --node-ip IP               this node's IPv4 address (repeat for several)
  --min-sync-period DUR      coalesce changes: at most one sync per DUR (default 1s)
  --sync-period DUR          full resync at least this often (default 30s)
  --log-level LEVEL          trace|debug|info|warn|error (default info)
`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('run', argv, {
    manifests: { type: 'string' },
    iface: { type: 'string', multiple: true, default: [] },
    'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
    attach: { type: 'string', default: 'auto' },
    'node-name': { type: 'string' },
    'node-ip': { type: 'string', multiple: true, default: [] },
    'min-sync-period': { type: 'string', default: '1s' },
    'sync-period': { type: 'string', default: '30s' },
    'log-level': { type: 'string', default: 'info' },
    mode: { type: 'string', default: 'bpf' },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const level = values['log-level'];
  if (!['trace', 'debug', 'info', 'warn', 'error'].includes(level)) {
    throw new ConfigError(`--log-level ${level}: expected trace, debug, info, warn or error`);
  }
  setLogLevel(level);
  if (values.mode !== 'bpf') {
    throw new ConfigError(`--mode ${values.mode}: this build runs the bpf mode only`);
  }
  if (!values.manifests) throw new ConfigError('vipr run: --manifests DIR is required (the directory of Service/EndpointSlice manifests)');
  if (values.iface.length === 0) throw new ConfigError('vipr run: at least one --iface IF is required (the interfaces carrying client traffic)');
  const attach = values.attach;
  if (attach !== 'auto' && attach !== 'tcx' && attach !== 'tc') throw new ConfigError(`--attach ${attach}: expected auto, tcx or tc`);
  for (const ip of values['node-ip']) if (!isIpv4(ip)) throw new ConfigError(`--node-ip ${ip}: not an IPv4 address`);
  const minSync = parseDuration('min-sync-period', values['min-sync-period']);
  const fullSync = parseDuration('sync-period', values['sync-period']);
  if (fullSync < minSync) throw new ConfigError(`--sync-period must not be shorter than --min-sync-period`);
  requireRoot('vipr run');

  const log = componentLogger('run');
  const pinDir = values['pin-dir'];
  const datapath = LoadedDatapath.load(pinDir);
  const dataplane = new BpfDataplane(datapath.maps, pinDir);
  const agent = new Agent({
    dataplane,
    node: { name: values['node-name'] ?? hostname(), zone: null, ips: values['node-ip'] },
    minSyncPeriodMs: minSync,
    syncPeriodMs: fullSync,
  });
  // State comes back from the pinned maps: the first sync writes only what differs, and the
  // programs are attached (or swapped in) only once the maps hold the desired state.
  dataplane.restore();
  const source = new ManifestSource(values.manifests, {
    onChange: (objects) => agent.updateObjects(objects),
  });
  await source.start();
  agent.start();
  await agent.firstSync;
  for (const iface of values.iface) attachInterface(datapath, iface, attach as AttachMode);
  log.info({ ifaces: values.iface, pinDir, manifests: values.manifests }, 'agent running');

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      log.info({ signal }, 'stopping; programs and pinned maps stay in place');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  source.stop();
  await agent.stop();
  datapath.close();
  return 0;
}
