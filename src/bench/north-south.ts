/*
 * `vipr bench --north-south`: packets per second from outside the cluster through each dataplane
 * (north-south-plan.ts says what is sent where). Per mode a two-node lab and a cable from ext
 * straight to node1's NIC; its agent started on node1 until ready, then stopped (what it installed
 * stays). In rounds, every mode in turn (modes interleaved), every kind of traffic: a warm-up,
 * then `xdp-flood` for a fixed time, the sinks' counters and node1's receive thread's CPU time
 * read around it. Then, in the xdp lab, BPF_PROG_TEST_RUN of each XDP path on the maps its agent
 * programmed.
 *
 * Where the work runs: the generator (BPF_PROG_TEST_RUN with live frames, no skb) on --cpu; the
 * frames land in node1's NIC queue, whose NAPI runs in a thread of its own (threaded NAPI)
 * pinned to another CPU, the node's: XDP, or the skb, GRO, the stack and netfilter, up to the
 * send into the next veth, all run there, and nothing else of the lab does. The sinks (an XDP
 * drop where node1's output lands: the underlay port facing it, the backends' eth0) run in NAPI
 * threads of their own on --cpu. So delivered pps is what node1 sustains on one CPU, and the
 * receive thread's CPU time (/proc/<pid>/schedstat: exact) per delivered packet is its cost.
 * Labs are removed at the end, also on failure and on abort.
 */
import { closeSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeMaps, openPinnedMaps, requireRoot } from '../bpf/datapath.js';
import { run as runIn, nsenterArgv } from '../lab/exec.js';
import { AGENT_READY_MSG, defaultAgentMain, labClusterCidr, labDown, labUp } from '../lab/lab.js';
import { startInNetns, stopProcesses, type StartedProcess } from '../lab/processes.js';
import { planLab, type LabPlan, type NodePlan } from '../lab/topology.js';
import { ConfigError } from '../errors.js';
import { packageRoot } from '../paths.js';
import { run } from '../process/run.js';
import { NoIpvsError, detectIpvs } from '../modes/ipvs.js';
import { labExists } from './labs.js';
import { BenchAbortedError, environment, holdCpuDmaLatency } from './runner.js';
import { median, type BenchEnv } from './results.js';
import {
  EXT_NIC, FLOOD_SOURCES, FLOOD_SOURCE_IP, NEW_FLOW_PREFIX, NODE_NIC, NORTH_SOUTH_TRAFFIC, REFUSED_LB_IP, REFUSED_LB_PORT, TCP_NODE_PORT, UDP_NODE_PORT,
  XdpPathsRequestSchema, isXdpMode, northSouthAgentArgs, northSouthLabName, northSouthManifests, parseSchedstatRunNs, parseXdpDrops, trafficFigures, xdpAttachMode,
  type NorthSouthMode, type NorthSouthPlan, type NorthSouthRow, type NorthSouthSummary, type NorthSouthTraffic, type XdpPaths,
} from './north-south-plan.js';

export interface NorthSouthReport {
  env: BenchEnv;
  northSouth: NorthSouthSummary;
}

interface NsLab {
  mode: NorthSouthMode;
  name: string;
  plan: LabPlan;
  node1: NodePlan;
  node2: NodePlan;
  pinDir: string;
  stateDir: string;
  xdp: NorthSouthRow['xdp'];
  /** Where the sink counts: [netns, ifname] of the underlay port facing node1 and each backend's eth0. */
  sinks: Array<[string, string]>;
  /** node1's NIC's NAPI thread (set once the labs are up). */
  nodeThread: number | null;
}

interface FloodOutput {
  sent: number;
  elapsed_s: number;
  rate: number;
}

/** The generator and the XDP programs it and the sinks load: built by `make build`. */
function benchFile(name: string): string {
  const path = join(packageRoot(), 'bench', 'bin', name);
  if (!existsSync(path)) throw new ConfigError(`${path} is missing: run 'make build' (it needs clang-16 and libbpf-dev)`);
  return path;
}

function checkAbort(signal: AbortSignal): void {
  if (signal.aborted) throw new BenchAbortedError();
}

