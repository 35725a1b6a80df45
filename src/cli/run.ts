import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import type { Server } from 'node:http';
import type { ParseArgsConfig } from 'node:util';
import { LoadedDatapath, XDP_MODES, attachInterface, attachXdp, forgetInterface, requireRoot, type AttachMode, type XdpMode } from '../bpf/datapath.js';
import { SocketLb, decideSocketLb, describeSocketLb, detachSocketLb, parseSocketLbChoice, socketLbStatus, type SocketLbDecision } from '../bpf/socket-lb.js';
import { servedFamilies } from '../model/build.js';
import { resolveOptions } from '../render/options.js';
import { listLinks, parseIfaceSpec, watchLinks } from '../bpf/interfaces.js';
import { XdpDrops, XdpPods, clearXdpPods, localBackendAddrs } from '../bpf/xdp-pods.js';
import { ifNameToIndex } from '../bpf/libbpf.js';
import { ServiceHealthServers } from '../sync/service-health.js';
import { CT_LIMIT_MAX, CT_LIMIT_MIN, ctSizes, ctSizesByFamily, type CtSizes } from '../bpf/conntrack.js';
import { CtGc, CtPressure } from '../bpf/ct-gc.js';
import { CT_ROLES, MAPS } from '../bpf/layouts.js';
import { LB_MODES, type LbMode, type Scheduler } from '../model/types.js';
import { SCHEDULERS } from '../bpf/layouts.js';
import { readCounters } from '../bpf/inspect.js';
import { BpfDataplane } from '../bpf/reconciler/reconciler.js';
import { Agent } from '../sync/agent.js';
import type { Dataplane } from '../model/dataplane.js';
import { AgentMetrics, startMetricsServer } from '../sync/metrics.js';
import { ProxyHealth, startHealthServer } from '../sync/health.js';
import { ManifestSource } from '../sources/manifest.js';
// Imported whatever the source (~0.5 s and ~70 MiB of RSS here): the agent on manifest files
// weighs what a deployed one, following the API, does, so the bench's RSS figures (measured on
// manifests) hold for a cluster. `vipr list` and `render` load the client only for the API.
import { KubeSource } from '../sources/kube.js';
import { loadKubeConfig, type LoadedKubeConfig } from '../sources/kubeconfig.js';
import type { NodeInfo } from '../model/types.js';
import { BpfError, ConfigError } from '../errors.js';
import { componentLogger, setLogLevel, type Logger } from '../log.js';
import { DEFAULT_PIN_DIR } from '../paths.js';
import { parseOptions } from './options.js';
import { parseDuration } from './duration.js';
import { killRunningTools, setDefaultToolTimeout } from '../process/run.js';
import { DEFAULT_MAGLEV_MAX_SIZE, MAGLEV_SIZES } from '../model/maglev.js';
import { SERVICE_CLI_HELP, SERVICE_CLI_OPTIONS, buildOptionsFromCli } from './service-options.js';
import { RENDER_CLI_HELP, RENDER_CLI_OPTIONS, parseNodeIps, renderOptionsFromCli, startProxyMode } from '../modes/cli.js';
import { cleanupOtherModes, parseProxyMode, type ProxyMode } from '../modes/index.js';

/** How often expired conntrack entries are collected. */
const CT_GC_INTERVAL_MS = 5000;

export const summary = 'run the node agent: follow Services and program the dataplane';

