/*
 * The churn metric: kube-proxy's network programming latency SLI, end to end. The agent of a mode
 * (`vipr run`) follows a fake Kubernetes API server (src/lab/fake-apiserver/) holding the bench's
 * N Services through the real client library; `perSecond` times a second for `durationMs` one
 * Service's EndpointSlice loses an endpoint (or gets it back; never one whose last change is still
 * in flight: when every one has one, the change waits, and the rate achieved says so), and for
 * each change the bench measures the time from the API update until the change is in the dataplane, read from the
 * dataplane itself:
 *   bpf, bpf-tc       the Service's entry in the pinned services map (backend_count), looked up
 *                     directly (a few µs per Service);
 *   iptables(-nft)    one `iptables-save -t nat` per look: the `-j KUBE-SEP-` rules of the
 *                     Service's KUBE-SVC chain;
 *   nftables          `nft monitor rules` from before the agent starts: the `goto endpoint-`
 *                     verdicts of each service chain rule as its transaction commits (timed
 *                     when the bench reads the event, not at the next look);
 *   ipvs              one `ipvsadm -Ln` per look: the real servers of the virtual server.
 * A change counts as landed at the end of the first look that shows it (nftables: when its event
 * is read), so each figure is an upper bound, by at most one look (`resolutionMs`, reported
 * beside p50/p99). This is the path the
 * agent's own `vipr_network_programming_duration_seconds` leaves out (the watch and the informer)
 * plus the part it cannot see (a rule tool's commit), at ms resolution instead of its 250 ms
 * buckets.
 *
 * The agents run with --min-sync-period 0: the figure is what the dataplane takes to follow 100
 * changes a second, not the coalescing delay a user may choose on top (default 1 s). The measured
 * Services are never changed; the changed ones are left changed (the next cell programs afresh).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Server, Socket } from 'node:net';
import { closeMaps, openPinnedMaps, type DatapathMaps } from '../bpf/datapath.js';
import { IPPROTO_TCP, SCOPE_EXTERNAL } from '../bpf/layouts.js';
import { spawn } from 'node:child_process';
import { nsenterArgv, run, tryRun } from '../lab/exec.js';
import { ToolError } from '../errors.js';
import { AGENT_READY_MSG, defaultAgentMain } from '../lab/lab.js';
import { logTail, startInNetns, stopProcesses, type StartedProcess } from '../lab/processes.js';
import { FakeApiServer, type KubeObject } from '../lab/fake-apiserver/server.js';
import { kubeconfigFor } from '../lab/fake-apiserver/kubeconfig.js';
import { nftServicePortChainNameBase, servicePortChainName } from '../render/hash.js';
import { NFT_TABLE_FAMILIES, NFT_TABLE_NAME } from '../modes/nftables.js';
import { startBridge, socatToBridgeArgv } from '../lab/fake-apiserver/unix-bridge.js';
import {
  BENCH_NAMESPACE, SERVICE_TCP_PORT, benchEndpointSlice, benchObjects, churnPool, serviceName, serviceVip, type DataplaneMode,
} from './plan.js';
import { percentile, median } from './results.js';

/** Where the agent in the node's namespace finds the API server (socat to the bench's bridge). */
const API_PORT_IN_NODE = 6443;
/** How long the last changes may take to land after the stream ends. */
export const CHURN_SETTLE_TIMEOUT_MS = 120_000;
/** The agent's start at 10,000 Services (list, first full sync) on a busy 2-CPU machine. */
const AGENT_START_TIMEOUT_MS = 300_000;

export interface ChurnOptions {
  mode: DataplaneMode;
  services: number;
  backendIps: readonly string[];
  /**
   * The IPv6 backends when the run measures IPv6: the Services are then dual-stack, as in the
   * rest of the run (traffic measured after the churn goes to what this agent installed). The
   * changes are made to the IPv4 slices.
   */
  backendIps6?: readonly string[];
  perSecond: number;
  durationMs: number;
  nodeNetns: string;
  pinDir: string;
  /** `vipr run` options of the mode (interfaces, socket LB, rule backend). */
  agentArgs: string[];
  /** Directory for the agent's log and the socat log (the lab's state dir). */
  logDir: string;
  signal: AbortSignal;
}