async function unavailableReason(mode: NorthSouthMode): Promise<string | null> {
  if (mode !== 'ipvs') return null;
  try {
    await detectIpvs();
    return null;
  } catch (err) {
    if (err instanceof NoIpvsError && err.missing === 'kernel') return 'kernel without IPVS';
    return err instanceof Error ? err.message : String(err);
  }
}

async function linkMac(netns: string, ifname: string): Promise<string> {
  const { stdout } = await runIn('ip', ['-j', 'link', 'show', 'dev', ifname], { netns });
  const mac = (JSON.parse(stdout) as Array<{ address?: string }>)[0]?.address;
  if (mac === undefined) throw new Error(`no MAC address on ${ifname} in ${netns}`);
  return mac;
}

/**
 * An XDP drop for what node1 sends a backend, where it lands (see bench/xdp_sink.bpf.c), in
 * native mode: the interface gets NAPI, so node1's native XDP_TX / XDP_REDIRECT reach it too.
 */
async function installSink(netns: string, ifname: string): Promise<void> {
  await runIn('ip', ['link', 'set', 'dev', ifname, 'xdpdrv', 'obj', benchFile('xdp_sink.bpf.o'), 'sec', 'xdp'], { netns });
}

async function sinkDrops(netns: string, ifname: string): Promise<number> {
  const { stdout } = await runIn('ethtool', ['-S', ifname], { netns });
  return parseXdpDrops(stdout);
}

/**
 * node1's NIC: a veth pair from ext straight to node1 (no bridge on the way: frames arrive as a
 * NIC's would), GRO on node1's end so it polls (NAPI) and takes xdp_frames in every mode, no
 * reverse-path filter (ext's address is routed via the underlay; the replies, of which there
 * are none, would go there).
 */
async function wireNic(plan: LabPlan, node1: NodePlan): Promise<void> {
  const ext = plan.external;
  if (!ext) throw new Error(`lab ${plan.name} has no external host`);
  await runIn('ip', ['link', 'add', 'name', EXT_NIC, 'netns', ext.netns, 'type', 'veth', 'peer', 'name', NODE_NIC, 'netns', node1.netns]);
  await runIn('ip', ['link', 'set', 'dev', EXT_NIC, 'up'], { netns: ext.netns });
  await runIn('ip', ['link', 'set', 'dev', NODE_NIC, 'up'], { netns: node1.netns });
  await runIn('ethtool', ['-K', NODE_NIC, 'gro', 'on'], { netns: node1.netns });
  await runIn('sysctl', ['-qw', 'net.ipv4.conf.all.rp_filter=0', `net.ipv4.conf.${NODE_NIC}.rp_filter=0`], { netns: node1.netns });
}

/** SCHED_FIFO priority of the NAPI threads: the kernel's own threaded-IRQ priority. */
const NAPI_THREAD_PRIORITY = 50;
/** SCHED_FIFO priority of the generator: the lowest real-time one. */
const GENERATOR_PRIORITY = 1;

function napiThreads(): Map<number, string> {
  const out = new Map<number, string>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const comm = readFileSync(`/proc/${d}/comm`, 'utf8').trim();
      if (comm.startsWith('napi/')) out.set(Number(d), comm);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * Gives `ifname`'s NAPI a thread of its own (threaded NAPI: the kernel names it
 * napi/<ifname>-<id>), pins it to `cpu` and puts it above every process (SCHED_FIFO), where a
 * NIC's softirq would be: on a busy machine a SCHED_OTHER thread waits behind other processes'
 * time slices while its 256-frame queue overflows, and the run would time the scheduler.
 * Returns its pid. The interface must poll already (GRO or an XDP program). Called for one
 * interface at a time: the new thread is the one that was not there before.
 */
