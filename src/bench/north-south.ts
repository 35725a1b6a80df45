/*
 * `vipr bench --north-south`: packets per second from outside the cluster through each dataplane
 * (north-south-plan.ts says what is sent where). Per mode a two-node lab; its agent started on
 * node1 until ready, then stopped (what it installed stays). In rounds, every mode in turn (modes
 * interleaved), every kind of traffic: a warm-up, then `flood` pinned to one CPU in ext for a
 * fixed time, the backends' rx counters and that CPU's /proc/stat times read around it. Then,
 * in the xdp lab, BPF_PROG_TEST_RUN of each XDP path on the maps its agent programmed.
 *
 * On veth every hop runs in softirq on the sending CPU (the generator's sendmmsg carries the
 * frame through the underlay bridge, node1 and to the backend before it returns), so the
 * generator and the path share that CPU: delivered pps is what the pair sustains, and the CPU
 * figures per packet split it (softirq: bridge + node + the backend's drop; the rest: the sends).
 * Labs are removed at the end, also on failure and on abort.
 */
import { closeSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireRoot } from '../bpf/datapath.js';
import { run as runIn, nsenterArgv } from '../lab/exec.js';
import { AGENT_READY_MSG, defaultAgentMain, labClusterCidr, labDown, labUp } from '../lab/lab.js';
import { startInNetns, stopProcesses, type StartedProcess } from '../lab/processes.js';
import { planLab, type LabPlan, type NodePlan } from '../lab/topology.js';
import { benchBinary, ensureBenchProgram } from '../lab/traffic-programs.js';
import { packageRoot } from '../paths.js';
import { run } from '../process/run.js';
import { NoIpvsError, detectIpvs } from '../modes/ipvs.js';
import { labExists } from './labs.js';
import { BenchAbortedError, environment, holdCpuDmaLatency } from './runner.js';
import { median, type BenchEnv } from './results.js';
import {
  FLOOD_SOURCES, FLOOD_SOURCE_IP, NEW_FLOW_PREFIX, NORTH_SOUTH_TRAFFIC, REFUSED_LB_IP, REFUSED_LB_PORT, TCP_NODE_PORT, UDP_NODE_PORT,
  XdpPathsRequestSchema, northSouthAgentArgs, northSouthLabName, northSouthManifests, parseCpuTimes, trafficFigures, xdpAttachMode,
  type CpuTimes, type NorthSouthMode, type NorthSouthPlan, type NorthSouthRow, type NorthSouthSummary, type NorthSouthTraffic, type XdpPaths,
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
}

interface FloodOutput {
  sent: number;
  send_errors: number;
  elapsed_s: number;
  rate: number;
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

async function rxPackets(netns: string, ifname: string): Promise<number> {
  const { stdout } = await runIn('ip', ['-j', '-s', 'link', 'show', 'dev', ifname], { netns });
  const n = (JSON.parse(stdout) as Array<{ stats64?: { rx?: { packets?: number } } }>)[0]?.stats64?.rx?.packets;
  if (n === undefined) throw new Error(`no rx counter on ${ifname} in ${netns}`);
  return n;
}

/** Every backend takes what reaches it and drops it right there (ARP and the rest pass). */
async function installSink(netns: string, ifname: string): Promise<void> {
  const rules = `table netdev vipr_ns_sink {
  chain ingress {
    type filter hook ingress device "${ifname}" priority 0; policy accept;
    meta protocol ip meta l4proto { tcp, udp } drop
  }
}
`;
  const [file, args] = nsenterArgv(netns, 'nft', ['-f', '-']);
  await run(file, args, { input: rules, timeoutMs: 30_000 });
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
  for (const be of [...node1.backends, ...node2.backends]) await installSink(be.netns, be.ifname);
  const manifests = northSouthManifests(
    { name: node1.nodeName, backends: node1.backends.map((b) => b.ip) },
    { name: node2.nodeName, backends: node2.backends.map((b) => b.ip) },
  );
  const dir = join(manifestsDir, mode);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'north-south.json'), JSON.stringify(manifests));
  const argv = [
    process.execPath, defaultAgentMain(), 'run', ...northSouthAgentArgs(mode, node1.agentIfaces, node1.underlayIfname as string),
    '--manifests', dir, '--pin-dir', nodeState.pinDir, '--node-name', node1.nodeName, '--node-ip', node1.nodeIp as string,
    '--cluster-cidr', labClusterCidr('ipv4'), '--log-level', 'info',
  ];
  let agent: StartedProcess | null = null;
  try {
    agent = await startInNetns({ netns: node1.netns, argv, log: join(state.stateDir, `agent-north-south.log`), ready: agentIsReady, timeoutMs: 120_000 });
  } finally {
    // An idle agent's periodic resync must not land in a run: what it installed stays.
    if (agent !== null) await stopProcesses([agent], 10_000);
  }
  const { stdout } = await runIn('ip', ['-j', 'link', 'show', 'dev', node1.underlayIfname as string], { netns: node1.netns });
  return { mode, name, plan: labPlan, node1, node2, pinDir: nodeState.pinDir, stateDir: state.stateDir, xdp: xdpAttachMode(stdout) };
}

