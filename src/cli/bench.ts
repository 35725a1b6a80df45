/*
 * `vipr bench`: BPF against kube-proxy's iptables, nftables and IPVS modes and a no-NAT floor,
 * in labs of its own (src/bench/). Prints the comparison; --json and --chart write it out.
 */
import { writeFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import { labNameProblem } from '../lab/topology.js';
import { BenchAbortedError, runBench } from '../bench/runner.js';
import { formatReport } from '../bench/report.js';
import { renderChartSvg } from '../bench/chart.js';
import {
  DATAPLANE_MODES, FULL_DURATIONS, MAX_SERVICES, QUICK_DURATIONS, labNameFor, type BenchPlan, type DataplaneMode,
} from '../bench/plan.js';
import { cpus } from 'node:os';
import { intOption, parseOptions } from './options.js';
import { formatError } from './errors.js';

export const summary = 'benchmark BPF against iptables, nftables and IPVS: latency, conn/s, sync time, memory';

const HELP = `usage: vipr bench [--modes bpf,bpf-tc,iptables,iptables-nft,nftables,ipvs] [--services 1,1000,10000]
                  [--backends 3] [--rounds 3] [--json FILE] [--chart FILE.svg] [--quick]

Builds one lab per mode (named <prefix>-bpf, <prefix>-ipt, ...; see 'vipr lab'), plus one with
nothing loaded for the 'direct' floor (client → backend, routed, no NAT), and for every mode
and number of services, on a freshly programmed node, measures:
  rr        TCP request/response on one established connection (p50, p99, req/s)
  crr       new TCP connection: connect, request/response, close (p50, p99, conn/s)
  udp       UDP request/response, a new source port per query (p50, p99, q/s)
  sync_all  programming all N services from nothing (the mode's own sync)
  sync_one  one changed service on top of N
  rss       the agent's ('vipr run') memory with N services
The measured service is the last one iptables walks; a second one sits in the middle. Modes
are interleaved in rounds; figures are medians over rounds. The load generator and the echo
responders (bench/rr.c, bench/responder.c) run pinned to one CPU, with /dev/cpu_dma_latency
held at 0. Labs are removed at the end, also on failure or Ctrl-C. Must run as root.

options:
  --modes LIST        dataplanes to compare (default all; unavailable ones are reported as such);
                      bpf is the default agent (socket LB for the client, a process of the
                      node, and TC), bpf-tc the same with --socket-lb off (every packet via TC)
  --services LIST     service counts (default 1,1000,10000; --quick: 1,100)
  --backends N        backends per service (default 3)
  --rounds N          rounds (default 3; --quick: 1)
  --json FILE         write {env, results: [{mode, services, placement, metric, p50, p99, rate, unit}]}
  --chart FILE.svg    write a chart of crr latency and conn/s against services (vega-lite)
  --quick             short runs and small counts: a smoke test of a few minutes at most
  --cpu N             CPU for the load generator and responders (default: the last one)
  --lab-prefix P      lab name prefix (default 'bench')
`;

const OPTIONS = {
  modes: { type: 'string' },
  services: { type: 'string' },
  backends: { type: 'string' },
  rounds: { type: 'string' },
  json: { type: 'string' },
  chart: { type: 'string' },
  quick: { type: 'boolean', default: false },
  cpu: { type: 'string' },
  'lab-prefix': { type: 'string', default: 'bench' },
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

export function parseServiceCounts(value: string | undefined, quick: boolean): number[] {
  if (value === undefined) return quick ? [1, 100] : [1, 1000, 10000];
  const counts = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  if (counts.length === 0 || counts.some((n) => !Number.isInteger(n) || n < 1 || n > MAX_SERVICES)) {
    throw new ConfigError(`--services ${value}: expected whole numbers from 1 to ${MAX_SERVICES}, comma-separated`);
  }
  return [...new Set(counts)].sort((a, b) => a - b);
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseOptions('bench', argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const quick = values.quick;
  const prefix = values['lab-prefix'];
  const longest = labNameFor(prefix, 'iptables-nft');
  const problem = labNameProblem(longest);
  if (problem) throw new ConfigError(`--lab-prefix ${prefix}: lab names such as '${longest}' must be valid: ${problem}`);
  const plan: BenchPlan = {
    modes: parseModes(values.modes),
    services: parseServiceCounts(values.services, quick),
    backends: intOption('backends', values.backends, 3, 1, 50),
    rounds: intOption('rounds', values.rounds, quick ? 1 : 3, 1, 100),
    durations: quick ? QUICK_DURATIONS : FULL_DURATIONS,
    labPrefix: prefix,
    cpu: intOption('cpu', values.cpu, cpus().length - 1, 0, cpus().length - 1),
  };

  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    if (controller.signal.aborted) return;
    process.stderr.write(`vipr bench: ${sig}: stopping and removing the labs\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const report = await runBench({
      plan,
      signal: controller.signal,
      onProgress: (line) => process.stderr.write(`- ${line}\n`),
      command: ['vipr', 'bench', ...argv].join(' '),
    });
    process.stdout.write(formatReport(report));
    if (values.json !== undefined) {
      writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
      process.stdout.write(`wrote ${values.json}\n`);
    }
    if (values.chart !== undefined) {
      writeFileSync(values.chart, await renderChartSvg(report));
      process.stdout.write(`wrote ${values.chart}\n`);
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