async function pinNapiThread(netns: string, ifname: string, cpu: number): Promise<number> {
  const before = napiThreads();
  // sysfs shows a namespace's interfaces only to a mount made in it: `ip netns exec` makes one.
  await run('ip', ['netns', 'exec', netns, 'tee', `/sys/class/net/${ifname}/threaded`], { input: '1', timeoutMs: 30_000 });
  const fresh = [...napiThreads()].filter(([pid, comm]) => !before.has(pid) && comm.startsWith(`napi/${ifname}-`));
  const [thread] = fresh;
  if (fresh.length !== 1 || thread === undefined) {
    throw new Error(`threaded NAPI on ${ifname} in ${netns}: expected one new napi/${ifname}-* thread, found ${fresh.length}`);
  }
  await run('taskset', ['-p', '-c', String(cpu), String(thread[0])], { timeoutMs: 30_000 });
  await run('chrt', ['-f', '-p', String(NAPI_THREAD_PRIORITY), String(thread[0])], { timeoutMs: 30_000 });
  return thread[0];
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

async function nsLabUp(plan: NorthSouthPlan, mode: NorthSouthMode, manifestsDir: string): Promise<NsLab> {
  const name = northSouthLabName(plan.labPrefix, mode);
  if (await labExists(name)) await labDown(name);
  const labPlan = planLab({ name, backends: plan.backends, nodes: 2, ipFamily: 'ipv4' });
  const { state } = await labUp({ name, backends: plan.backends, nodes: 2, ipFamily: 'ipv4', manifestsDir: null, agent: false });
  const [node1, node2] = labPlan.nodes;
  const nodeState = state.nodes[0];
  if (!node1 || !node2 || !nodeState || !labPlan.external) throw new Error(`lab ${name} is not a two-node lab with an external host`);
  if (!labPlan.underlay) throw new Error(`lab ${name} has no underlay`);
  await wireNic(labPlan, node1);
  const sinks: Array<[string, string]> = [[labPlan.underlay.netns, node1.name], ...[...node1.backends, ...node2.backends].map((b): [string, string] => [b.netns, b.ifname])];
  for (const [netns, ifname] of sinks) await installSink(netns, ifname);
  const manifests = northSouthManifests(
    { name: node1.nodeName, backends: node1.backends.map((b) => b.ip) },
    { name: node2.nodeName, backends: node2.backends.map((b) => b.ip) },
  );
  const dir = join(manifestsDir, mode);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'north-south.json'), JSON.stringify(manifests));
  if (mode === 'xdp-redirect') {
    // node1 has not talked to its pods yet (on a real node the kubelet's probes have): the
    // neighbour entries it would have, from which the agent lists the pods for XDP.
    for (const be of node1.backends) {
      await runIn('ip', ['neigh', 'replace', be.ip, 'lladdr', await linkMac(be.netns, be.ifname), 'dev', be.nodeIfname, 'nud', 'reachable'], { netns: node1.netns });
    }
  }
  const argv = [
    process.execPath, defaultAgentMain(), 'run', ...northSouthAgentArgs(mode, node1.agentIfaces, NODE_NIC),
    '--manifests', dir, '--pin-dir', nodeState.pinDir, '--node-name', node1.nodeName, '--node-ip', node1.nodeIp as string,
    '--cluster-cidr', labClusterCidr('ipv4'), '--log-level', 'info',
  ];
  let agent: StartedProcess | null = null;
  try {
    // 10 s here; minutes on the VM lab's one emulated vCPU (libbpf, the verifier, node's start).
    agent = await startInNetns({ netns: node1.netns, argv, log: join(state.stateDir, `agent-north-south.log`), ready: agentIsReady, timeoutMs: 600_000 });
  } finally {
    // An idle agent's periodic resync must not land in a run: what it installed stays.
    if (agent !== null) await stopProcesses([agent], 10_000);
  }
  if (mode === 'xdp-redirect') {
    const maps = openPinnedMaps(nodeState.pinDir);
    try {
      const listed = new Set(maps.xdpPods.entries().map(([k]) => k.addr));
      const missing = node1.backends.filter((b) => !listed.has(b.ip)).map((b) => b.ip);
      if (missing.length > 0) throw new Error(`xdp-redirect: the agent did not list node1's pods ${missing.join(', ')} in vipr_xdp_pods_v1 (see ${join(state.stateDir, 'agent-north-south.log')})`);
    } finally {
      closeMaps(maps);
    }
  }
  const { stdout } = await runIn('ip', ['-j', 'link', 'show', 'dev', NODE_NIC], { netns: node1.netns });
  return { mode, name, plan: labPlan, node1, node2, pinDir: nodeState.pinDir, stateDir: state.stateDir, xdp: xdpAttachMode(stdout), sinks, nodeThread: null };
}

