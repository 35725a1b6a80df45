import { ConfigError } from '../errors.js';
import { loadSnapshot } from '../sources/snapshot.js';
import { buildDesiredState } from '../model/build.js';
import { render, RENDER_MODES, type RenderMode } from '../render/index.js';
import { RENDER_CLI_HELP, RENDER_CLI_OPTIONS, renderOptionsFromCli } from '../modes/cli.js';
import { parseOptions } from './options.js';
import { SERVICE_CLI_HELP, SERVICE_CLI_OPTIONS, buildOptionsFromCli } from './service-options.js';

export const summary = "print the rules kube-proxy's iptables, nftables or IPVS mode would apply";

const HELP = `usage: vipr render --mode iptables|nftables|ipvs (--manifests DIR | --kubeconfig FILE) [options]

Prints what kube-proxy in that mode would program for the Services and EndpointSlices in DIR
(or in the cluster behind --kubeconfig, as this node sees it):
the iptables-restore input (iptables), the nft -f transaction (nftables), or the ipvsadm -R,
ipset restore and iptables-restore inputs plus the kube-ipvs0 addresses (ipvs). Nothing is
applied; 'vipr run --mode MODE' applies it.

  --mode MODE                iptables, nftables or ipvs
  --manifests DIR            Kubernetes YAML/JSON files
  --kubeconfig FILE          a cluster's API server (also $KUBECONFIG)
  --node-name NAME           this node's name, for local endpoints (default: node)
${RENDER_CLI_HELP}${SERVICE_CLI_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('render', argv, {
    mode: { type: 'string' },
    manifests: { type: 'string' },
    kubeconfig: { type: 'string' },
    'node-name': { type: 'string', default: 'node' },
    'node-ip': { type: 'string', multiple: true, default: [] as string[] },
    ...RENDER_CLI_OPTIONS,
    ...SERVICE_CLI_OPTIONS,
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const mode = values.mode;
  if (mode === undefined || !(RENDER_MODES as readonly string[]).includes(mode)) {
    throw new ConfigError(`vipr render: --mode ${mode ?? '(missing)'}: expected iptables, nftables or ipvs`);
  }
  const opts = renderOptionsFromCli(values);
  const buildOpts = buildOptionsFromCli(values, values.manifests === undefined);
  const snap = await loadSnapshot({ manifests: values.manifests, kubeconfig: values.kubeconfig, nodeName: values['node-name'] });
  for (const p of snap.problems) process.stderr.write(`vipr render: ${p}\n`);
  const node = snap.node ?? { name: values['node-name'], zone: null, ips: [] };
  if (opts.nodeIPs.length === 0) opts.nodeIPs = node.ips;
  const state = buildDesiredState(
    snap.objects,
    { ...node, ips: opts.nodeIPs },
    (message) => process.stderr.write(`vipr render: ${message}\n`),
    buildOpts,
  );
  process.stdout.write(render(mode as RenderMode, state, opts));
  return 0;
}
