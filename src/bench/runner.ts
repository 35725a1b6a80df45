/*
 * One benchmark run: the labs up, then rounds; in each round, for every service count, every
 * mode in turn (direct, bpf, iptables, ... then again next round: modes interleaved, so a slow
 * minute of the VM spreads over all of them), on a node programmed afresh:
 *   control plane: sync_all and sync_one timed by the mode's own Dataplane (program-worker.ts);
 *   memory: the real agent (`vipr run`) started on the N Services, its VmRSS once ready and its
 *     V8 heap in use (nodejs_heap_size_used_bytes from its /metrics);
 *   churn (N up to CHURN_MAX_SERVICES, churn.ts): the agent following a fake API server while
 *     endpoints change, each change timed from the API update until the dataplane shows it;
 *   traffic: rr, crr, udp to the measured Service at each placement (the agent stopped first:
 *     what it installed stays, and an idle agent's periodic resync cannot land in a run).
 * /dev/cpu_dma_latency is held at 0 throughout; labs are removed at the end, also on failure
 * and on abort (SIGINT).
 */
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireRoot } from '../bpf/datapath.js';
import { nsenterArgv, run as runIn } from '../lab/exec.js';
import { defaultAgentMain, AGENT_READY_MSG } from '../lab/lab.js';
import { startInNetns, stopProcesses, type StartedProcess } from '../lab/processes.js';
import { ConfigError } from '../errors.js';
import { packageRoot } from '../paths.js';
import { NoIpvsError, detectIpvs } from '../modes/ipvs.js';
import { run, toolExists } from '../process/run.js';
import { PROGRAM_RESULT, type ProgramRequest } from './program-records.js';
import { readJsonFile } from '../json-file.js';
import { z } from 'zod';
import { backendIps, benchLabDown, benchLabUp, nodeNetns, type BenchLab } from './labs.js';
import { ensureBenchProgram } from '../lab/traffic-programs.js';
import { runLoad } from './programs.js';
import {
  BENCH_NAMESPACE, benchManifestFiles, churnPool, labNameFor, changedServiceIndex, placementIndex, placementsFor, serviceName, serviceVip, targetFor,
  TRAFFIC_METRICS, type BenchMode, type BenchPlan, type DataplaneMode, type TrafficMetric,
} from './plan.js';
import { measureChurn } from './churn.js';
import { failedMetric, keptSamples, percentile, median, summarize, type BenchEnv, type BenchReport, type CellFailure, type Sample, type Unavailable } from './results.js';

export class BenchAbortedError extends Error {
  override readonly name = 'BenchAbortedError';
  constructor() {
    super('benchmark interrupted; its labs were removed');
  }
}

export interface RunBenchOptions {
  plan: BenchPlan;
  signal: AbortSignal;
  onProgress: (line: string) => void;
  /** The command line, recorded in env. */
  command: string;
}

function checkAbort(signal: AbortSignal): void {
  if (signal.aborted) throw new BenchAbortedError();
}

function workerScript(): string {
  return join(packageRoot(), 'dist', 'src', 'bench', 'program-worker.js');
}

/** The modes this machine can run, and why each other one cannot (said through `onProgress`). */
export async function availableModes(
  wanted: readonly DataplaneMode[],
  onProgress: (line: string) => void,
): Promise<{ modes: DataplaneMode[]; unavailable: Unavailable[] }> {
  const unavailable: Unavailable[] = [];
  const modes: DataplaneMode[] = [];
  for (const m of wanted) {
    const reason = await unavailableReason(m);
    if (reason === null) modes.push(m);
    else {
      unavailable.push({ mode: m, reason });
      onProgress(`${m}: unavailable: ${reason}`);
    }
  }
  return { modes, unavailable };
}