async function flood(lab: NsLab, traffic: NorthSouthTraffic, cpu: number, durationMs: number, signal: AbortSignal, src = FLOOD_SOURCE_IP): Promise<FloodOutput> {
  const ext = lab.plan.external;
  if (!ext) throw new Error(`lab ${lab.name} has no external host`);
  const sources = FLOOD_SOURCES[traffic];
  const args = [
    '-c', String(cpu), benchFile('xdp-flood'), '--obj', benchFile('xdp_flood.bpf.o'),
    '--ifname', EXT_NIC, '--src-mac', await linkMac(ext.netns, EXT_NIC), '--dst-mac', await linkMac(lab.node1.netns, NODE_NIC),
    '--src', src, '--dst', lab.node1.nodeIp as string, '--dport', String(traffic === 'udp' ? UDP_NODE_PORT : TCP_NODE_PORT), '--proto', traffic,
    '--src-ips', String(sources.srcIps), '--src-ports', String(sources.srcPorts), '--duration-ms', String(durationMs),
  ];
  // SCHED_FIFO, below the NAPI threads (the sinks on its CPU preempt it) and above every process:
  // a generator that waits behind other processes' time slices leaves node1 idle meanwhile.
  const [file, argv] = nsenterArgv(ext.netns, 'chrt', ['-f', String(GENERATOR_PRIORITY), 'taskset', ...args]);
  const { stdout } = await run(file, argv, { timeoutMs: durationMs + 30_000, signal });
  const line = stdout.trim().split('\n').pop() ?? '';
  const out = JSON.parse(line) as Partial<FloodOutput>;
  if (typeof out.sent !== 'number' || typeof out.elapsed_s !== 'number') throw new Error(`xdp-flood printed unexpected output: '${line.slice(0, 200)}'`);
  return out as FloodOutput;
}

async function delivered(lab: NsLab): Promise<number> {
  let n = 0;
  for (const [netns, ifname] of lab.sinks) n += await sinkDrops(netns, ifname);
  return n;
}

function threadRunNs(pid: number): number {
  return parseSchedstatRunNs(readFileSync(`/proc/${pid}/schedstat`, 'utf8'));
}

interface Sample {
  mode: NorthSouthMode;
  traffic: NorthSouthTraffic;
  xdp: NorthSouthRow['xdp'];
  sentPps: number;
  deliveredPps: number;
  nodeNsPerPacket: number;
  nodeBusy: number;
}

async function measureTraffic(lab: NsLab, traffic: NorthSouthTraffic, plan: NorthSouthPlan, signal: AbortSignal): Promise<Sample> {
  if (lab.nodeThread === null) throw new Error(`lab ${lab.name}: node1's NAPI thread is not set up`);
  // Warm-up from addresses the measured run does not use, so its "new" flows stay new.
  await flood(lab, traffic, plan.cpu, plan.durations.warmupMs, signal, `${NEW_FLOW_PREFIX}.180`);
  checkAbort(signal);
  const rx0 = await delivered(lab);
  const run0 = threadRunNs(lab.nodeThread);
  const out = await flood(lab, traffic, plan.cpu, plan.durations.trafficMs, signal);
  const run1 = threadRunNs(lab.nodeThread);
  const rx1 = await delivered(lab);
  const f = trafficFigures({ sent: out.sent, elapsedS: out.elapsed_s, delivered: rx1 - rx0, nodeRunNs: run1 - run0 });
  return { mode: lab.mode, traffic, xdp: lab.xdp, ...f };
}