async function flood(lab: NsLab, traffic: NorthSouthTraffic, cpu: number, durationMs: number, signal: AbortSignal, src = FLOOD_SOURCE_IP): Promise<FloodOutput> {
  const ext = lab.plan.external;
  if (!ext) throw new Error(`lab ${lab.name} has no external host`);
  const sources = FLOOD_SOURCES[traffic];
  const args = [
    '-c', String(cpu), benchBinary('flood'),
    '--ifname', ext.ifname, '--src-mac', await linkMac(ext.netns, ext.ifname), '--dst-mac', await linkMac(lab.node1.netns, lab.node1.underlayIfname as string),
    '--src', src, '--dst', lab.node1.nodeIp as string, '--dport', String(traffic === 'udp' ? UDP_NODE_PORT : TCP_NODE_PORT), '--proto', traffic,
    '--src-ips', String(sources.srcIps), '--src-ports', String(sources.srcPorts), '--duration-ms', String(durationMs),
  ];
  const [file, argv] = nsenterArgv(ext.netns, 'taskset', args);
  const { stdout } = await run(file, argv, { timeoutMs: durationMs + 30_000, signal });
  const line = stdout.trim().split('\n').pop() ?? '';
  const out = JSON.parse(line) as Partial<FloodOutput>;
  if (typeof out.sent !== 'number' || typeof out.elapsed_s !== 'number') throw new Error(`flood printed unexpected output: '${line.slice(0, 200)}'`);
  return out as FloodOutput;
}

async function delivered(lab: NsLab): Promise<number> {
  let n = 0;
  for (const be of [...lab.node1.backends, ...lab.node2.backends]) n += await rxPackets(be.netns, be.ifname);
  return n;
}

const cpuTimes = (cpu: number): CpuTimes => parseCpuTimes(readFileSync('/proc/stat', 'utf8'), cpu);

interface Sample {
  mode: NorthSouthMode;
  traffic: NorthSouthTraffic;
  xdp: NorthSouthRow['xdp'];
  sentPps: number;
  deliveredPps: number;
  softirqNsPerPacket: number;
  cpuNsPerPacket: number;
}

async function measureTraffic(lab: NsLab, traffic: NorthSouthTraffic, plan: NorthSouthPlan, signal: AbortSignal): Promise<Sample> {
  // Warm-up from addresses the measured run does not use, so its "new" flows stay new.
  await flood(lab, traffic, plan.cpu, plan.durations.warmupMs, signal, `${NEW_FLOW_PREFIX}.180`);
  checkAbort(signal);
  const rx0 = await delivered(lab);
  const cpu0 = cpuTimes(plan.cpu);
  const out = await flood(lab, traffic, plan.cpu, plan.durations.trafficMs, signal);
  const cpu1 = cpuTimes(plan.cpu);
  const rx1 = await delivered(lab);
  const f = trafficFigures({ sent: out.sent, elapsedS: out.elapsed_s, delivered: rx1 - rx0, before: cpu0, after: cpu1 });
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
      softirqNsPerPacket: m((x) => x.softirqNsPerPacket), cpuNsPerPacket: m((x) => x.cpuNsPerPacket),
      rounds: g.length, deliveredPpsByRound: g.map((x) => Math.round(x.deliveredPps)),
    });
  }
  return rows;
}

export async function runNorthSouth(o: { plan: NorthSouthPlan; signal: AbortSignal; onProgress: (line: string) => void; command: string }): Promise<NorthSouthReport> {
  const started = Date.now();
  const { plan, signal } = o;
  requireRoot('vipr bench --north-south');
  await ensureBenchProgram('flood');
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
    // The labs come up side by side (each is ~40 commands and an agent start, mostly waiting).
    o.onProgress(`labs for ${modes.join(', ')}: up`);
    const ups = await Promise.allSettled(modes.map((mode) => nsLabUp(plan, mode, workDir)));
    for (const up of ups) if (up.status === 'fulfilled') labs.push(up.value);
    const failed = ups.find((up): up is PromiseRejectedResult => up.status === 'rejected');
    if (failed) throw failed.reason;
    checkAbort(signal);
    for (const lab of labs) if (lab.mode === 'xdp') o.onProgress(`xdp: attached ${lab.xdp} on ${lab.node1.underlayIfname}`);
    for (let round = 1; round <= plan.rounds; round++) {
      for (const lab of labs) {
        for (const traffic of NORTH_SOUTH_TRAFFIC) {
          checkAbort(signal);
          const s = await measureTraffic(lab, traffic, plan, signal);
          samples.push(s);
          o.onProgress(
            `[round ${round}/${plan.rounds}] ${lab.mode} ${traffic}: sent ${Math.round(s.sentPps).toLocaleString('en-US')}/s, ` +
              `delivered ${Math.round(s.deliveredPps).toLocaleString('en-US')}/s, softirq ${Math.round(s.softirqNsPerPacket)} ns/packet, ` +
              `CPU ${Math.round(s.cpuNsPerPacket)} ns/packet`,
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
  const xdpOverIptables: NorthSouthSummary['xdpOverIptables'] = {};
  for (const t of NORTH_SOUTH_TRAFFIC) {
    const x = rows.find((r) => r.mode === 'xdp' && r.traffic === t);
    const i = rows.find((r) => r.mode === 'iptables' && r.traffic === t);
    if (x && i && i.deliveredPps > 0) xdpOverIptables[t] = Math.round((x.deliveredPps / i.deliveredPps) * 100) / 100;
  }
  return { env, northSouth: { rows, xdpPaths, unavailable, xdpOverIptables } };
}
