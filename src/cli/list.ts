import { SERVICE_CLI_OPTIONS, buildOptionsFromCli } from './service-options.js';
import { hostname } from 'node:os';
import { formatListing, sortListing, type ListedService, type Listing } from '../model/listing.js';
import { buildDesiredState } from '../model/build.js';
import type { DesiredState } from '../model/types.js';
import { loadSnapshot } from '../sources/snapshot.js';
import { bpfFrontends } from '../bpf/reconciler/frontends.js';
import { NODEPORT_VIP, NODEPORT_VIP6, SCOPE_EXTERNAL } from '../bpf/layouts.js';
import { familyOf } from '../model/ip.js';
import { protoName } from '../bpf/inspect.js';
import { ConfigError } from '../errors.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { detectInstalledMode, parseProxyMode, readListing } from '../modes/index.js';
import { parseIptablesBackendChoice } from '../modes/tools.js';
import { parseOptions } from './options.js';

export const summary = 'list services and backends like ipvsadm -Ln (read from the dataplane)';

const HELP = `usage: vipr list [-n] [--json] [--mode MODE] [--pin-dir DIR] [--iptables-backend B]
       vipr list [-n] [--json] (--manifests DIR | --kubeconfig FILE) [--node-name N]

Reads the running dataplane and prints it as ipvsadm -Ln does:
  Prot LocalAddress:Port Scheduler Flags
    -> RemoteAddress:Port Forward Weight ActiveConn InActConn
In bpf mode connection counts come from vipr's conntrack (ActiveConn: TCP flows not closing).
In the iptables and nftables modes the table is read back from the installed rules
(iptables-save, nft list); NodePorts show as 0.0.0.0:PORT (every local address).

With --manifests or --kubeconfig it lists what the BPF dataplane would program for those
Services on this node instead, without reading any dataplane.

  -n, --numeric            addresses and ports only (without it, each service also shows its name)
  --json                   the same content as JSON
  --mode MODE              bpf, iptables, nftables or ipvs (default: bpf when maps are pinned,
                           else the mode whose rules are installed)
  --pin-dir DIR            where the maps are pinned (default ${DEFAULT_PIN_DIR})
  --iptables-backend B     auto|legacy|nft (iptables mode; default auto)
`;

/** What the BPF dataplane would program for `state`, as a listing (no connection counts). */
function desiredListing(state: DesiredState): Listing {
  const services: ListedService[] = [];
  for (const f of bpfFrontends(state, 'random').frontends) {
    if (f.key.scope !== SCOPE_EXTERNAL) continue;
    const listed: ListedService = {
      protocol: protoName(f.key.proto),
      address: f.key.vip,
      port: f.key.port,
      scheduler: f.scheduler,
      persistentSeconds: f.affinityTimeout,
      name: f.service,
      backends: f.backends.map((b) => ({ address: b.addr, port: b.port, forward: 'Masq', weight: 1, activeConn: 0, inactConn: 0, flags: [] })),
    };
    // A NodePort answers on every node address of its family.
    const family = f.key.vip === NODEPORT_VIP ? 'IPv4' : f.key.vip === NODEPORT_VIP6 ? 'IPv6' : null;
    const nodeAddrs = family === null ? [] : state.node.ips.filter((ip) => familyOf(ip) === family);
    if (nodeAddrs.length > 0) for (const ip of nodeAddrs) services.push({ ...listed, address: ip });
    else services.push(listed);
  }
  return { source: 'desired state (not read from a dataplane)', services };
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('list', argv, {
    numeric: { type: 'boolean', short: 'n', default: false },
    json: { type: 'boolean', default: false },
    mode: { type: 'string' },
    'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
    'iptables-backend': { type: 'string', default: 'auto' },
    manifests: { type: 'string' },
    kubeconfig: { type: 'string' },
    'node-name': { type: 'string', default: hostname() },
    ...SERVICE_CLI_OPTIONS,
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.manifests !== undefined || values.kubeconfig !== undefined) {
    const snap = await loadSnapshot({ manifests: values.manifests, kubeconfig: values.kubeconfig, nodeName: values['node-name'] });
    for (const p of snap.problems) process.stderr.write(`vipr list: ${p}\n`);
    const buildOpts = buildOptionsFromCli(values, values.manifests === undefined);
    const state = buildDesiredState(
      snap.objects,
      snap.node ?? { name: values['node-name'], zone: null, ips: [] },
      (message) => process.stderr.write(`vipr list: ${message}\n`),
      buildOpts,
    );
    const listing = sortListing(desiredListing(state));
    process.stdout.write(values.json ? `${JSON.stringify(listing, null, 2)}\n` : formatListing(listing, { numeric: values.numeric }));
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