async function measureXdpPaths(lab: NsLab, plan: NorthSouthPlan, signal: AbortSignal): Promise<XdpPaths> {
  const ext = lab.plan.external;
  if (!ext) throw new Error(`lab ${lab.name} has no external host`);
  const clientMac = await linkMac(ext.netns, ext.ifname);
  // The node has never sent to ext (the backends answer nothing): give it the neighbour entry
  // a reply to ext would have made, so the reverse-NAT path can go out by XDP.
  await runIn('ip', ['neigh', 'replace', ext.ip, 'lladdr', clientMac, 'dev', lab.node1.underlayIfname as string, 'nud', 'reachable'], { netns: lab.node1.netns });
  const req = XdpPathsRequestSchema.parse({
    pinDir: lab.pinDir,
    clientIp: ext.ip,
    nodeIp: lab.node1.nodeIp,
    nodeMac: await linkMac(lab.node1.netns, lab.node1.underlayIfname as string),
    clientMac,
    peerMac: await linkMac(lab.node2.netns, lab.node2.underlayIfname as string),
    newFlowPrefix: NEW_FLOW_PREFIX,
    udpNodePort: UDP_NODE_PORT,
    tcpNodePort: TCP_NODE_PORT,
    refusedLbIp: REFUSED_LB_IP,
    refusedLbPort: REFUSED_LB_PORT,
    repeat: plan.durations.repeat,
    newFlows: plan.durations.newFlows,
  });
  const worker = join(packageRoot(), 'dist', 'src', 'bench', 'xdp-paths-worker.js');
  const [file, args] = nsenterArgv(lab.node1.netns, 'taskset', ['-c', String(plan.cpu), process.execPath, worker, JSON.stringify(req)]);
  const { stdout } = await run(file, args, { timeoutMs: 300_000, signal, env: { ...process.env, VIPR_LOG_LEVEL: 'error' } });
  const line = stdout.trim().split('\n').pop() ?? '';
  const out = JSON.parse(line) as Partial<XdpPaths>;
  if (typeof out.overheadNs !== 'number' || !Array.isArray(out.paths)) throw new Error(`xdp-paths-worker printed unexpected output: '${line.slice(0, 200)}'`);
  return out as XdpPaths;
}

function summarizeRows(samples: readonly Sample[]): NorthSouthRow[] {
  const rows: NorthSouthRow[] = [];
  for (const s of samples) {
    if (rows.some((r) => r.mode === s.mode && r.traffic === s.traffic)) continue;
    const g = samples.filter((x) => x.mode === s.mode && x.traffic === s.traffic);
    const m = (pick: (x: Sample) => number): number => Math.round(median(g.map(pick)));
    rows.push({
      mode: s.mode, traffic: s.traffic, xdp: s.xdp,
      sentPps: m((x) => x.sentPps), deliveredPps: m((x) => x.deliveredPps),
      nodeNsPerPacket: m((x) => x.nodeNsPerPacket), nodeBusy: Math.round(median(g.map((x) => x.nodeBusy)) * 100) / 100,
      rounds: g.length, deliveredPpsByRound: g.map((x) => Math.round(x.deliveredPps)),
      nodeNsPerPacketByRound: g.map((x) => Math.round(x.nodeNsPerPacket)),
    });
  }
  return rows;
}