/** Why a mode cannot run here, or null when it can. */
export async function unavailableReason(mode: DataplaneMode): Promise<string | null> {
  switch (mode) {
    case 'bpf':
    case 'bpf-tc':
      return null;
    case 'iptables':
      return (await toolExists('iptables-legacy-restore')) ? null : 'iptables-legacy not installed';
    case 'iptables-nft':
      return (await toolExists('iptables-nft-restore')) ? null : 'iptables-nft not installed';
    case 'nftables':
      return (await toolExists('nft')) ? null : 'nft not installed';
    case 'ipvs':
      try {
        await detectIpvs();
        return null;
      } catch (err) {
        if (err instanceof NoIpvsError && err.missing === 'kernel') return 'kernel without IPVS';
        return err instanceof Error ? err.message : String(err);
      }
  }
}

/** Holds /dev/cpu_dma_latency at 0 while the returned fd stays open (PM QoS: no deep idle states). */
export function holdCpuDmaLatency(): { fd: number | null; status: string } {
  try {
    const fd = openSync('/dev/cpu_dma_latency', 'r+');
    writeSync(fd, Buffer.alloc(4));
    return { fd, status: 'held at 0' };
  } catch (err) {
    return { fd: null, status: `not held: ${(err as Error).message}` };
  }
}

async function toolVersion(file: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await run(file, args, { timeoutMs: 10_000 });
    return (stdout.trim() || stderr.trim()).split('\n')[0] ?? '';
  } catch {
    return 'not installed';
  }
}

/** vipr's own package.json, for the version recorded with the results. */
const PACKAGE_JSON = {
  what: 'package manifest',
  schema: z.object({ version: z.string().optional() }),
  fix: 'reinstall vipr',
};

export async function environment(
  plan: Pick<BenchPlan, 'cpu' | 'backends' | 'rounds'> & Partial<Pick<BenchPlan, 'families' | 'trafficOnly'>>,
  command: string,
  dma: string,
): Promise<BenchEnv> {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? cpus()[0]?.model ?? 'unknown';
  const pkg = readJsonFile(join(packageRoot(), 'package.json'), PACKAGE_JSON);
  return {
    kernel: release(),
    cpu: model.trim(),
    cpus: cpus().length,
    tools: {
      vipr: pkg.version ?? 'unknown',
      node: process.version,
      'iptables-legacy': await toolVersion('iptables-legacy', ['--version']),
      'iptables-nft': await toolVersion('iptables-nft', ['--version']),
      nft: await toolVersion('nft', ['--version']),
      ipvsadm: await toolVersion('ipvsadm', ['--version']),
      cc: await toolVersion(process.env.CC ?? 'cc', ['--version']),
    },
    date: new Date().toISOString(),
    command,
    cpuDmaLatency: dma,
    pinnedCpu: plan.cpu,
    ...(plan.families === undefined ? {} : { families: [...plan.families] }),
    backends: plan.backends,
    rounds: plan.rounds,
    ...(plan.trafficOnly === true ? { trafficOnly: true as const } : {}),
    wallSeconds: 0,
    loadAverage: { start: loadavg().map((v) => Math.round(v * 100) / 100), end: [] },
  };
}

function agentModeArgs(mode: DataplaneMode, lab: BenchLab): string[] {
  switch (mode) {
    case 'bpf': {
      // Socket LB on the lab node's cgroup, where the client runs; its pinned links stay after the agent.
      const cgroup = lab.state.nodes[0]?.cgroup;
      return [...lab.state.agentIfaces.flatMap((i) => ['--iface', i]), ...(cgroup === undefined ? [] : ['--cgroup-root', cgroup])];
    }
    case 'bpf-tc':
      return [...lab.state.agentIfaces.flatMap((i) => ['--iface', i]), '--socket-lb', 'off'];
    case 'iptables':
      return ['--mode', 'iptables', '--iptables-backend', 'legacy'];
    case 'iptables-nft':
      return ['--mode', 'iptables', '--iptables-backend', 'nft'];
    case 'nftables':
      return ['--mode', 'nftables'];
    case 'ipvs':
      return ['--mode', 'ipvs'];
  }
}

function vmRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb) / 1024;
}