const HELP = `usage: vipr run (--manifests DIR | --kubeconfig FILE) --iface IF [--iface IF ...] [options]
       vipr run --mode iptables|nftables|ipvs (--manifests DIR | --kubeconfig FILE) [options]

Loads vipr's BPF programs, attaches them to each --iface (TC ingress: DNAT to a backend,
TC egress: reverse NAT of the replies), and keeps the maps in sync with the cluster's
Services and EndpointSlices: from the API server (--kubeconfig, $KUBECONFIG, or the pod's
service account), or from the Kubernetes manifests in DIR, which is watched for changes.

On SIGTERM the agent exits and leaves programs and pinned maps in place, so traffic keeps
flowing; a new agent takes over without moving a connection. 'vipr cleanup' removes everything.

--mode iptables|nftables|ipvs applies the rules kube-proxy writes in that mode instead, with the
real tools (iptables-restore, nft, ipvsadm + ipset); no --iface. Starting a mode removes what the
other modes left; on SIGTERM the rules stay.

sources (one of):
  --manifests DIR            Kubernetes YAML/JSON files (multi-document, kind: List)
  --kubeconfig FILE          a cluster's API server (also $KUBECONFIG, or in-cluster config)
dataplane:
  --mode MODE                bpf (default), iptables, nftables or ipvs
  --iface IF                 interface to attach to (repeat for several); IF+ matches every
                             interface named IF... now and as they appear (e.g. veth+ for pods)
  --pin-dir DIR              where maps and links are pinned (default ${DEFAULT_PIN_DIR})
  --attach auto|tcx|tc       TCX links (kernel >= 6.6) or clsact filters (default auto)
  --xdp IF                   also attach XDP to IF, an interface facing a NIC (NodePort/LB from
                             outside); native mode where the driver has it, else generic
  --xdp-mode auto|native|generic
                             how --xdp attaches: auto (default: native where the driver has it,
                             generic on veth and elsewhere), or only that mode (an error if IF
                             cannot take it). Native on veth needs NAPI on the peer (GRO on)
  --xdp-local-backends pass|redirect
                             what --xdp does with a frame for a pod of this node: pass (default)
                             it to the stack, rewritten, which routes it to the pod; or redirect
                             it to the pod's veth itself, skipping the host's routing, netfilter
                             and TC programs on that veth. Only where every pod's side of its veth
                             takes XDP frames (GRO or an XDP program on it; veth drops them else)
  --socket-lb on|off         socket-level load balancing for the node's own processes and pods:
                             connect()/sendmsg() to a Service go straight to a backend (cgroup v2
                             hooks). Default on where the kernel and a cgroup v2 mount allow it
  --socket-lb-host-ns-only   socket LB only for the host network namespace; pods keep the
                             Service address on the wire (service meshes), TC balances them
  --cgroup-root DIR          the cgroup v2 directory whose processes socket LB serves (default:
                             the cgroup v2 root, when the agent runs in the host's namespace)
  --scheduler S              random (default, as kube-proxy), rr, sh, maglev or lc; a Service
                             overrides it with the annotation vipr.io/scheduler
  --lb-mode snat|dsr|hybrid  external traffic (NodePort, LoadBalancer, external IPs) to a backend
                             on another node: snat (default, as kube-proxy) through this node
                             both ways; dsr, the reply straight from the backend's node (IPv4;
                             IPv6 stays snat); hybrid, dsr for TCP and snat for UDP. A Service
                             overrides it with the annotation vipr.io/lb-mode
  --ct-max-tcp N             entries of the established-TCP conntrack map (two per flow; the
                             half-open map gets N/4); default: sized to the node's memory
                             (0.25 %, Cilium's dynamic sizing), at least 131072
  --ct-max-udp N             entries of the UDP conntrack map; default: sized likewise, >= 65536.
                             Both apply to each family the node serves (--node-ip); the other
                             family's maps get ${CT_LIMIT_MIN} entries each
  --snat-port-range LO-HI    source ports for flows SNATed to the node (default 61000-65535);
                             each is used before a flow to the same backend is dropped
  --maglev-table-size M      largest Maglev table, one of ${MAGLEV_SIZES.join(', ')}
                             (default ${DEFAULT_MAGLEV_MAX_SIZE}); a Service with more endpoints than M/100
                             gets fewer slots each, one with M or more uses random
  --iptables-backend B       auto|legacy|nft (iptables and ipvs modes; auto as kube-proxy's image)
node:
  --node-name NAME           this node's name, for local endpoints (default: the hostname)
  --node-ip IP               this node's address (repeat, either family; from the Node object with --kubeconfig)
kube-proxy rules (iptables, nftables, ipvs modes):
${RENDER_CLI_HELP.split('\n').filter((l) => !l.includes('--node-ip')).join('\n')}services (every mode):
${SERVICE_CLI_HELP}sync (as kube-proxy):
  --min-sync-period DUR      coalesce changes: at most one sync per DUR (default 1s)
  --sync-period DUR          full resync at least this often (default 30s)
  --tool-timeout DUR         longest run of a rule tool (iptables-restore, nft, ipvsadm, ip) before
                             it is killed and the sync retried (default 5m; a slow node loading
                             10,000 Services may need more)
observability:
  --metrics-bind-address A   Prometheus metrics on http://A/metrics (default 127.0.0.1:10249)
  --healthz-bind-address A   kube-proxy's /healthz and /livez (default 127.0.0.1:10256)
  --log-level LEVEL          trace|debug|info|warn|error (default info)
`;