export async function runNorthSouth(o: { plan: NorthSouthPlan; signal: AbortSignal; onProgress: (line: string) => void; command: string }): Promise<NorthSouthReport> {
  const started = Date.now();
  const { plan, signal } = o;
  requireRoot('vipr bench --north-south');
  for (const f of ['xdp-flood', 'xdp_flood.bpf.o', 'xdp_sink.bpf.o']) benchFile(f);
  // node1 on a CPU of its own; the generator and the sinks on --cpu (one CPU: all on it).
  const other = cpus().findIndex((_, i) => i !== plan.cpu);
  const nodeCpu = other === -1 ? plan.cpu : other;
  const unavailable: NorthSouthSummary['unavailable'] = [];
  const modes: NorthSouthMode[] = [];
  for (const m of plan.modes) {
    const reason = await unavailableReason(m);
    if (reason === null) modes.push(m);
    else {
      unavailable.push({ mode: m, reason });
      o.onProgress(`${m}: unavailable: ${reason}`);
    }
  }
  const dma = holdCpuDmaLatency();
  const env = await environment(plan, o.command, dma.status);
  const workDir = mkdtempSync(join(tmpdir(), 'vipr-bench-ns-'));
  const labs: NsLab[] = [];
  const samples: Sample[] = [];
  let xdpPaths: XdpPaths | null = null;
  try {
    // The labs come up side by side (each is ~40 commands and an agent start, mostly waiting);
    // on one CPU (the VM lab's guest) one after the other: there the agents' starts are the work.
    o.onProgress(`labs for ${modes.join(', ')}: up`);
    const ups: Array<PromiseSettledResult<NsLab>> = [];
    if (cpus().length > 1) ups.push(...(await Promise.allSettled(modes.map((mode) => nsLabUp(plan, mode, workDir)))));
    else {
      for (const mode of modes) {
        const [up] = await Promise.allSettled([nsLabUp(plan, mode, workDir)]);
        if (up !== undefined) ups.push(up);
        if (up?.status === 'rejected') break;
      }
    }
    for (const up of ups) if (up.status === 'fulfilled') labs.push(up.value);
    const failed = ups.find((up): up is PromiseRejectedResult => up.status === 'rejected');
    if (failed) throw failed.reason;
    checkAbort(signal);
    // One interface at a time: each new NAPI thread is found as the one that was not there before.
    for (const lab of labs) {
      lab.nodeThread = await pinNapiThread(lab.node1.netns, NODE_NIC, nodeCpu);
      for (const [netns, ifname] of lab.sinks) await pinNapiThread(netns, ifname, plan.cpu);
    }
    o.onProgress(`node1's NIC polled on CPU ${nodeCpu}; the generator and the sinks on CPU ${plan.cpu}`);
    for (const lab of labs) if (isXdpMode(lab.mode)) o.onProgress(`${lab.mode}: attached ${lab.xdp} on ${NODE_NIC}`);
    for (let round = 1; round <= plan.rounds; round++) {
      for (const lab of labs) {
        for (const traffic of NORTH_SOUTH_TRAFFIC) {
          checkAbort(signal);
          const s = await measureTraffic(lab, traffic, plan, signal);
          samples.push(s);
          o.onProgress(
            `[round ${round}/${plan.rounds}] ${lab.mode} ${traffic}: sent ${Math.round(s.sentPps).toLocaleString('en-US')}/s, ` +
              `delivered ${Math.round(s.deliveredPps).toLocaleString('en-US')}/s, node ${Math.round(s.nodeNsPerPacket)} ns/packet ` +
              `(busy ${Math.round(s.nodeBusy * 100)}%)`,
          );
        }
      }
    }
    const xdpLab = labs.find((l) => l.mode === 'xdp');
    if (xdpLab) {
      checkAbort(signal);
      xdpPaths = await measureXdpPaths(xdpLab, plan, signal);
      for (const p of xdpPaths.paths) {
        o.onProgress(`BPF_PROG_TEST_RUN ${p.path}: ${p.ns} ns warm (mean of ${p.warmRuns} runs, harness taken off), ${p.coldNs} ns cold (median of ${p.runs} single runs less ${xdpPaths.overheadNs} ns of timing); ${p.verdict}`);
      }
    }
  } catch (err) {
    if (signal.aborted) throw new BenchAbortedError();
    throw err;
  } finally {
    if (dma.fd !== null) closeSync(dma.fd);
    for (const mode of plan.modes) {
      const name = northSouthLabName(plan.labPrefix, mode);
      if (labs.some((l) => l.name === name) || (await labExists(name))) {
        const res = await labDown(name);
        for (const f of res.failures) o.onProgress(`warning: ${f}`);
      }
    }
    rmSync(workDir, { recursive: true, force: true });
  }
  env.wallSeconds = Math.round((Date.now() - started) / 1000);
  env.loadAverage.end = loadavg().map((v) => Math.round(v * 100) / 100);
  const rows = summarizeRows(samples);
  const overIptables = (mode: NorthSouthMode): Partial<Record<NorthSouthTraffic, number>> => {
    const out: Partial<Record<NorthSouthTraffic, number>> = {};
    for (const t of NORTH_SOUTH_TRAFFIC) {
      const x = rows.find((r) => r.mode === mode && r.traffic === t);
      const i = rows.find((r) => r.mode === 'iptables' && r.traffic === t);
      if (x && i && i.deliveredPps > 0) out[t] = Math.round((x.deliveredPps / i.deliveredPps) * 100) / 100;
    }
    return out;
  };
  return { env, northSouth: { rows, nodeCpu, xdpPaths, unavailable, xdpOverIptables: overIptables('xdp'), xdpRedirectOverIptables: overIptables('xdp-redirect') } };
}