export interface ChurnResult {
  /** Per change, ms from the API update to the first look that showed it in the dataplane. */
  latenciesMs: number[];
  p50: number;
  p99: number;
  /** Changes made per second, as achieved. */
  rate: number;
  /** Median duration of one look at the dataplane, ms. */
  resolutionMs: number;
}

/** Reads how many endpoints each bench Service (by index) has in a mode's dataplane now. */
export interface DataplaneProbe {
  endpoints(indices: readonly number[]): Promise<Map<number, number>>;
  /** When the dataplane reported the count last returned for `index` (event-driven probes); else the look's end counts. */
  landedAt?(index: number): number | undefined;
  /** Event-driven probes: resolves once every event committed before the call has been read. */
  caughtUp?(): Promise<void>;
  close(): void;
}

/** The bench Service's single TCP port as kube-proxy names it (`ns/name`, the port is unnamed). */
function servicePortName(index: number): string {
  return `${BENCH_NAMESPACE}/${serviceName(index)}`;
}

/** The pinned services map: the Service's cluster-IP entry and its backend_count. */
export function bpfProbe(pinDir: string): DataplaneProbe {
  const maps: DatapathMaps = openPinnedMaps(pinDir);
  return {
    endpoints: (indices) => {
      const out = new Map<number, number>();
      for (const i of indices) {
        const v = maps.services.lookup({ vip: serviceVip(i), port: SERVICE_TCP_PORT, proto: IPPROTO_TCP, scope: SCOPE_EXTERNAL });
        out.set(i, v === null ? 0 : v.backend_count);
      }
      return Promise.resolve(out);
    },
    close: () => closeMaps(maps),
  };
}

/** Counts the `-j KUBE-SEP-` rules of each Service's KUBE-SVC chain in `iptables-save` output. */
export function iptablesEndpointCounts(save: string, indices: readonly number[]): Map<number, number> {
  const chainOf = new Map(indices.map((i) => [`-A ${servicePortChainName(servicePortName(i), 'tcp')} `, i]));
  const out = new Map<number, number>(indices.map((i) => [i, 0]));
  for (const line of save.split('\n')) {
    if (!line.startsWith('-A KUBE-SVC-') || !line.includes(' -j KUBE-SEP-')) continue;
    const i = chainOf.get(line.slice(0, line.indexOf(' ', 3) + 1));
    if (i !== undefined) out.set(i, (out.get(i) ?? 0) + 1);
  }
  return out;
}

/**
 * Pending Services up to which iptables-nft is asked chain by chain (`-S KUBE-SVC-…`: 3 ms each at
 * 10,000 Services here), not for the whole nat table (0.85 s idle at 10,000, 9.8 s during a churn).
 * iptables-legacy reads the whole table from the kernel whatever it prints, so it is always saved.
 */
const NFT_CHAIN_LOOKS_MAX = 64;
const NFT_CHAIN_LOOKS_AT_ONCE = 8;

/**
 * `iptables-nft -t nat -S CHAIN`; '' for a chain not there (yet), which iptables-nft 1.8.9 reports
 * as "chain `CHAIN' in table `nat' is incompatible" (older ones: "No chain/target/match").
 */
async function nftChainRules(netns: string, chain: string): Promise<string> {
  const res = await tryRun('iptables-nft', ['-t', 'nat', '-S', chain], { netns, timeoutMs: 60_000 });
  if (!(res instanceof ToolError)) return res.stdout;
  if (res.exitCode === 1 && /No chain|is incompatible/i.test(res.stderr)) return '';
  throw res;
}