const OPTIONS = {
  manifests: { type: 'string' },
  kubeconfig: { type: 'string' },
  iface: { type: 'string', multiple: true, default: [] as string[] },
  'pin-dir': { type: 'string', default: DEFAULT_PIN_DIR },
  attach: { type: 'string', default: 'auto' },
  'node-name': { type: 'string' },
  'node-ip': { type: 'string', multiple: true, default: [] as string[] },
  xdp: { type: 'string', multiple: true, default: [] as string[] },
  'xdp-mode': { type: 'string', default: 'auto' },
  'xdp-local-backends': { type: 'string', default: 'pass' },
  'socket-lb': { type: 'string' },
  'socket-lb-host-ns-only': { type: 'boolean', default: false },
  'cgroup-root': { type: 'string' },
  scheduler: { type: 'string', default: 'random' },
  'lb-mode': { type: 'string', default: 'snat' },
  'maglev-table-size': { type: 'string', default: String(DEFAULT_MAGLEV_MAX_SIZE) },
  'ct-max-tcp': { type: 'string' },
  'ct-max-udp': { type: 'string' },
  'snat-port-range': { type: 'string', default: '61000-65535' },
  'min-sync-period': { type: 'string', default: '1s' },
  'sync-period': { type: 'string', default: '30s' },
  'tool-timeout': { type: 'string', default: '5m' },
  'metrics-bind-address': { type: 'string', default: '127.0.0.1:10249' },
  'healthz-bind-address': { type: 'string', default: '127.0.0.1:10256' },
  'log-level': { type: 'string', default: 'info' },
  mode: { type: 'string', default: 'bpf' },
  ...RENDER_CLI_OPTIONS,
  ...SERVICE_CLI_OPTIONS,
  help: { type: 'boolean', short: 'h', default: false },
} satisfies NonNullable<ParseArgsConfig['options']>;

type RunValues = ReturnType<typeof parseOptions<typeof OPTIONS>>['values'];

/** A source of objects for the agent: manifest files or the API server. */
interface AgentSource {
  start(agent: Agent): Promise<void>;
  stop(): Promise<void>;
  /** The node as the source knows it (its Node object), or null. */
  node(): NodeInfo | null;
}

function manifestSource(dir: string, metrics: AgentMetrics): AgentSource {
  let source: ManifestSource | null = null;
  return {
    async start(agent) {
      source = new ManifestSource(dir, {
        onChange: (deltas, problems) => {
          metrics.manifestProblems(problems.filter((p) => p.severity === 'error').length);
          agent.applyDeltas(deltas);
        },
      });
      await source.start();
    },
    async stop() {
      source?.stop();
    },
    node: () => null,
  };
}

