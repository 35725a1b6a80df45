/*
 * `vipr bench --disruption`: a soak of every compared mode at once, in labs of its own, all
 * following one fake Kubernetes API server (src/lab/fake-apiserver/) through the real client
 * library, so every mode sees the same churn at the same moment:
 *   - traffic (src/bench/disruption-client.ts) from each lab's client to one ClusterIP Service:
 *     steady new connections and long-lived keep-alive ones;
 *   - the Service's endpoints rolled `churns` times (disruption-report.ts: ready → not ready →
 *     terminating → gone, a new one ready), each backend's server told to drain (answer with
 *     `Connection: close`) when it leaves the ready set and to serve again when it rejoins;
 *   - every agent SIGKILLed and restarted `restarts` times, a churn made while they are down;
 *   - the API server dropping every connection `watchDrops` times, every other time after
 *     compacting its history, so the informers' next watch gets 410 Expired and relists.
 * After each churn the soak waits until every agent has logged the sync that carried it (the first
 * `synced` line of a sync that wrote something and started at or after the write), then lets
 * traffic run for `dwellMs`. It counts failed requests, reset connections and requests that
 * reached an endpoint after the sync that removed it had completed.
 *
 * The API server listens on 127.0.0.1 here; in each lab's node namespace socat listens on
 * 127.0.0.1:6443 and forwards to a Unix socket this process bridges to the server, so dropped
 * connections reach the agents as they would over a network. Labs are removed at the end, also on
 * failure and on abort.
 */
import type { Server, Socket } from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, openSync, readSync, closeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireRoot } from '../bpf/datapath.js';
import { ConfigError } from '../errors.js';
import { packageRoot } from '../paths.js';
import { run } from '../lab/exec.js';
import { AGENT_READY_MSG, backendServerScript, defaultAgentMain, labDown, labUp } from '../lab/lab.js';
import { startInNetns, stopProcesses, type StartedProcess } from '../lab/processes.js';
import { planLab, type LabPlan } from '../lab/topology.js';
import type { LabState } from '../lab/state.js';
import { FakeApiServer, type KubeObject } from '../lab/fake-apiserver/server.js';
import { kubeconfigFor } from '../lab/fake-apiserver/kubeconfig.js';
import { startBridge, socatToBridgeArgv } from '../lab/fake-apiserver/unix-bridge.js';
import { labExists } from './labs.js';
import { labNameFor, type DataplaneMode } from './plan.js';
import { BenchAbortedError, availableModes, environment, holdCpuDmaLatency } from './runner.js';
import type { BenchReport, Unavailable } from './results.js';
import {
  countDisruption, initialRollout, stepsWithExtraSyncs, notReadyWindows, pendingWindows, rolloutStep, sliceEndpoints, syncLatency,
  type ClientRecord, type DisruptionResult, type DisruptionSummary, type RolloutState, type StepRecord,
} from './disruption-report.js';

export interface DisruptionPlan {
  modes: DataplaneMode[];
  churns: number;
  restarts: number;
  watchDrops: number;
  /** New connections per second, per mode. */
  rate: number;
  /** Long-lived keep-alive connections per mode. */
  longLived: number;
  longLivedIntervalMs: number;
  /** Traffic time after each churn's sync, before the next churn. */
  dwellMs: number;
  /** Backend pods in the rollout pool; READY_ENDPOINTS of them are ready at a time. */
  backends: number;
  /** The agents' --min-sync-period. */
  minSyncPeriod: string;
  labPrefix: string;
}

const READY_ENDPOINTS = 3;
export const DISRUPTION_BACKENDS = READY_ENDPOINTS + 3;

const BASE = { rate: 100, longLived: 8, longLivedIntervalMs: 100, backends: DISRUPTION_BACKENDS, minSyncPeriod: '100ms' } as const;
export const FULL_DISRUPTION = { ...BASE, churns: 1000, restarts: 10, watchDrops: 20, dwellMs: 150 } as const;
export const QUICK_DISRUPTION = { ...BASE, churns: 30, restarts: 2, watchDrops: 3, dwellMs: 150 } as const;