function iptablesProbe(netns: string, backend: 'legacy' | 'nft'): DataplaneProbe {
  return {
    endpoints: async (indices) => {
      if (backend === 'nft' && indices.length <= NFT_CHAIN_LOOKS_MAX) {
        const outputs: string[] = [];
        for (let i = 0; i < indices.length; i += NFT_CHAIN_LOOKS_AT_ONCE) {
          const chains = indices.slice(i, i + NFT_CHAIN_LOOKS_AT_ONCE).map((index) => servicePortChainName(servicePortName(index), 'tcp'));
          outputs.push(...(await Promise.all(chains.map((chain) => nftChainRules(netns, chain)))));
        }
        return iptablesEndpointCounts(outputs.join('\n'), indices);
      }
      const { stdout } = await run(`iptables-${backend}-save`, ['-t', 'nat'], { netns, timeoutMs: 60_000 });
      return iptablesEndpointCounts(stdout, indices);
    },
    close: () => undefined,
  };
}

/** kube-proxy's nftables service chain of the bench Service's TCP port. */
function nftServiceChain(index: number): string {
  return `service-${nftServicePortChainNameBase({ namespace: BENCH_NAMESPACE, name: serviceName(index), port: '' }, 'tcp')}`;
}

/** The table and chain of the marker rules that show `nft monitor` listens (deleted after). */
const NFT_PROBE_TABLE = 'vipr-churn-probe';
const NFT_PROBE_CHAIN = 'listening';
/** How long `nft monitor` may take to list the ruleset and listen (seconds at 1,000 Services in the VM lab). */
const NFT_MONITOR_LISTEN_TIMEOUT_MS = 300_000;

/** A service chain's dispatch rule in `nft monitor` output: the chain and its endpoints, else null. */
export function nftMonitorDispatch(line: string): { chain: string; endpoints: number } | null {
  const m = /^add rule ip kube-proxy (service-\S+) .*\bvmap \{/.exec(line);
  return m ? { chain: m[1] as string, endpoints: line.match(/goto endpoint-/g)?.length ?? 0 } : null;
}

/**
 * `nft monitor rules` in the node's namespace, from before the agent starts: every rule a
 * transaction adds is printed when it commits, so a service chain's `numgen ... vmap { ... }`
 * rule is seen as it lands, with its endpoints (listing chains is no use here: nft 1.0.6 finds
 * only the last of several `list chain` commands of one batch, and one `nft list chain` of a
 * 10,000-Service table takes seconds).
 *
 * nft lists the whole ruleset before it listens and says nothing when it does; a commit during
 * that listing makes it start over. Started over the cell's 1,000 Services on a slow node (the VM
 * lab), it listened only after the churn's changes had committed, or never while the agent kept
 * committing, and the churn waited for changes it would never print. So measureChurn starts it
 * over no table, before the agent, and each readiness (at start, and `caughtUp()` after the
 * agent's first sync) is a marker rule the bench adds, again after 2, 4, 8 ... s, until the
 * monitor prints it.
 */
async function nftMonitorProbe(netns: string, initial: number): Promise<DataplaneProbe> {
  const [file, args] = nsenterArgv(netns, 'nft', ['monitor', 'rules']);
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const latest = new Map<string, { endpoints: number; at: number }>();
  let partial = '';
  let stderr = '';
  const waiters: Array<() => void> = [];
  const markers = { printed: 0, next: (): Promise<'printed'> => new Promise((r) => waiters.push(() => r('printed'))) };
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    const at = performance.now();
    const lines = (partial + d).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (line.startsWith(`add rule ip ${NFT_PROBE_TABLE} `)) {
        markers.printed++;
        for (const w of waiters.splice(0)) w();
      }
      const rule = nftMonitorDispatch(line);
      if (rule) latest.set(rule.chain, { endpoints: rule.endpoints, at });
    }
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  // Resolves once the monitor has printed a marker rule added now: it reads events in order, so
  // by then it has read every commit before the first marker.
  const markerPrinted = async (): Promise<void> => {
    const before = markers.printed;
    try {
      await run('nft', ['add', 'table', 'ip', NFT_PROBE_TABLE], { netns, timeoutMs: 60_000 });
      await run('nft', ['add', 'chain', 'ip', NFT_PROBE_TABLE, NFT_PROBE_CHAIN], { netns, timeoutMs: 60_000 });
      const deadline = performance.now() + NFT_MONITOR_LISTEN_TIMEOUT_MS;
      for (let waitMs = 2000; markers.printed === before; waitMs = Math.min(2 * waitMs, 30_000)) {
        if (performance.now() > deadline) {
          throw new Error(`nft monitor rules in ${netns} printed none of the bench's marker rules in ${NFT_MONITOR_LISTEN_TIMEOUT_MS / 1000} s: ${stderr.trim() || 'no error'}`);
        }
        await run('nft', ['add', 'rule', 'ip', NFT_PROBE_TABLE, NFT_PROBE_CHAIN, 'counter'], { netns, timeoutMs: 60_000 });
        let timer: ReturnType<typeof setTimeout> | undefined;
        const waited = new Promise<'waiting'>((r) => (timer = setTimeout(() => r('waiting'), waitMs)));
        const early = await Promise.race([exited, markers.next(), waited]);
        clearTimeout(timer);
        if (typeof early === 'number' || early === null) throw new Error(`nft monitor rules in ${netns} exited (${String(early)}): ${stderr.trim()}`);
      }
    } finally {
      await tryRun('nft', ['delete', 'table', 'ip', NFT_PROBE_TABLE], { netns, timeoutMs: 60_000 });
    }
  };
  try {
    await markerPrinted();
  } catch (err) {
    child.kill('SIGTERM');
    throw err;
  }
  // A chain's name is a SHA-256 of the Service's: hashed once per Service, not for every pending
  // change at every look (10 µs each here, many times that under the VM lab's emulation).
  const chains = new Map<number, string>();
  const seen = (index: number): { endpoints: number; at: number } | undefined => {
    let chain = chains.get(index);
    if (chain === undefined) chains.set(index, (chain = nftServiceChain(index)));
    return latest.get(chain);
  };
  return {
    endpoints: (indices) => Promise.resolve(new Map(indices.map((i) => [i, seen(i)?.endpoints ?? initial]))),
    landedAt: (index) => seen(index)?.at,
    caughtUp: markerPrinted,
    close: () => {
      child.kill('SIGTERM');
    },
  };
}