function kubeSource({ config, origin }: LoadedKubeConfig, nodeName: string, metrics: AgentMetrics, log: Logger): AgentSource {
  log.info({ origin }, 'following the Kubernetes API');
  const source = new KubeSource({
    kubeConfig: config,
    nodeName,
    onRestart: (e) => metrics.informerRestart(e.resource),
  });
  return {
    async start(agent) {
      source.onChange((deltas) => agent.applyDeltas(deltas));
      source.onNodeChange((node) => agent.updateNode(node));
      await source.start();
      agent.updateObjects(source.current());
      agent.updateNode(source.node());
    },
    stop: () => source.stop(),
    node: () => source.node(),
  };
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('run', argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const level = values['log-level'];
  if (!['trace', 'debug', 'info', 'warn', 'error'].includes(level)) {
    throw new ConfigError(`--log-level ${level}: expected trace, debug, info, warn or error`);
  }
  setLogLevel(level);
  const mode = parseProxyMode(values.mode);
  if (values.manifests !== undefined && values.kubeconfig !== undefined) {
    throw new ConfigError('vipr run: give --manifests DIR or --kubeconfig FILE, not both');
  }
  const useKube = values.manifests === undefined;
  if (useKube && values.kubeconfig === undefined && !process.env.KUBECONFIG && !process.env.KUBERNETES_SERVICE_HOST) {
    throw new ConfigError('vipr run: no source: give --manifests DIR, --kubeconfig FILE, or set $KUBECONFIG');
  }
  // A kubeconfig no wait can fix (malformed, unknown scheme, missing certificate) stops us here,
  // before anything is loaded or started.
  const kube = useKube ? loadKubeConfig(values.kubeconfig === undefined ? {} : { kubeconfig: values.kubeconfig }) : null;
  if (mode === 'bpf' && values.iface.length === 0) throw new ConfigError('vipr run: at least one --iface IF is required (the interfaces carrying client traffic)');
  const attach = values.attach;
  if (attach !== 'auto' && attach !== 'tcx' && attach !== 'tc') throw new ConfigError(`--attach ${attach}: expected auto, tcx or tc`);
  // --node-ip (either family), --cluster-cidr and --nodeport-addresses: one clear line when wrong.
  renderOptionsFromCli(values);
  const minSync = parseDuration('min-sync-period', values['min-sync-period']);
  const fullSync = parseDuration('sync-period', values['sync-period']);
  const toolTimeout = parseDuration('tool-timeout', values['tool-timeout']);
  if (toolTimeout <= 0) throw new ConfigError(`--tool-timeout ${values['tool-timeout']}: must be longer than 0; use e.g. 5m, 20m`);
  buildOptionsFromCli(values, useKube);
  if (fullSync < minSync) throw new ConfigError(`--sync-period must not be shorter than --min-sync-period`);
  requireRoot('vipr run');
  setDefaultToolTimeout(toolTimeout);
  const scheduler = values.scheduler;
  if (!(SCHEDULERS as readonly string[]).includes(scheduler)) {
    throw new ConfigError(`--scheduler ${scheduler}: expected one of ${SCHEDULERS.join(', ')}`);
  }
  const lbMode = values['lb-mode'];
  if (!(LB_MODES as readonly string[]).includes(lbMode)) {
    throw new ConfigError(`--lb-mode ${lbMode}: expected one of ${LB_MODES.join(', ')}`);
  }
  if (mode !== 'bpf' && lbMode !== 'snat') {
    throw new ConfigError(`--lb-mode ${lbMode} is for --mode bpf (the other modes SNAT as kube-proxy does)`);
  }
  const maglevMaxSize = Number(values['maglev-table-size']);
  if (!(MAGLEV_SIZES as readonly number[]).includes(maglevMaxSize)) {
    throw new ConfigError(`--maglev-table-size ${values['maglev-table-size']}: expected one of ${MAGLEV_SIZES.join(', ')} (primes; the datapath counts slots in 16 bits)`);
  }
  const ct = parseCtSizes(values['ct-max-tcp'], values['ct-max-udp']);
  const snatPorts = parseSnatPortRange(values['snat-port-range']);
  if (mode !== 'bpf' && (values['ct-max-tcp'] !== undefined || values['ct-max-udp'] !== undefined || values['snat-port-range'] !== OPTIONS['snat-port-range'].default)) {
    throw new ConfigError('--ct-max-tcp, --ct-max-udp and --snat-port-range are for --mode bpf (the other modes use the kernel\'s conntrack)');
  }
  if (mode !== 'bpf' && (values.xdp.length > 0 || scheduler !== 'random')) {
    throw new ConfigError(`--xdp and --scheduler are for --mode bpf (use --ipvs-scheduler in ipvs mode)`);
  }
  const xdpMode = values['xdp-mode'];
  if (!(XDP_MODES as readonly string[]).includes(xdpMode)) {
    throw new ConfigError(`--xdp-mode ${xdpMode}: expected one of ${XDP_MODES.join(', ')}`);
  }
  if (xdpMode !== 'auto' && values.xdp.length === 0) {
    throw new ConfigError(`--xdp-mode ${xdpMode} says how --xdp attaches: give --xdp IF too`);
  }
  const xdpLocalBackends = values['xdp-local-backends'];
  if (xdpLocalBackends !== 'pass' && xdpLocalBackends !== 'redirect') {
    throw new ConfigError(`--xdp-local-backends ${xdpLocalBackends}: expected pass or redirect`);
  }
  if (xdpLocalBackends === 'redirect' && values.xdp.length === 0) {
    throw new ConfigError('--xdp-local-backends redirect says what XDP does with local pods\' frames: give --xdp IF too');
  }
  if (values.manifests !== undefined && !existsSync(values.manifests)) {
    throw new ConfigError(`--manifests ${values.manifests}: no such directory`);
  }
  // Interfaces named exactly must exist before anything is loaded or started.
  for (const iface of [...parseIfaceSpec(values.iface).names, ...values.xdp]) {
    if (ifNameToIndex(iface) === 0) throw new ConfigError(`--iface ${iface}: no such interface in this network namespace`);
  }
  if (mode !== 'bpf' && (values['socket-lb'] !== undefined || values['socket-lb-host-ns-only'] || values['cgroup-root'] !== undefined)) {
    throw new ConfigError('--socket-lb, --socket-lb-host-ns-only and --cgroup-root are for --mode bpf (the other modes serve the node through their OUTPUT chains)');
  }
  const socketLb = mode === 'bpf' ? decideSocketLb(parseSocketLbChoice(values['socket-lb']), values['cgroup-root']) : null;
  return runAgent(values, { mode, kube, minSync, fullSync, attach, scheduler: scheduler as Scheduler, lbMode: lbMode as LbMode, socketLb, ct, snatPorts, xdpMode: xdpMode as XdpMode, xdpRedirectPods: xdpLocalBackends === 'redirect' });
}

function parseCtMax(option: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < CT_LIMIT_MIN || n > CT_LIMIT_MAX) {
    throw new ConfigError(`--${option} ${raw}: expected a whole number of entries from ${CT_LIMIT_MIN} to ${CT_LIMIT_MAX}`);
  }
  return n;
}