function agentIsReady(log: string): boolean {
  return log.split('\n').some((l) => {
    if (!l.startsWith('{')) return false;
    try {
      return (JSON.parse(l) as { msg?: unknown }).msg === AGENT_READY_MSG;
    } catch {
      return false;
    }
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** `vipr run`'s default --metrics-bind-address, inside the node's namespace. */
const AGENT_METRICS_ADDRESS = '127.0.0.1:10249';

interface CellContext {
  plan: BenchPlan;
  lab: BenchLab;
  services: number;
  round: number;
  manifestsDir: string;
  workDir: string;
  signal: AbortSignal;
  samples: Sample[];
  placements: BenchReport['placements'];
  /** Failures so far: a churn failure is recorded here and the cell goes on. */
  failures: CellFailure[];
  /** With --traffic-only: the Service count each lab's node holds, programmed by its agent. */
  programmed: Map<string, number>;
  progress: (line: string) => void;
}

/** sync_all and sync_one through the mode's Dataplane, in the node's namespace. */
async function programNode(c: CellContext, mode: DataplaneMode): Promise<void> {
  const resultFile = join(c.workDir, `program-${c.lab.name}.json`);
  rmSync(resultFile, { force: true });
  const measuredVips: Record<string, string> = {};
  for (const p of placementsFor(c.services)) measuredVips[p] = serviceVip(placementIndex(c.services, p) as number);
  const req: ProgramRequest = {
    mode,
    manifestsDir: c.manifestsDir,
    pinDir: c.lab.state.pinDir,
    nodeName: 'node',
    changeService: `${BENCH_NAMESPACE}/${serviceName(changedServiceIndex(c.services))}`,
    repeats: c.plan.durations.changeRepeats,
    measuredVips,
    resultFile,
  };
  const reqFile = join(c.workDir, `program-${c.lab.name}.request.json`);
  writeFileSync(reqFile, JSON.stringify(req));
  const [file, args] = nsenterArgv(nodeNetns(c.lab), process.execPath, [workerScript(), reqFile]);
  // The worker's own logging is not wanted here: its figures come back in the result file.
  await run(file, args, { timeoutMs: 600_000, signal: c.signal, env: { ...process.env, VIPR_LOG_LEVEL: 'error' } });
  const res = readJsonFile(resultFile, PROGRAM_RESULT);
  const base = { mode, services: c.services, placement: 'none' as const, round: c.round };
  c.samples.push({ ...base, metric: 'sync_all', p50: res.syncAllMs, p99: null, rate: null, ...(res.mapAllMs === null ? {} : { mapWork: res.mapAllMs }) });
  c.samples.push({
    ...base, metric: 'sync_one', p50: median(res.syncOneMs), p99: percentile(res.syncOneMs, 99), rate: null,
    ...(res.mapOneMs === null ? {} : { mapWork: median(res.mapOneMs) }),
  });
  for (const [placement, pos] of Object.entries(res.positions ?? {})) {
    const i = c.placements.findIndex((p) => p.mode === mode && p.services === c.services && p.placement === placement);
    const entry = { mode, services: c.services, placement, position: pos.position, of: pos.of };
    if (i >= 0) c.placements[i] = entry;
    else c.placements.push(entry);
  }
  const maps = (v: number | null): string => (v === null ? '' : ` (maps ${v.toFixed(3)} ms)`);
  c.progress(`sync_all ${res.syncAllMs.toFixed(2)} ms${maps(res.mapAllMs)}, sync_one ${median(res.syncOneMs).toFixed(3)} ms${maps(res.mapOneMs === null ? null : median(res.mapOneMs))}`);
}

/** The agent's Prometheus metrics, fetched inside the node's namespace (where it listens). */
async function scrapeAgentMetrics(netns: string): Promise<string> {
  const script = `fetch('http://${AGENT_METRICS_ADDRESS}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`;
  const { stdout } = await runIn(process.execPath, ['-e', script], { netns, timeoutMs: 30_000 });
  return stdout;
}

/** The value of an unlabelled metric in a Prometheus text exposition. */
export function metricValue(exposition: string, name: string): number | null {
  const line = exposition.split('\n').find((l) => l.startsWith(`${name} `));
  if (line === undefined) return null;
  const v = Number(line.slice(name.length + 1).trim().split(' ')[0]);
  return Number.isFinite(v) ? v : null;
}

/**
 * How long the agent may take to come up on N Services: 5 minutes, and 0.15 s more a Service
 * (30 minutes at 10,000: IPVS's first full sync of 1,000 Services took 77 s in the VM lab, and
 * grows at least linearly).
 */
export function agentStartTimeoutMs(services: number): number {
  return 300_000 + 150 * services;
}

/** Starts the real agent on the N Services, reads its RSS and heap once it is running, stops it. */
async function agentRss(c: CellContext, mode: DataplaneMode): Promise<void> {
  const argv = [
    process.execPath, defaultAgentMain(), 'run', ...agentModeArgs(mode, c.lab),
    '--manifests', c.manifestsDir, '--pin-dir', c.lab.state.pinDir, '--node-name', 'node', '--log-level', 'info',
    // Its rule tools may take as long as its start (iptables-nft-restore of 10,000 Services took
    // more than the 5-minute default in the VM lab, and the agent never came up).
    '--tool-timeout', `${agentStartTimeoutMs(c.services)}ms`,
  ];
  const log = join(c.lab.state.stateDir, `agent-bench-${c.services}.log`);
  let agent: StartedProcess | null = null;
  try {
    agent = await startInNetns({ netns: nodeNetns(c.lab), argv, log, ready: agentIsReady, timeoutMs: agentStartTimeoutMs(c.services) });
    // Let the first sync's garbage settle into what the agent keeps while it runs.
    await sleep(500);
    const rss = vmRssMiB(agent.pid);
    const heapBytes = metricValue(await scrapeAgentMetrics(nodeNetns(c.lab)), 'nodejs_heap_size_used_bytes');
    if (heapBytes === null) throw new Error(`the agent's /metrics on ${AGENT_METRICS_ADDRESS} has no nodejs_heap_size_used_bytes`);
    const heap = heapBytes / 2 ** 20;
    c.samples.push({ mode, services: c.services, placement: 'none', metric: 'rss', round: c.round, p50: rss, p99: null, rate: null });
    c.samples.push({ mode, services: c.services, placement: 'none', metric: 'heap', round: c.round, p50: heap, p99: null, rate: null });
    c.progress(`agent RSS ${rss.toFixed(1)} MiB, heap in use ${heap.toFixed(1)} MiB`);
  } finally {
    if (agent !== null) await stopProcesses([agent], 10_000);
  }
}

async function traffic(c: CellContext, mode: BenchMode): Promise<void> {
  const placements = mode === 'direct' ? (['none'] as const) : placementsFor(c.services);
  const d = c.plan.durations;
  const parts: string[] = [];
  for (const family of c.plan.families) {
    const firstBackend = backendIps(c.lab, family)[0];
    if (firstBackend === undefined) throw new Error(`bench lab has no ${family} backend`);
    for (const placement of placements) {
      const target = targetFor(mode, c.services, placement === 'none' ? 'last' : placement, firstBackend, family);
      for (const metric of TRAFFIC_METRICS) {
        checkAbort(c.signal);
        const durationMs: Record<TrafficMetric, number> = { rr: d.rrMs, crr: d.crrMs, udp: d.udpMs };
        const out = await runLoad({
          netns: c.lab.plan.client.netns,
          cpu: c.plan.cpu,
          metric,
          target: metric === 'udp' ? target.udp : target.tcp,
          durationMs: durationMs[metric],
          warmupMs: d.warmupMs,
          signal: c.signal,
          // The one-node lab's client is a process of the node (socket LB applies in mode bpf).
          cgroup: c.lab.state.nodes[0]?.cgroup ?? null,
        });
        if (out.errors > 0.01 * (out.samples + out.errors)) {
          throw new Error(`${mode} ${metric} to ${out.target}: ${out.errors} of ${out.samples + out.errors} transactions failed (${out.first_error ?? '?'})`);
        }
        c.samples.push({
          mode, services: c.services, placement, metric, family, round: c.round, p50: out.p50_us, p99: out.p99_us, rate: out.rate, errors: out.errors,
        });
        const tag = family === 'IPv4' ? '' : 'v6 ';
        if (placement !== 'middle') parts.push(`${tag}${metric} ${out.p50_us.toFixed(1)}/${out.p99_us.toFixed(1)} µs ${Math.round(out.rate)}/s`);
      }
    }
  }
  c.progress(parts.join(', '));
}

/** Endpoint changes streamed through a fake API server to the agent, each timed into the dataplane. */
async function churn(c: CellContext, mode: DataplaneMode): Promise<void> {
  const d = c.plan.durations;
  const res = await measureChurn({
    mode,
    services: c.services,
    backendIps: backendIps(c.lab),
    backendIps6: c.plan.families.length > 1 ? backendIps(c.lab, 'IPv6') : [],
    perSecond: d.churnPerSecond,
    durationMs: d.churnMs,
    nodeNetns: nodeNetns(c.lab),
    pinDir: c.lab.state.pinDir,
    agentArgs: agentModeArgs(mode, c.lab),
    logDir: c.lab.state.stateDir,
    signal: c.signal,
  });
  c.samples.push({
    mode, services: c.services, placement: 'none', metric: 'churn', round: c.round, p50: res.p50, p99: res.p99, rate: res.rate, resolutionMs: res.resolutionMs,
  });
  c.progress(
    `churn ${res.latenciesMs.length} changes at ${res.rate.toFixed(0)}/s: ${res.p50.toFixed(1)}/${res.p99.toFixed(1)} ms p50/p99 (looks ${res.resolutionMs.toFixed(2)} ms)`,
  );
}

/** Everything measured for one mode at one service count in one round. */
async function cell(c: CellContext): Promise<void> {
  const mode = c.lab.mode;
  if (mode !== 'direct' && c.plan.trafficOnly === true) {
    // The agent programs the node and is stopped; what it installed stays for later rounds at
    // the same count (their traffic measured again on the same node).
    if (c.programmed.get(c.lab.name) !== c.services) {
      c.programmed.delete(c.lab.name);
      await agentRss(c, mode);
      c.programmed.set(c.lab.name, c.services);
    } else {
      c.progress(`traffic only: the node keeps the ${c.services.toLocaleString('en-US')} Services its agent programmed in an earlier round`);
    }
    checkAbort(c.signal);
  } else if (mode !== 'direct') {
    await programNode(c, mode);
    checkAbort(c.signal);
    await agentRss(c, mode);
    checkAbort(c.signal);
    // The churn runs an agent of its own against a fake API server: its failure (a window
    // missed at 1,000 Services under emulation) says nothing of the figures around it, which stand.
    if (churnPool(c.services).length > 0 && !failedMetric(c.failures, mode, c.services, 'churn')) {
      try {
        await churn(c, mode);
      } catch (err) {
        if (c.signal.aborted) throw err;
        const reason = err instanceof Error ? err.message : String(err);
        c.failures.push({ mode, services: c.services, round: c.round, reason, metric: 'churn' });
        c.progress(`churn FAILED (the cell's other figures stand): ${reason}`);
      }
      checkAbort(c.signal);
    }
  }
  await traffic(c, mode);
}

export async function runBench(o: RunBenchOptions): Promise<BenchReport> {
  const started = Date.now();
  const { plan, signal } = o;
  requireRoot('vipr bench');
  for (const f of [defaultAgentMain(), workerScript()]) {
    if (!existsSync(f)) throw new ConfigError(`${f} is missing: run 'make build' first`);
  }
  await ensureBenchProgram('rr');
  await ensureBenchProgram('responder');

  const { modes, unavailable } = await availableModes(plan.modes, o.onProgress);
  const benchModes: BenchMode[] = ['direct', ...modes];
  const dma = holdCpuDmaLatency();
  if (dma.fd === null) o.onProgress(`warning: /dev/cpu_dma_latency ${dma.status}; latencies will include idle-state exits`);
  const env = await environment(plan, o.command, dma.status);
  const workDir = mkdtempSync(join(tmpdir(), 'vipr-bench-'));
  const labs: BenchLab[] = [];
  const pending: string[] = [];
  const samples: Sample[] = [];
  const placements: BenchReport['placements'] = [];
  const failures: CellFailure[] = [];
  const programmed = new Map<string, number>();
  try {
    for (const mode of benchModes) {
      checkAbort(signal);
      pending.push(labNameFor(plan.labPrefix, mode));
      o.onProgress(`lab for ${mode}: up`);
      labs.push(await benchLabUp(plan.labPrefix, mode, plan.backends, plan.cpu, plan.families));
    }
    const ips = backendIps(labs[0] as BenchLab);
    // With IPv6 measured, every Service is dual-stack (its IPv6 slice lists the IPv6 backends).
    const ips6 = plan.families.length > 1 ? backendIps(labs[0] as BenchLab, 'IPv6') : [];
    const manifestsDirs = new Map<number, string>();
    for (const n of plan.services) {
      const dir = join(workDir, `manifests-${n}`);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      for (const [file, list] of benchManifestFiles(n, ips, 'node', ips6)) writeFileSync(join(dir, file), JSON.stringify(list));
      manifestsDirs.set(n, dir);
    }
    // Rounds outside the service counts (a slow minute spreads over every count); with
    // --traffic-only the counts go outside, so each node is programmed once per count.
    const cells: Array<[number, number]> = [];
    for (let round = 1; round <= plan.rounds; round++) for (const n of plan.services) cells.push([round, n]);
    if (plan.trafficOnly === true) cells.sort((a, b) => a[1] - b[1] || a[0] - b[0]);
    for (const [round, n] of cells) {
      for (const lab of labs) {
        checkAbort(signal);
        // A mode that failed at this count once (a tool timing out at 10,000 services) would
        // only fail again: it is reported, not retried.
        if (failures.some((f) => f.mode === lab.mode && f.services === n && f.metric === undefined)) continue;
        const prefix = `[round ${round}/${plan.rounds}] ${n} services, ${lab.mode}:`;
        const mark = samples.length;
        try {
          await cell({
            plan, lab, services: n, round, manifestsDir: manifestsDirs.get(n) as string, workDir, signal, samples, placements, failures, programmed,
            progress: (line) => o.onProgress(`${prefix} ${line}`),
          });
        } catch (err) {
          if (signal.aborted || lab.mode === 'direct') throw err;
          // Half a cell would make medians of unlike things: drop what it measured.
          samples.splice(mark);
          const reason = (err instanceof Error ? err.message : String(err)).replace(/^.*program-worker: /, '');
          failures.push({ mode: lab.mode, services: n, round, reason });
          o.onProgress(`${prefix} FAILED: ${reason}`);
        }
      }
    }
  } catch (err) {
    if (signal.aborted) throw new BenchAbortedError();
    throw err;
  } finally {
    if (dma.fd !== null) closeSync(dma.fd);
    for (const lab of labs) {
      const failures = await benchLabDown(lab.name, lab.responders);
      for (const f of failures) o.onProgress(`warning: ${f}`);
    }
    // Labs whose `up` failed halfway are removed by their own up; down them again to be sure.
    for (const name of pending) if (!labs.some((l) => l.name === name)) await benchLabDown(name, []).catch(() => []);
    rmSync(workDir, { recursive: true, force: true });
  }
  env.wallSeconds = Math.round((Date.now() - started) / 1000);
  env.loadAverage.end = loadavg().map((v) => Math.round(v * 100) / 100);
  // Figures of earlier rounds of a mode that failed later are dropped too: no partial medians.
  const kept = keptSamples(samples, failures);
  return { env, results: summarize(kept), unavailable, failures, placements };
}