const SERVICE = 'web';
const NAMESPACE = 'default';
const VIP = '10.96.100.10';
const PORT = 80;
const API_PORT_IN_NODE = 6443;
/** How long one churn may take to reach every agent: an informer restarting after a dropped watch backs off (capped at 30 s). */
const SYNC_TIMEOUT_MS = 90_000;

export interface RunDisruptionOptions {
  plan: DisruptionPlan;
  signal: AbortSignal;
  onProgress: (line: string) => void;
  command: string;
}

interface SyncLine {
  start: number;
  end: number;
  writes: number;
  deletes: number;
}

/** Follows an agent's log file from an offset, collecting its `synced` lines. */
class SyncLog {
  private offset: number;
  private partial = '';
  readonly syncs: SyncLine[] = [];

  constructor(private readonly path: string) {
    this.offset = existsSync(path) ? statSync(path).size : 0;
  }

  poll(): void {
    if (!existsSync(this.path)) return;
    const size = statSync(this.path).size;
    if (size <= this.offset) return;
    const fd = openSync(this.path, 'r');
    try {
      const buf = Buffer.alloc(size - this.offset);
      const n = readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const text = this.partial + buf.subarray(0, n).toString('utf8');
      const lines = text.split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.startsWith('{') || !line.includes('"msg":"synced"')) continue;
        const o = JSON.parse(line) as { time?: unknown; durationMs?: unknown; writes?: unknown; deletes?: unknown };
        const end = Date.parse(String(o.time));
        const duration = Number(o.durationMs);
        if (!Number.isFinite(end) || !Number.isFinite(duration)) continue;
        this.syncs.push({ start: end - duration, end, writes: Number(o.writes) || 0, deletes: Number(o.deletes) || 0 });
      }
    } finally {
      closeSync(fd);
    }
  }

  /** End of the first sync that changed something and started at or after `t0`, if logged yet. */
  syncedAfter(t0: number): number | null {
    this.poll();
    const s = this.syncs.find((x) => x.start >= t0 && x.writes + x.deletes > 0);
    return s === undefined ? null : s.end;
  }
}

interface SoakLab {
  mode: DataplaneMode;
  name: string;
  plan: LabPlan;
  state: LabState;
  nodeNetns: string;
  /** Backend name → its server process (signalled to drain and to serve). */
  servers: Map<string, { pid: number; startTime: number }>;
  socat: StartedProcess | null;
  agent: StartedProcess | null;
  agentLog: string;
  syncLog: SyncLog | null;
  /** Syncs logged by earlier agent processes of this lab. */
  pastSyncs: SyncLine[];
  client: StartedProcess | null;
  clientOut: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function checkAbort(signal: AbortSignal): void {
  if (signal.aborted) throw new BenchAbortedError();
}

function clientScript(): string {
  return join(packageRoot(), 'dist', 'src', 'bench', 'disruption-client.js');
}

/**
 * `vipr run` options of each mode, as the latency bench gives them: `bpf` with socket LB on the
 * node's cgroup, where the client runs, `bpf-tc` with every packet through TC.
 */
function modeArgs(mode: DataplaneMode, lab: SoakLab): string[] {
  const ifaces = lab.state.agentIfaces.flatMap((i) => ['--iface', i]);
  const cgroup = lab.state.nodes[0]?.cgroup;
  const args: Record<DataplaneMode, string[]> = {
    bpf: [...ifaces, ...(cgroup === undefined ? [] : ['--cgroup-root', cgroup])],
    'bpf-tc': [...ifaces, '--socket-lb', 'off'],
    iptables: ['--mode', 'iptables', '--iptables-backend', 'legacy'],
    'iptables-nft': ['--mode', 'iptables', '--iptables-backend', 'nft'],
    nftables: ['--mode', 'nftables'],
    ipvs: ['--mode', 'ipvs'],
  };
  return args[mode];
}

function logHasReady(text: string): boolean {
  return text.split('\n').some((l) => l.startsWith('{') && l.includes(`"msg":"${AGENT_READY_MSG}"`));
}

function serviceObject(): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: SERVICE, namespace: NAMESPACE },
    spec: { type: 'ClusterIP', clusterIP: VIP, clusterIPs: [VIP], ports: [{ name: 'http', protocol: 'TCP', port: PORT, targetPort: PORT }] },
  };
}