/** Counts the real servers (`  -> ip:port`) of each Service's TCP virtual server in `ipvsadm -Ln`. */
export function ipvsEndpointCounts(listing: string, indices: readonly number[]): Map<number, number> {
  const indexOf = new Map(indices.map((i) => [`${serviceVip(i)}:${SERVICE_TCP_PORT}`, i]));
  const out = new Map<number, number>(indices.map((i) => [i, 0]));
  let current: number | undefined;
  for (const line of listing.split('\n')) {
    const vs = /^(TCP|UDP|SCTP)\s+(\S+)/.exec(line);
    if (vs) {
      current = vs[1] === 'TCP' ? indexOf.get(vs[2] as string) : undefined;
      continue;
    }
    if (current !== undefined && /^\s+->\s+\d/.test(line)) out.set(current, (out.get(current) ?? 0) + 1);
  }
  return out;
}

function ipvsProbe(netns: string): DataplaneProbe {
  return {
    endpoints: async (indices) => {
      const { stdout } = await run('ipvsadm', ['-Ln'], { netns, timeoutMs: 60_000 });
      return ipvsEndpointCounts(stdout, indices);
    },
    close: () => undefined,
  };
}

export async function probeFor(mode: DataplaneMode, o: { pinDir: string; netns: string; initial: number }): Promise<DataplaneProbe> {
  switch (mode) {
    case 'bpf':
    case 'bpf-tc':
      return bpfProbe(o.pinDir);
    case 'iptables':
      return iptablesProbe(o.netns, 'legacy');
    case 'iptables-nft':
      return iptablesProbe(o.netns, 'nft');
    case 'nftables':
      return nftMonitorProbe(o.netns, o.initial);
    case 'ipvs':
      return ipvsProbe(o.netns);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function logHasReady(text: string): boolean {
  return text.split('\n').some((l) => l.startsWith('{') && l.includes(`"msg":"${AGENT_READY_MSG}"`));
}

/** The churn agent's log, in the lab's state dir. */
function churnAgentLog(o: ChurnOptions): string {
  return join(o.logDir, `agent-churn-${o.services}.log`);
}

/** One change of the stream: which Service, when it was written, the endpoint count it leaves. */
interface Change {
  index: number;
  writtenAt: number;
  endpoints: number;
}

/**
 * Runs the churn for one mode at one service count: API server and agent up, the stream of
 * changes with the dataplane watched, everything stopped again. Throws when a change never lands.
 */
export async function measureChurn(o: ChurnOptions): Promise<ChurnResult> {
  const pool = churnPool(o.services);
  if (pool.length === 0) throw new RangeError(`no Service to churn among ${o.services}`);
  const total = Math.max(1, Math.round((o.perSecond * o.durationMs) / 1000));
  const workDir = mkdtempSync(join(tmpdir(), 'vipr-churn-'));
  const sockPath = join(workDir, 'api.sock');
  const kubeconfig = join(workDir, 'kubeconfig');
  writeFileSync(kubeconfig, kubeconfigFor(`http://127.0.0.1:${API_PORT_IN_NODE}`));
  const api = new FakeApiServer();
  let bridge: { server: Server; sockets: Set<Socket> } | null = null;
  const procs: StartedProcess[] = [];
  let probe: DataplaneProbe | null = null;
  try {
    await api.start();
    bridge = await startBridge(sockPath, Number(new URL(api.url).port));
    api.createOrUpdate({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node', labels: {} }, status: { addresses: [] } });
    for (const obj of benchObjects(o.services, o.backendIps, 'node', o.backendIps6 ?? [])) api.createOrUpdate(obj as unknown as KubeObject);
    procs.push(await startInNetns({
      netns: o.nodeNetns,
      argv: socatToBridgeArgv(API_PORT_IN_NODE, sockPath),
      log: join(o.logDir, 'churn-socat.log'),
      ready: (text) => text.includes('listening on'),
      timeoutMs: 10_000,
    }));
    if (o.mode === 'nftables') {
      // Over the 1,000 Services the cell's earlier agents left, nft's listing at the monitor's
      // start outlasted the churn on a slow node (nftMonitorProbe); over no table it listens at
      // once, and reads the churn agent's first sync (which writes every chain anyway) as events.
      for (const family of NFT_TABLE_FAMILIES) await tryRun('nft', ['delete', 'table', family, NFT_TABLE_NAME], { netns: o.nodeNetns, timeoutMs: 60_000 });
      probe = await probeFor(o.mode, { pinDir: o.pinDir, netns: o.nodeNetns, initial: o.backendIps.length });
    }
    procs.push(await startInNetns({
      netns: o.nodeNetns,
      argv: [
        process.execPath, defaultAgentMain(), 'run', '--kubeconfig', kubeconfig, ...o.agentArgs,
        '--pin-dir', o.pinDir, '--node-name', 'node', '--min-sync-period', '0s', '--log-level', 'info',
      ],
      log: churnAgentLog(o),
      ready: logHasReady,
      timeoutMs: AGENT_START_TIMEOUT_MS,
    }));
    probe ??= await probeFor(o.mode, { pinDir: o.pinDir, netns: o.nodeNetns, initial: o.backendIps.length });
    // The first change is timed from its write: the probe must not still be reading the first sync.
    await probe.caughtUp?.();
    return await stream(o, api, probe, pool, total);
  } finally {
    probe?.close();
    await stopProcesses(procs.reverse(), 10_000);
    if (bridge !== null) {
      for (const s of bridge.sockets) s.destroy();
      await new Promise<void>((r) => bridge?.server.close(() => r()));
    }
    await api.stop();
    rmSync(workDir, { recursive: true, force: true });
  }
}

async function stream(o: ChurnOptions, api: FakeApiServer, probe: DataplaneProbe, pool: readonly number[], total: number): Promise<ChurnResult> {
  const endpointsNow = new Map<number, number>();
  const pending = new Map<number, Change>();
  const latencies: number[] = [];
  const looks: number[] = [];
  let written = 0;
  let firstWrite = 0;
  let lastWrite = 0;
  let next = 0;
  const interval = 1000 / o.perSecond;

  const writing = { done: false, failed: false };
  const writer = async (): Promise<void> => {
    const start = performance.now();
    for (let k = 0; k < total; k++) {
      if (o.signal.aborted || writing.failed) return;
      const due = start + k * interval;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      // The next Service of the pool with no change still in flight. When every one has one, the
      // change waits until one lands: a second change to a Service before its first landed left
      // the first untimed, and one that undid it could leave an agent nothing to write (the
      // nftables probe then waited for a rule that never came).
      let index: number | undefined;
      while (index === undefined) {
        for (let tries = 0; tries < pool.length && index === undefined; tries++) {
          const candidate = pool[next++ % pool.length] as number;
          if (!pending.has(candidate)) index = candidate;
        }
        if (index === undefined) {
          if (o.signal.aborted || writing.failed) return;
          await sleep(1);
        }
      }
      const now = endpointsNow.get(index) ?? o.backendIps.length;
      const endpoints = now === o.backendIps.length ? now - 1 : o.backendIps.length;
      api.createOrUpdate(benchEndpointSlice(index, o.services, o.backendIps.slice(0, endpoints), 'node') as unknown as KubeObject);
      const writtenAt = performance.now();
      endpointsNow.set(index, endpoints);
      pending.set(index, { index, writtenAt, endpoints });
      if (written === 0) firstWrite = writtenAt;
      lastWrite = writtenAt;
      written++;
    }
  };

  const watcher = async (): Promise<void> => {
    let deadline = Number.POSITIVE_INFINITY;
    while (!writing.done || pending.size > 0) {
      if (o.signal.aborted) return;
      if (writing.done && deadline === Number.POSITIVE_INFINITY) deadline = performance.now() + CHURN_SETTLE_TIMEOUT_MS;
      if (performance.now() > deadline) {
        const late = [...pending.values()].slice(0, 3).map((c) => `${serviceName(c.index)} → ${c.endpoints} endpoints`);
        // The agent's last lines (its syncs and their durations, or its errors) say which side lagged.
        const tail = (await logTail(churnAgentLog(o), 3)).join(' | ');
        throw new Error(
          `${o.mode}: ${pending.size} of ${written} endpoint changes were not in the dataplane ${CHURN_SETTLE_TIMEOUT_MS / 1000} s after the last one (${late.join(', ')}); agent log: ${tail}`,
        );
      }
      if (pending.size === 0) {
        await sleep(1);
        continue;
      }
      const asked = [...pending.values()];
      const lookStart = performance.now();
      const counts = await probe.endpoints(asked.map((c) => c.index));
      const lookEnd = performance.now();
      looks.push(lookEnd - lookStart);
      for (const c of asked) {
        if (counts.get(c.index) !== c.endpoints || pending.get(c.index) !== c) continue;
        const landed = probe.landedAt?.(c.index) ?? lookEnd;
        if (landed < c.writtenAt) continue;
        latencies.push(landed - c.writtenAt);
        pending.delete(c.index);
      }
      // Always a timer between looks, never only `await`: the bpf and nftables probes answer
      // without I/O (an already resolved promise), so a look that took 1 ms or more without one
      // looped on microtasks alone, and the event loop never ran again: not the writer's timers,
      // not the bridge carrying the API's events to the agent, not the reads of `nft monitor`
      // (blocked writing to us). The VM lab's nftables churn at 1,000 Services sat there 25 min
      // and more (the bench busy, nft monitor blocked, the agent sent no change); here, so did a
      // churn with hundreds of changes in flight.
      await sleep(1);
    }
  };

  // A failed look stops the writer too; its error is the cell's.
  const watching = watcher().then(
    () => null,
    (err: unknown) => {
      writing.failed = true;
      return err;
    },
  );
  try {
    await writer();
  } finally {
    writing.done = true;
  }
  const failure = await watching;
  if (failure !== null) throw failure;
  if (o.signal.aborted) throw new Error('aborted');
  const spanS = (lastWrite - firstWrite + interval) / 1000;
  return {
    latenciesMs: latencies,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    rate: written / spanS,
    resolutionMs: looks.length === 0 ? 0 : median(looks),
  };
}