/** --ct-max-tcp / --ct-max-udp, the other sized to the node's memory when not given. */
export function parseCtSizes(tcp: string | undefined, udp: string | undefined): CtSizes {
  const explicit: { tcp?: number; udp?: number } = {};
  const t = parseCtMax('ct-max-tcp', tcp);
  const u = parseCtMax('ct-max-udp', udp);
  if (t !== undefined) explicit.tcp = t;
  if (u !== undefined) explicit.udp = u;
  return ctSizes(explicit);
}

/** --snat-port-range LO-HI: 1 <= LO <= HI <= 65535. */
export function parseSnatPortRange(raw: string): [number, number] {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(raw);
  const lo = Number(m?.[1]);
  const hi = Number(m?.[2]);
  if (!m || lo < 1 || hi > 65535 || lo > hi) {
    throw new ConfigError(`--snat-port-range ${raw}: expected LO-HI with 1 <= LO <= HI <= 65535, e.g. 61000-65535`);
  }
  return [lo, hi];
}

/** kube-proxy's localhost NodePorts: on unless --nodeport-addresses leaves 127.0.0.1 out. */
function nodePortLoopback(nodePortAddresses: string[]): boolean {
  return resolveOptions({ ...renderOptionsFromCli({}), nodePortAddresses }, 'IPv4').localhostNodePorts;
}

/**
 * Attaches socket LB as decided, or removes what a previous agent attached when it is off. A
 * default (not asked for) socket LB the kernel refuses is logged and left off.
 */