const CONDITIONS = {
  ready: { ready: true, serving: true, terminating: false },
  notready: { ready: false, serving: false, terminating: false },
  terminating: { ready: false, serving: false, terminating: true },
} as const;

function sliceObject(rollout: RolloutState, ipOf: ReadonlyMap<string, string>): KubeObject {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${SERVICE}-soak`, namespace: NAMESPACE, labels: { 'kubernetes.io/service-name': SERVICE } },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: PORT }],
    endpoints: sliceEndpoints(rollout).map((e) => ({ addresses: [ipOf.get(e.name) as string], conditions: CONDITIONS[e.state], nodeName: 'node' })),
  };
}

/** Evenly spread step numbers (1-based) for `count` events among `churns`, at `phase` of each stretch. */
export function spreadSteps(churns: number, count: number, phase: number): Set<number> {
  const out = new Set<number>();
  for (let i = 0; i < count; i++) out.add(Math.min(churns, Math.floor((i + phase) * churns / count) + 1));
  return out;
}

async function soakLabUp(prefix: string, mode: DataplaneMode, backends: number, sockPath: string): Promise<SoakLab> {
  const name = labNameFor(prefix, mode);
  if (await labExists(name)) await labDown(name);
  // The soak measures IPv4 Services: its labs are IPv4 only.
  const plan = planLab({ name, backends, ipFamily: 'ipv4' });
  const { state } = await labUp({ name, backends, ipFamily: 'ipv4', manifestsDir: null, agent: false });
  const node = plan.nodes[0];
  if (!node) throw new Error('soak lab has no node');
  const servers = new Map<string, { pid: number; startTime: number }>();
  for (const p of state.processes) if (p.kind === 'server') servers.set(p.host, { pid: p.pid, startTime: p.startTime });
  const lab: SoakLab = {
    mode, name, plan, state, nodeNetns: node.netns, servers, socat: null, agent: null,
    agentLog: join(state.stateDir, 'agent-soak.log'), syncLog: null, pastSyncs: [], client: null, clientOut: join(state.stateDir, 'client-records.jsonl'),
  };
  await run('sysctl', ['-q', '-w', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65535'], { netns: plan.client.netns });
  lab.socat = await startInNetns({
    netns: node.netns,
    argv: socatToBridgeArgv(API_PORT_IN_NODE, sockPath),
    log: join(state.stateDir, 'socat.log'),
    ready: (text) => text.includes('listening on'),
    timeoutMs: 10_000,
  });
  return lab;
}

async function startAgent(lab: SoakLab, kubeconfig: string, plan: DisruptionPlan): Promise<void> {
  const argv = [
    process.execPath, defaultAgentMain(), 'run', '--kubeconfig', kubeconfig, ...modeArgs(lab.mode, lab),
    '--pin-dir', lab.state.pinDir, '--node-name', 'node', '--min-sync-period', plan.minSyncPeriod, '--log-level', 'info',
  ];
  if (lab.syncLog !== null) {
    lab.syncLog.poll();
    lab.pastSyncs.push(...lab.syncLog.syncs);
  }
  lab.syncLog = new SyncLog(lab.agentLog);
  lab.agent = await startInNetns({ netns: lab.nodeNetns, argv, log: lab.agentLog, ready: logHasReady, timeoutMs: 60_000 });
}

async function killAgent(lab: SoakLab): Promise<void> {
  if (lab.agent !== null) await stopProcesses([lab.agent], 5000, 'SIGKILL');
  lab.agent = null;
}

function signalServer(lab: SoakLab, backend: string, sig: NodeJS.Signals): void {
  const s = lab.servers.get(backend);
  if (!s) throw new Error(`lab ${lab.name} has no server for ${backend}`);
  process.kill(s.pid, sig);
}

/** Waits until every lab's agent has logged the sync that carried a change written at `t0`. */
async function waitSynced(labs: readonly SoakLab[], t0: number, signal: AbortSignal): Promise<Record<string, number>> {
  const synced: Record<string, number> = {};
  const deadline = Date.now() + SYNC_TIMEOUT_MS;
  for (;;) {
    checkAbort(signal);
    for (const lab of labs) {
      if (synced[lab.mode] !== undefined) continue;
      const end = lab.syncLog?.syncedAfter(t0) ?? null;
      if (end !== null) synced[lab.mode] = end;
    }
    if (labs.every((l) => synced[l.mode] !== undefined)) return synced;
    if (Date.now() > deadline) {
      const late = labs.filter((l) => synced[l.mode] === undefined).map((l) => `${l.mode} (log ${l.agentLog})`);
      throw new Error(`a churn written ${SYNC_TIMEOUT_MS / 1000} s ago was not synced by ${late.join(', ')}`);
    }
    await sleep(5);
  }
}

function readRecords(file: string): ClientRecord[] {
  if (!existsSync(file)) throw new Error(`the soak client wrote no records (${file})`);
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l) as ClientRecord);
}

export async function runDisruption(o: RunDisruptionOptions): Promise<BenchReport> {
  const started = Date.now();
  const { plan, signal } = o;
  requireRoot('vipr bench --disruption');
  for (const f of [defaultAgentMain(), clientScript(), backendServerScript()]) {
    if (!existsSync(f)) throw new ConfigError(`${f} is missing: run 'make build' first`);
  }
  const { modes, unavailable } = await availableModes(plan.modes, o.onProgress);
  if (modes.length === 0) throw new ConfigError('--disruption: none of the modes can run here');
  const dma = holdCpuDmaLatency();
  const env = await environment({ cpu: -1, backends: plan.backends, rounds: 1 }, o.command, dma.status);
  const workDir = mkdtempSync(join(tmpdir(), 'vipr-soak-'));
  const sockPath = join(workDir, 'api.sock');
  const kubeconfig = join(workDir, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigFor(`http://127.0.0.1:${API_PORT_IN_NODE}`));
  const api = new FakeApiServer();
  let bridge: { server: Server; sockets: Set<Socket> } | null = null;
  const labs: SoakLab[] = [];
  const pending: string[] = [];
  const progress = o.onProgress;
  try {
    await api.start();
    bridge = await startBridge(sockPath, Number(new URL(api.url).port));
    for (const mode of modes) {
      checkAbort(signal);
      pending.push(labNameFor(plan.labPrefix, mode));
      progress(`lab for ${mode}: up`);
      labs.push(await soakLabUp(plan.labPrefix, mode, plan.backends, sockPath));
    }
    const pool = (labs[0]?.plan.nodes[0]?.backends ?? []).map((b) => b.name);
    const ipOf = new Map((labs[0]?.plan.nodes[0]?.backends ?? []).map((b) => [b.name, b.ip]));
    let rollout = initialRollout(pool, READY_ENDPOINTS);
    const initiallyOut = [...rollout.gone];
    api.createOrUpdate({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node', labels: {} }, status: { addresses: [] } });
    api.createOrUpdate(serviceObject());
    api.createOrUpdate(sliceObject(rollout, ipOf));
    progress(`agents: starting (${modes.join(', ')})`);
    const t0Start = Date.now();
    await Promise.all(labs.map((l) => startAgent(l, kubeconfig, plan)));
    const firstSync = await waitSynced(labs, t0Start, signal);
    for (const lab of labs) {
      lab.client = await startInNetns({
        netns: lab.plan.client.netns,
        argv: [
          process.execPath, clientScript(), '--target', `${VIP}:${PORT}`, '--out', lab.clientOut,
          '--rate', String(plan.rate), '--long', String(plan.longLived), '--interval-ms', String(plan.longLivedIntervalMs),
        ],
        log: join(lab.state.stateDir, 'client.log'),
        cgroup: lab.state.nodes[0]?.cgroup ?? null,
        ready: (text) => text.includes('disruption-client: running'),
        timeoutMs: 10_000,
      });
    }
    await sleep(1000);

    const restartAt = spreadSteps(plan.churns, plan.restarts, 0.5);
    const dropAt = spreadSteps(plan.churns, plan.watchDrops, 0.25);
    const steps: StepRecord[] = [];
    let drops = 0;
    const soakStart = Date.now();
    let lastReport = soakStart;
    for (let k = 1; k <= plan.churns; k++) {
      checkAbort(signal);
      const restart = restartAt.has(k);
      if (restart) await Promise.all(labs.map((l) => killAgent(l)));
      const step = rolloutStep(rollout);
      for (const lab of labs) {
        signalServer(lab, step.leaving, 'SIGUSR1');
        if (step.joining !== null) signalServer(lab, step.joining, 'SIGUSR2');
      }
      const t0 = Date.now();
      api.createOrUpdate(sliceObject(step.next, ipOf));
      rollout = step.next;
      if (restart) await Promise.all(labs.map((l) => startAgent(l, kubeconfig, plan)));
      const synced = await waitSynced(labs, t0, signal);
      steps.push({ t0, leaving: step.leaving, joining: step.joining, synced });
      if (dropAt.has(k)) {
        drops++;
        // Every other drop after compacting history: the informers' next watch gets 410 Expired.
        if (drops % 2 === 0) api.compact();
        api.dropConnections();
      }
      if (restart) progress(`churn ${k}/${plan.churns}: agents SIGKILLed and restarted`);
      else if (Date.now() - lastReport > 15_000) {
        progress(`churn ${k}/${plan.churns}`);
        lastReport = Date.now();
      }
      await sleep(plan.dwellMs);
    }
    await sleep(500);
    for (const lab of labs) {
      if (lab.client !== null) await stopProcesses([lab.client], 30_000, 'SIGTERM');
      lab.client = null;
    }
    const seconds = Math.round((Date.now() - soakStart) / 1000);
    const results: DisruptionResult[] = labs.map((lab) => {
      const windows = notReadyWindows(lab.mode, steps, initiallyOut, firstSync[lab.mode] as number);
      const counts = countDisruption(readRecords(lab.clientOut), windows, pendingWindows(lab.mode, steps));
      lab.syncLog?.poll();
      const syncs = [...lab.pastSyncs, ...(lab.syncLog?.syncs ?? [])].map((x) => ({ start: x.start, changes: x.writes + x.deletes }));
      return { mode: lab.mode, ...counts, syncLatencyMs: syncLatency(lab.mode, steps), stepsWithExtraSyncs: stepsWithExtraSyncs(steps, syncs) };
    });
    const disruption: DisruptionSummary = {
      churns: plan.churns,
      agentRestarts: restartAt.size,
      watchDrops: drops,
      newConnectionsPerSecond: plan.rate,
      longLivedConnections: plan.longLived,
      longLivedIntervalMs: plan.longLivedIntervalMs,
      backends: plan.backends,
      minSyncPeriod: plan.minSyncPeriod,
      seconds,
      restartSteps: [...restartAt].sort((a, b) => a - b),
      watchDropSteps: [...dropAt].sort((a, b) => a - b),
      results,
    };
    env.wallSeconds = Math.round((Date.now() - started) / 1000);
    env.loadAverage.end = loadavg().map((v) => Math.round(v * 100) / 100);
    return { env, results: [], unavailable, failures: [], placements: [], disruption };
  } catch (err) {
    if (signal.aborted) throw new BenchAbortedError();
    throw err;
  } finally {
    if (dma.fd !== null) closeSync(dma.fd);
    for (const lab of labs) {
      const procs = [lab.client, lab.agent, lab.socat].filter((p): p is StartedProcess => p !== null);
      await stopProcesses(procs, 5000);
      const down = await labDown(lab.name);
      for (const f of down.failures) progress(`warning: ${f}`);
    }
    for (const name of pending) if (!labs.some((l) => l.name === name)) await labDown(name).catch(() => undefined);
    if (bridge !== null) {
      for (const s of bridge.sockets) s.destroy();
      await new Promise<void>((r) => bridge?.server.close(() => r()));
    }
    await api.stop();
    rmSync(workDir, { recursive: true, force: true });
  }
}
