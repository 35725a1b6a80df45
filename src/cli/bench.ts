/*
 * `vipr bench`: BPF against kube-proxy's iptables, nftables and IPVS modes and a no-NAT floor,
 * in labs of its own (src/bench/). Prints the comparison; --json and --chart write it out.
 */
import { writeFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { labNameProblem } from '../lab/topology.js';
import { BenchAbortedError, runBench } from '../bench/runner.js';
import { formatReport } from '../bench/report.js';
import { formatDisruption } from '../bench/disruption-report.js';
import { FULL_DISRUPTION, QUICK_DISRUPTION, runDisruption, type DisruptionPlan } from '../bench/disruption.js';
import type { BenchReport } from '../bench/results.js';
import { FULL_NS_DURATIONS, NORTH_SOUTH_MODES, QUICK_NS_DURATIONS, northSouthLabName, type NorthSouthMode, type NorthSouthPlan } from '../bench/north-south-plan.js';
import { formatNorthSouth } from '../bench/north-south-report.js';
import { runNorthSouth } from '../bench/north-south.js';
import {
  CHURN_MAX_SERVICES, DATAPLANE_MODES, DEFAULT_BENCH_FAMILIES, FULL_DURATIONS, MAX_SERVICES, QUICK_DURATIONS, labNameFor,
  type BenchFamilies, type BenchPlan, type DataplaneMode,
} from '../bench/plan.js';
import { cpus } from 'node:os';
import { intOption, parseOptions } from './options.js';
import { formatError } from './errors.js';
import { requireRoot } from '../bpf/datapath.js';

export const summary = 'benchmark BPF against iptables, nftables and IPVS: latency, conn/s, sync time, churn, memory';

const HELP = `usage: vipr bench [--modes bpf,bpf-tc,iptables,iptables-nft,nftables,ipvs] [--services 1,1000,10000]
                  [--families ipv4,ipv6] [--backends 3] [--rounds 3] [--json FILE] [--chart FILE.svg] [--quick]
       vipr bench --north-south [--modes xdp,xdp-redirect,tc,iptables,nftables,ipvs] [--rounds 3] [--backends 2] [--json FILE] [--chart FILE.svg] [--quick]

Builds one lab per mode (named <prefix>-bpf, <prefix>-ipt, ...; see 'vipr lab'), plus one with
nothing loaded for the 'direct' floor (client → backend, routed, no NAT), and for every mode
and number of services, on a freshly programmed node, measures:
  rr        TCP request/response on one established connection (p50, p99, req/s)
  crr       new TCP connection: connect, request/response, close (p50, p99, conn/s)
  udp       UDP request/response, a new source port per query (p50, p99, q/s)
  sync_all  programming all N services from nothing (the mode's own sync)
  sync_one  one changed service on top of N
  churn     (N from 2 to ${CHURN_MAX_SERVICES.toLocaleString('en-US')}) the agent following a fake API server while 100
            EndpointSlices a second each lose or regain an endpoint, for 20 s (--quick: 20/s for
            1 s); per change, the time from the API update until the dataplane shows it (p50,
            p99: kube-proxy's network programming latency SLI)
  rss       the agent's ('vipr run') memory with N services, and its V8 heap in use (heap)
The measured service is the last one iptables walks; a second one sits in the middle. Modes
are interleaved in rounds; figures are medians over rounds. The load generator and the echo
responders (bench/rr.c, bench/responder.c) run pinned to one CPU, with /dev/cpu_dma_latency
held at 0. Labs are removed at the end, also on failure or Ctrl-C. Must run as root.

options:
  --modes LIST        dataplanes to compare (default all; unavailable ones are reported as such);
                      bpf is the default agent (socket LB for the client, a process of the
                      node, and TC), bpf-tc the same with --socket-lb off (every packet via TC)
  --services LIST     service counts, up to ${MAX_SERVICES.toLocaleString('en-US')} (default 1,1000,10000; --quick: 1,100)
  --families LIST     ipv4,ipv6 (default) or ipv4: the address families whose rr, crr and udp are
                      measured, each row labelled with its family. With ipv6, the labs are
                      dual-stack and every Service has an IPv6 cluster IP (fd00:10:100::<n>) and
                      an IPv6 EndpointSlice beside the IPv4 ones, so sync_all, sync_one, rss and
                      heap are those of N dual-stack Services; churn changes IPv4 slices.
  --backends N        backends per service (default 3)
  --rounds N          rounds (default 3; --quick: 1)
  --json FILE         write {env, results: [{mode, services, placement, metric, family, p50, p99, rate, unit}]}
                      (family on traffic rows: IPv4 or IPv6)
  --chart FILE.svg    write a chart of crr latency and conn/s against services (vega-lite)
  --quick             short runs and small counts: a smoke test of a few minutes at most
  --traffic-only      rr, crr and udp (and the agent's rss and heap) only: each mode's node is
                      programmed by its agent once per service count (the counts one after the
                      other, every round of one before the next), no sync_all, sync_one or churn;
                      later rounds measure the traffic again on what it installed (for 10,000
                      services, where programming every mode is most of a run's time)
  --cpu N             CPU for the load generator and responders (default: the last one)
  --lab-prefix P      lab name prefix (default 'bench'; 'soak' with --disruption)

disruption soak (--disruption; with --quick: 30 churns, 2 restarts, 3 watch drops):
  Every mode (default bpf,iptables) in a lab of its own, all following one fake Kubernetes API
  server, under steady new connections (100/s) and 8 keep-alive connections (a request every
  100 ms) to one ClusterIP Service while its endpoints roll (ready → not ready → terminating →
  gone, a new one ready), the agents are SIGKILLed and restarted and the API drops its watches.
  Reports failed requests, reset connections and requests that reached an endpoint after the
  sync that removed it had completed.
  --churns N          endpoint churns (default 1000)
  --restarts N        agent SIGKILL + restarts, spread over the churns (default 10)
  --watch-drops N     times the API server drops every connection (default 20)

north-south (--north-south; with --quick: 0.4 s per run, 1 round):
  Packets per second from outside the cluster: in a two-node lab per mode (xdp; xdp-redirect,
  which is xdp with --xdp-local-backends redirect: XDP hands node1's pods their frames itself;
  tc, iptables, nftables, and ipvs where the kernel has it), the external host sends frames (bench/xdp-flood.c:
  XDP live frames, no skb, pinned to --cpu) over a cable of its own into node1's NIC, polled on
  another CPU, to node1's NodePorts: UDP on 64 tracked flows to node2's pods (node1 DNATs, SNATs
  and forwards), and TCP SYNs from 16 x 64,512 sources to node1's pods (every SYN a new flow).
  Reports packets per second sent and delivered (counted by XDP sinks where node1's output
  lands), node1's CPU time per packet, how XDP attached (native), and, for xdp, each XDP path's cost
  in ns from BPF_PROG_TEST_RUN. --modes takes these modes; --rounds (default 3) and --backends
  (per node, default 2) apply.

conntrack GC (--ct-gc, alone, no lab):
  ct_gc               one GC pass over a conntrack map of 262,144 and of 1,000,000 expired
                      entries: pass time and the largest event-loop stall (perf_hooks'
                      monitorEventLoopDelay), beside the same table read in JavaScript
`;

const OPTIONS = {
  modes: { type: 'string' },
  services: { type: 'string' },
  families: { type: 'string' },
  backends: { type: 'string' },
  rounds: { type: 'string' },
  json: { type: 'string' },
  chart: { type: 'string' },
  quick: { type: 'boolean', default: false },
  'traffic-only': { type: 'boolean', default: false },
  cpu: { type: 'string' },
  'lab-prefix': { type: 'string' },
  disruption: { type: 'boolean', default: false },
  'ct-gc': { type: 'boolean', default: false },
  'north-south': { type: 'boolean', default: false },
  churns: { type: 'string' },
  restarts: { type: 'string' },
  'watch-drops': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

export function parseModes(value: string | undefined): DataplaneMode[] {
  if (value === undefined) return [...DATAPLANE_MODES];
  const modes: DataplaneMode[] = [];
  for (const raw of value.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    if (raw === 'direct') continue; // always measured: it is the floor
    if (!(DATAPLANE_MODES as readonly string[]).includes(raw)) {
      throw new ConfigError(`--modes ${value}: '${raw}' is not one of ${DATAPLANE_MODES.join(', ')}`);
    }
    if (!modes.includes(raw as DataplaneMode)) modes.push(raw as DataplaneMode);
  }
  if (modes.length === 0) throw new ConfigError(`--modes ${value}: no dataplane to compare`);
  return modes;
}

/** `--modes` of --north-south: xdp, xdp-redirect, tc, iptables, nftables, ipvs (default all). */
export function parseNorthSouthModes(value: string | undefined): NorthSouthMode[] {
  if (value === undefined) return [...NORTH_SOUTH_MODES];
  const modes: NorthSouthMode[] = [];
  for (const raw of value.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    if (!(NORTH_SOUTH_MODES as readonly string[]).includes(raw)) {
      throw new ConfigError(`--modes ${value}: '${raw}' is not one of ${NORTH_SOUTH_MODES.join(', ')} (the modes of --north-south)`);
    }
    if (!modes.includes(raw as NorthSouthMode)) modes.push(raw as NorthSouthMode);
  }
  if (modes.length === 0) throw new ConfigError(`--modes ${value}: no dataplane to measure`);
  return modes;
}

/** `--families`: IPv4 is always measured (the control plane and churn are IPv4's); IPv6 beside it by default. */
export function parseFamilies(value: string | undefined): BenchFamilies {
  if (value === undefined) return DEFAULT_BENCH_FAMILIES;
  const wanted = new Set(value.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s.length > 0));
  if (wanted.size === 1 && wanted.has('ipv4')) return ['IPv4'];
  if (wanted.size === 2 && wanted.has('ipv4') && wanted.has('ipv6')) return ['IPv4', 'IPv6'];
  throw new ConfigError(`--families ${value}: expected ipv4,ipv6 or ipv4 (IPv4 is always measured: the control-plane rows and churn are IPv4's)`);
}

export function parseServiceCounts(value: string | undefined, quick: boolean): number[] {
  if (value === undefined) return quick ? [1, 100] : [1, 1000, 10000];
  const counts = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  if (counts.length === 0 || counts.some((n) => !Number.isInteger(n) || n < 1 || n > MAX_SERVICES)) {
    throw new ConfigError(`--services ${value}: expected whole numbers from 1 to ${MAX_SERVICES}, comma-separated`);
  }
  return [...new Set(counts)].sort((a, b) => a - b);
}

/** `vipr bench --ct-gc`: the ct_gc metric at both sizes, in a pin dir of its own. */
async function runCtGc(json: string | undefined): Promise<number> {
  requireRoot('vipr bench --ct-gc');
  const { CT_GC_SIZES, formatCtGc, measureCtGc } = await import('../bench/ct-gc.js');
  const samples = [];
  for (const entries of CT_GC_SIZES) samples.push(await measureCtGc(entries, `/sys/fs/bpf/vipr-bench-ctgc-${process.pid}`));
  process.stdout.write(formatCtGc(samples));
  if (json !== undefined) writeFileSync(json, `${JSON.stringify({ results: samples }, null, 2)}\n`);
  return 0;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('bench', argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values['ct-gc']) return runCtGc(values.json);
  const quick = values.quick;
  if (values['north-south']) {
    for (const flag of ['services', 'families', 'disruption', 'churns', 'restarts', 'watch-drops', 'traffic-only'] as const) {
      if (values[flag] !== undefined && values[flag] !== false) throw new ConfigError(`--${flag} is not an option of --north-south; drop it`);
    }
    const nsPrefix = values['lab-prefix'] ?? 'bench';
    const nsLongest = northSouthLabName(nsPrefix, 'nftables');
    const nsProblem = labNameProblem(nsLongest);
    if (nsProblem) throw new ConfigError(`--lab-prefix ${nsPrefix}: lab names such as '${nsLongest}' must be valid: ${nsProblem}`);
    const nsPlan: NorthSouthPlan = {
      modes: parseNorthSouthModes(values.modes),
      rounds: intOption('rounds', values.rounds, quick ? 1 : 3, 1, 100),
      backends: intOption('backends', values.backends, 2, 1, 8),
      durations: quick ? QUICK_NS_DURATIONS : FULL_NS_DURATIONS,
      labPrefix: nsPrefix,
      cpu: intOption('cpu', values.cpu, cpus().length - 1, 0, cpus().length - 1),
    };
    return runCommand(argv, values.json, (signal, onProgress, command) => runNorthSouth({ plan: nsPlan, signal, onProgress, command }), formatNorthSouth, values.chart,
      async (report) => (await import('../bench/chart.js')).renderNorthSouthChartSvg(report));
  }
  const prefix = values['lab-prefix'] ?? (values.disruption ? 'soak' : 'bench');
  const longest = labNameFor(prefix, 'iptables-nft');
  const problem = labNameProblem(longest);
  if (problem) throw new ConfigError(`--lab-prefix ${prefix}: lab names such as '${longest}' must be valid: ${problem}`);
  if (!values.disruption) {
    for (const flag of ['churns', 'restarts', 'watch-drops'] as const) {
      if (values[flag] !== undefined) throw new ConfigError(`--${flag} is an option of --disruption; add --disruption or drop it`);
    }
  }
  if (values.disruption) {
    if (values['traffic-only']) throw new ConfigError('--traffic-only is not an option of --disruption; drop it');
    for (const flag of ['services', 'families', 'backends', 'rounds', 'chart', 'cpu'] as const) {
      if (values[flag] !== undefined) throw new ConfigError(`--${flag} is not an option of --disruption; drop it`);
    }
    const base = quick ? QUICK_DISRUPTION : FULL_DISRUPTION;
    const soak: DisruptionPlan = {
      ...base,
      modes: values.modes === undefined ? ['bpf', 'iptables'] : parseModes(values.modes),
      churns: intOption('churns', values.churns, base.churns, 1, 100_000),
      restarts: intOption('restarts', values.restarts, base.restarts, 0, 1000),
      watchDrops: intOption('watch-drops', values['watch-drops'], base.watchDrops, 0, 1000),
      labPrefix: prefix,
    };
    return runCommand(argv, values.json, (signal, onProgress, command) => runDisruption({ plan: soak, signal, onProgress, command }), (r) =>
      r.disruption === undefined ? '' : formatDisruption(r.disruption));
  }
  const plan: BenchPlan = {
    modes: parseModes(values.modes),
    families: parseFamilies(values.families),
    services: parseServiceCounts(values.services, quick),
    backends: intOption('backends', values.backends, 3, 1, 50),
    rounds: intOption('rounds', values.rounds, quick ? 1 : 3, 1, 100),
    durations: quick ? QUICK_DURATIONS : FULL_DURATIONS,
    labPrefix: prefix,
    cpu: intOption('cpu', values.cpu, cpus().length - 1, 0, cpus().length - 1),
    ...(values['traffic-only'] ? { trafficOnly: true } : {}),
  };

  return runCommand(argv, values.json, (signal, onProgress, command) => runBench({ plan, signal, onProgress, command }), formatReport, values.chart);
}

/** Runs a benchmark with Ctrl-C handling, prints its report and writes --json / --chart. */
async function runCommand<R = BenchReport>(
  argv: string[],
  json: string | undefined,
  measure: (signal: AbortSignal, onProgress: (line: string) => void, command: string) => Promise<R>,
  format: (report: R) => string,
  chart?: string,
  renderChart?: (report: R) => Promise<string>,
): Promise<number> {
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (controller.signal.aborted) return;
    process.stderr.write(`vipr bench: ${sig}: stopping and removing the labs\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const report = await measure(controller.signal, (line) => process.stderr.write(`- ${line}\n`), ['vipr', 'bench', ...argv].join(' '));
    process.stdout.write(format(report));
    if (json !== undefined) {
      writeFileSync(json, `${JSON.stringify(report, null, 2)}\n`);
      process.stdout.write(`wrote ${json}\n`);
    }
    if (chart !== undefined) {
      // The chart renderer (vega) is an optional dependency, loaded only here.
      const render = renderChart ?? (async (r: R) => (await import('../bench/chart.js')).renderChartSvg(r as BenchReport));
      writeFileSync(chart, await render(report));
      process.stdout.write(`wrote ${chart}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof BenchAbortedError) {
      process.stderr.write(`vipr bench: ${err.message}\n`);
      return 130;
    }
    process.stderr.write(`vipr bench: ${formatError(err)}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