function startSocketLb(decision: SocketLbDecision, explicit: boolean, pinDir: string, settings: { hostNsOnly: boolean; nodePortLoopback: boolean }, log: Logger): SocketLb | null {
  if (!decision.on) {
    const removed = detachSocketLb(pinDir);
    log.info({ reason: decision.reason, ...(removed.length > 0 ? { detached: removed } : {}) }, 'socket LB off');
    return null;
  }
  let lb: SocketLb | null = null;
  try {
    lb = SocketLb.load(pinDir, settings);
    lb.attach(decision.cgroup);
    return lb;
  } catch (err) {
    lb?.close();
    if (explicit || !(err instanceof BpfError)) throw err;
    log.warn({ err: err.message }, 'socket LB off: this kernel refused the cgroup socket programs');
    return null;
  }
}

async function runAgent(
  values: RunValues,
  o: {
    mode: ProxyMode;
    kube: LoadedKubeConfig | null;
    minSync: number;
    fullSync: number;
    attach: AttachMode;
    scheduler: Scheduler;
    lbMode: LbMode;
    socketLb: SocketLbDecision | null;
    ct: CtSizes;
    snatPorts: [number, number];
    xdpMode: XdpMode;
    /** --xdp-local-backends redirect: keep vipr_xdp_pods_v1 and vipr_xdp_pods6_v1 (src/bpf/xdp-pods.ts). */
    xdpRedirectPods: boolean;
  },
): Promise<number> {
  const log = componentLogger('run');
  // SIGTERM or SIGINT from the start, not only once running: a first sync whose rule tool runs
  // for minutes (iptables-nft-restore of 10,000 Services on a slow node) would otherwise end the
  // process by the signal's default and leave the tool running on, loading rules with no agent.
  // Every running tool is ended at once; while starting the agent then exits (what it installed
  // stays, as after any stop); once running, it stops as below.
  let running = false;
  let stopRunning: ((signal: NodeJS.Signals) => void) | null = null;
  const onStopSignal = (signal: NodeJS.Signals): void => {
    const ended = killRunningTools();
    if (running && stopRunning !== null) {
      stopRunning(signal);
      return;
    }
    log.info({ signal, toolsEnded: ended }, 'stopping while starting; what was installed stays in place');
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGTERM', onStopSignal);
  process.once('SIGINT', onStopSignal);
  // The last resort, for an exit by an error: no tool outlives the agent.
  process.once('exit', () => killRunningTools());
  const nodeName = values['node-name'] ?? hostname();
  const pinDir = values['pin-dir'];
  let datapath: LoadedDatapath | null = null;
  let dataplane: Dataplane;
  if (o.mode === 'bpf') {
    await cleanupOtherModes('bpf', { pinDir, iptablesBackend: null });
    // VIPR_TC_OBJECT (hidden, for tests): another build of the TC object, e.g. the previous map
    // layout's (dist/bpf-test/tc_lb_previous.bpf.o) that test/e2e/upgrade.test.ts upgrades from.
    // A family the node does not serve gets the smallest conntrack maps (UNSERVED_CT_SIZES).
    const loaded = LoadedDatapath.load(pinDir, process.env.VIPR_TC_OBJECT || undefined, {
      ctSizes: ctSizesByFamily(o.ct, servedFamilies(parseNodeIps(values['node-ip']))),
    });
    datapath = loaded;
    log.info({ ...loaded.ctMaxEntries }, 'conntrack map sizes');
    if (o.lbMode !== 'snat') {
      log.info({ lbMode: o.lbMode }, `--lb-mode ${o.lbMode}: IPv4 frontends only; IPv6 NodePort, LoadBalancer and external IPs stay on SNAT (vipr carries the frontend in an IPv4 option)`);
    }
    // The kube-proxy flags both families share, checked as the fallback modes check them.
    const render = renderOptionsFromCli(values);
    dataplane = new BpfDataplane(loaded.maps, pinDir, {
      clusterCIDRs: render.clusterCIDRs,
      nodePortAddresses: render.nodePortAddresses,
      defaultScheduler: o.scheduler,
      defaultLbMode: o.lbMode,
      snatPorts: o.snatPorts,
      maglevMaxSize: Number(values['maglev-table-size']),
    });
  } else {
    dataplane = await startProxyMode(o.mode, { render: renderOptionsFromCli(values), iptablesBackend: values['iptables-backend'], pinDir });
  }
  const loaded = datapath;
  const metrics = new AgentMetrics(loaded === null ? {} : { datapathCounters: () => readCounters(loaded.maps) });
  // kube-proxy's rule: unhealthy when a queued change waits longer than 2 × the sync period.
  const health = new ProxyHealth({ healthTimeoutMs: 2 * o.fullSync });
  // The health check servers listen on the node's addresses of both families, each narrowed by its own CIDRs.
  const serviceHealth = new ServiceHealthServers({ nodePortAddresses: renderOptionsFromCli(values).nodePortAddresses, proxyHealthy: () => health.status().healthy });
  const servers: Server[] = [];
  servers.push(await startMetricsServer(values['metrics-bind-address'], metrics));
  servers.push(await startHealthServer(values['healthz-bind-address'], health));

  const source = o.kube !== null ? kubeSource(o.kube, nodeName, metrics, log) : manifestSource(values.manifests as string, metrics);
  const nodeIps = parseNodeIps(values['node-ip']);
  const agent = new Agent({
    dataplane,
    node: { name: nodeName, zone: null, ips: nodeIps },
    minSyncPeriodMs: o.minSync,
    syncPeriodMs: o.fullSync,
    // A family --node-ip gives no address of is not served (one line says so); none given: both.
    build: { ...buildOptionsFromCli(values, o.kube !== null), families: servedFamilies(nodeIps) },
    onQueued: (now) => {
      metrics.queued(now);
      health.queued(now);
    },
    onSync: (report) => {
      const now = Date.now();
      metrics.observeSync(report, now);
      if (report.error === null) health.updated(now);
      if (report.state !== null) void serviceHealth.update(report.state);
      if (o.xdpRedirectPods && report.state !== null) {
        localBackends = localBackendAddrs(report.state);
        xdpPods?.setBackends(localBackends);
      }
      if (report.error === null && sockLb !== null) {
        try {
          sockLb.destroyStaleUdp();
        } catch (err) {
          log.error({ err }, 'destroying UDP sockets of removed backends failed');
        }
      }
    },
  });
  let sockLb: SocketLb | null = null;
  /** --xdp-local-backends redirect: this node's backends as last synced, and their XDP entries. */
  let localBackends = new Set<string>();
  let xdpPods: XdpPods | null = null;
  let xdpDrops: XdpDrops | null = null;
  let gcTimer: NodeJS.Timeout | null = null;
  let ctGc: CtGc | null = null;
  let stopWatch: () => void = () => undefined;
  let agentStarted = false;
  /** Everything started above and below, stopped on SIGTERM or when starting fails halfway. */
  const shutdown = async (): Promise<void> => {
    await source.stop();
    if (agentStarted) await agent.stop();
    await dataplane.close();
    sockLb?.close();
    xdpPods?.stop();
    xdpDrops?.close();
    loaded?.close();
    for (const s of servers) s.close();
    serviceHealth.close();
    if (gcTimer) clearInterval(gcTimer);
    ctGc?.close();
    stopWatch();
  };
  try {
    // start() resolves once the source has read everything (informers listed, every manifest
    // file parsed or reported): only then may a sync delete what is not in the source.
    await source.start(agent);
    agent.start();
    agent.sourceSynced();
    agentStarted = true;
    // The programs are attached (or swapped in) only once the maps hold the desired state; state
    // pinned by a previous agent keeps serving traffic meanwhile.
    await agent.firstSync;
    if (loaded !== null) {
      // Pinned state of another layout or size: what the old programs wrote since the load,
      // copied last before the swap (src/bpf/migrate.ts).
      loaded.migration?.refresh();
      const spec = parseIfaceSpec(values.iface);
      for (const iface of spec.names) attachInterface(loaded, iface, o.attach);
      for (const iface of listLinks().filter((n) => spec.prefixes.some((p) => n.startsWith(p)))) attachInterface(loaded, iface, o.attach);
      stopWatch = watchLinks(
        spec,
        (iface) => {
          try {
            attachInterface(loaded, iface, o.attach);
          } catch (err) {
            log.error({ err, iface }, 'cannot attach to a new interface');
          }
        },
        (iface) => forgetInterface(pinDir, iface),
      );
      // Pods are listed for XDP before it attaches, and the list emptied without the flag (an
      // earlier agent's entries would keep XDP sending there).
      if (o.xdpRedirectPods) {
        try {
          xdpDrops = XdpDrops.load(pinDir);
        } catch (err) {
          log.warn({ err }, 'cannot count the frames XDP could not deliver (tp_btf/xdp_devmap_xmit): a pod whose veth refuses XDP frames would lose them');
        }
        const drops = xdpDrops;
        xdpPods = new XdpPods({ ipv4: loaded.maps.xdpPods, ipv6: loaded.maps.xdpPods6 }, undefined, drops === null ? null : () => drops.read());
        xdpPods.setBackends(localBackends);
        await xdpPods.refresh();
        xdpPods.start();
      } else {
        clearXdpPods({ ipv4: loaded.maps.xdpPods, ipv6: loaded.maps.xdpPods6 });
      }
      for (const iface of values.xdp) attachXdp(loaded, iface, o.xdpMode);
      if (o.socketLb !== null) {
        sockLb = startSocketLb(o.socketLb, values['socket-lb'] === 'on', pinDir, {
          hostNsOnly: values['socket-lb-host-ns-only'],
          nodePortLoopback: nodePortLoopback(renderOptionsFromCli(values).nodePortAddresses),
        }, log);
      }
      // Every program is swapped in: the delta the old ones wrote, then the old pins go.
      loaded.migration?.finish();
      if (loaded.layout !== 'current') {
        log.warn({ object: process.env.VIPR_TC_OBJECT }, 'the TC object has the previous map layout (a test build): conntrack GC off');
      } else {
        // Conntrack ageing: the datapath only creates and touches entries; the GC iterators delete
        // expired ones in the kernel, read from libuv's thread pool (src/bpf/ct-gc.ts).
        const gc = CtGc.load(pinDir);
        ctGc = gc;
        const pressure = new CtPressure();
        gcTimer = setInterval(() => {
          const started = performance.now();
          gc.pass().then(
            (pass) => {
              metrics.conntrackGc(CT_ROLES.map((role) => ({
                map: MAPS[role].name, entries: pass[role].kept, maxEntries: loaded.ctMaxEntries[role], deleted: pass[role].deleted,
              })), (performance.now() - started) / 1000);
              for (const c of pressure.update(pass, loaded.ctMaxEntries)) {
                if (c.over) log.warn({ map: c.map, entries: c.entries, maxEntries: c.maxEntries }, `${c.map} is over 90 % full: raise its size (--ct-max-tcp / --ct-max-udp)`);
                else log.info({ map: c.map, entries: c.entries, maxEntries: c.maxEntries }, `${c.map} is back under 80 %`);
              }
            },
            (err: unknown) => log.error({ err }, 'conntrack garbage collection failed'),
          );
        }, CT_GC_INTERVAL_MS);
      }
    }
  } catch (err) {
    await shutdown();
    throw err;
  }
  log.info(
    { mode: dataplane.mode, ifaces: values.iface, pinDir, ...(loaded !== null ? { socketLb: describeSocketLb(socketLbStatus(pinDir)) } : {}), source: o.kube !== null ? 'kubernetes' : values.manifests, metrics: values['metrics-bind-address'], healthz: values['healthz-bind-address'] },
    'agent running',
  );

  await new Promise<void>((resolve) => {
    stopRunning = (signal): void => {
      log.info({ signal }, o.mode === 'bpf' ? 'stopping; programs and pinned maps stay in place' : 'stopping; the rules stay in place');
      resolve();
    };
    running = true;
  });
  await shutdown();
  return 0;
}
