/*
 * The lab's lifecycle: `up` (namespaces, links, servers, manifests, an agent per node), `down`
 * (the reverse, best effort, from the state file or, failing that, from the namespace names),
 * `status` and host lookup for `exec`. The CLI (src/cli/lab.ts) only parses options and prints.
 */
import { existsSync, statfsSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../errors.js';
import { run } from './exec.js';
import { createNodeCgroups, labCgroupPids, removeLabCgroups } from './cgroups.js';
import { buildNetwork, deleteNetns, listNetns, netnsAddresses, netnsExists, netnsPids } from './network.js';
import { summarizeManifestDir, writeDefaultManifests, type ServiceSummary } from './manifests.js';
import {
  isRunning,
  ProcessStartError,
  processStartTime,
  startInNetns,
  stopProcesses,
  type StartedProcess,
} from './processes.js';
import {
  BPFFS_ROOT,
  defaultPinDir,
  labStateDir,
  pinDirOwners,
  readLabState,
  writeLabState,
  type LabHostState,
  type LabNodeState,
  type LabProcessState,
  type LabState,
  type LabUnderlayState,
} from './state.js';
import {
  CLUSTER_CIDR,
  CLUSTER_CIDR6,
  DEFAULT_LAB_IP_FAMILY,
  labFamilies,
  labNetnsPattern,
  nodePinDir,
  planHosts,
  planLab,
  UNDERLAY_HOST,
  type HostRole,
  type LabIpFamily,
  type LabPlan,
  type NodePlan,
} from './topology.js';
import { AgentStartError, LabExistsError, LabNotUpError, hostCgroup, loadLabState } from './hosts.js';

// The light half (lab state, where hosts are, the lab's errors) lives in hosts.ts.
export { AgentStartError, LabExistsError, LabNotUpError, hostCgroup, labHostNetns, labHostPlacement, loadLabState } from './hosts.js';

/** The repository root: the first directory above this module holding a package.json. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
}

export function defaultAgentMain(): string {
  return join(repoRoot(), 'dist', 'src', 'cli', 'main.js');
}

export function backendServerScript(): string {
  return join(repoRoot(), 'dist', 'src', 'lab', 'backend-server.js');
}

export interface LabUpOptions {
  name: string;
  /** Backends per node. */
  backends: number;
  /** Default 1: the one-node lab (`<name>-node`); more: `<name>-node1`... on an underlay. */
  nodes?: number;
  /** The address families of the lab's links (default dual). */
  ipFamily?: LabIpFamily;
  /** A manifests directory to use as is; null = write the default manifests into the state dir. */
  manifestsDir: string | null;
  agent: boolean;
  /** The script started as `<node> <agentMain> run ...`; defaults to dist/src/cli/main.js. */
  agentMain?: string;
  /** How long the agent may take to log AGENT_READY_MSG. */
  agentTimeoutMs?: number;
  /** Progress lines for the user. */
  onProgress?: (line: string) => void;
}

export interface LabUpResult {
  state: LabState;
}

/**
 * What `vipr run` logs (pino JSON, `msg`) once the maps hold the desired state and the programs
 * are attached: from then on the lab's traffic goes through it. A contract with src/cli/run.ts.
 */
export const AGENT_READY_MSG = 'agent running';

function agentReady(log: string): boolean {
  return log.split('\n').some((line) => {
    if (!line.startsWith('{')) return false;
    try {
      return (JSON.parse(line) as { msg?: unknown }).msg === AGENT_READY_MSG;
    } catch {
      return false;
    }
  });
}

/**
 * Every pod CIDR of the lab (10.244.<node>.0/24, fd00:10:244:<node>::/64) lies inside one of these:
 * `--cluster-cidr` in kube-proxy's dual-stack form (IPv4 first, comma-separated).
 */
export function labClusterCidr(ipFamily: LabIpFamily): string {
  return labFamilies(ipFamily)
    .map((f) => (f === 'IPv4' ? CLUSTER_CIDR : CLUSTER_CIDR6))
    .join(',');
}

/**
 * The command line of `node`'s agent (default: the first node), inside the node's namespace (a
 * contract with `vipr run`). The lab's EndpointSlices name each pod's node, so Local traffic
 * policies depend on `--node-name`; multi-node labs also give the node IP of each family
 * (NodePort, SNAT; a family without one is not served).
 */
export function agentArgv(state: LabState, agentMain: string, node: LabNodeState | undefined = state.nodes[0]): string[] {
  if (!node) throw new Error(`lab '${state.name}' has no node`);
  const argv = [process.execPath, agentMain, 'run', '--manifests', state.manifestsDir];
  for (const iface of node.agentIfaces) argv.push('--iface', iface);
  argv.push('--pin-dir', node.pinDir, '--node-name', node.nodeName);
  // Pods are internal traffic (externalTrafficPolicy Local short-circuits them to every endpoint).
  argv.push('--cluster-cidr', labClusterCidr(state.ipFamily));
  if (node.nodeIps.length > 0) {
    for (const ip of node.nodeIps) argv.push('--node-ip', ip);
    // The underlay stands for the NIC: XDP balances what arrives there from outside.
    argv.push('--xdp', node.agentIfaces[0] as string);
  }
  // Socket LB serves the node's own processes and pods: they run in this cgroup.
  if (node.cgroup !== undefined) argv.push('--cgroup-root', node.cgroup);
  argv.push('--log-level', 'info');
  return argv;
}

function hostStates(plan: LabPlan): LabHostState[] {
  const first = plan.nodes[0];
  const hosts: LabHostState[] = [
    { name: plan.client.name, role: 'client', netns: plan.client.netns, ...(first ? { node: first.name } : {}), interfaces: [] },
  ];
  for (const node of plan.nodes) {
    hosts.push({ name: node.name, role: 'node', netns: node.netns, interfaces: [] });
    for (const be of node.backends) {
      hosts.push({ name: be.name, role: 'backend', netns: be.netns, node: node.name, interfaces: [] });
    }
  }
  if (plan.external) hosts.push({ name: plan.external.name, role: 'external', netns: plan.external.netns, interfaces: [] });
  const byNetns = new Map(hosts.map((h) => [h.netns, h]));
  for (const link of plan.links) {
    for (const end of [link.local, link.peer]) {
      byNetns.get(end.netns)?.interfaces.push({ ifname: end.ifname, addresses: end.addresses });
    }
  }
  return hosts;
}

/** What the state keeps of each node: pin dir and log per agent, so two agents never share one. */
function nodeStates(plan: LabPlan, stateDir: string): LabNodeState[] {
  const single = plan.nodes.length === 1;
  return plan.nodes.map((node) => ({
    host: node.name,
    nodeName: node.nodeName,
    netns: node.netns,
    nodeIp: node.nodeIp,
    nodeIps: node.nodeIps,
    podCidr: node.podCidr,
    podCidrs: node.podCidrs,
    pinDir: single ? defaultPinDir(plan.name) : nodePinDir(plan.name, node.name),
    agentIfaces: node.agentIfaces,
    agentLog: join(stateDir, single ? 'agent.log' : `agent-${node.name}.log`),
  }));
}

function underlayState(plan: LabPlan): LabUnderlayState | null {
  return plan.underlay
    ? { netns: plan.underlay.netns, bridge: plan.underlay.bridge, cidr: plan.underlay.cidr, cidrs: plan.underlay.cidrs }
    : null;
}

const BPF_FS_MAGIC = 0xcafe4a11;

/** The agent pins under /sys/fs/bpf: mount the BPF filesystem there when nothing is mounted yet. */
async function ensureBpffs(): Promise<void> {
  if (Number(statfsSync(BPFFS_ROOT).type) === BPF_FS_MAGIC) return;
  await run('mount', ['-t', 'bpf', 'bpf', BPFFS_ROOT]);
}

function isLabLeftover(name: string, all: string[]): string[] {
  const pattern = labNetnsPattern(name);
  return all.filter((ns) => pattern.test(ns));
}

function toProcessState(kind: LabProcessState['kind'], host: string, p: StartedProcess, log: string): LabProcessState {
  return { kind, host, pid: p.pid, startTime: p.startTime, argv: p.argv, log };
}

async function startServers(state: LabState, nodes: readonly NodePlan[], save: () => Promise<void>): Promise<void> {
  const script = backendServerScript();
  for (const be of nodes.flatMap((n) => n.backends)) {
    const log = join(state.stateDir, `${be.name}.log`);
    try {
      const p = await startInNetns({
        netns: be.netns,
        argv: [process.execPath, script, '--name', be.name, '--families', labFamilies(state.ipFamily).map((f) => f.toLowerCase()).join(',')],
        cgroup: hostCgroup(state, be.name),
        log,
        ready: (text) => text.includes(`backend-server ${be.name}: listening`),
        // A Node process's start: a second here, over 10 s on the VM lab's one emulated vCPU
        // with five labs coming up side by side (vipr bench --north-south in the guest).
        timeoutMs: 120_000,
      });
      state.processes.push(toProcessState('server', be.name, p, log));
    } catch (err) {
      if (err instanceof ProcessStartError && err.started) {
        state.processes.push(toProcessState('server', be.name, err.started, log));
      }
      throw err;
    } finally {
      await save();
    }
  }
}

async function startAgent(
  state: LabState,
  node: LabNodeState,
  opts: Pick<LabUpOptions, 'agentMain' | 'agentTimeoutMs'>,
  save: () => Promise<void>,
): Promise<void> {
  const main = opts.agentMain ?? defaultAgentMain();
  if (!existsSync(main)) {
    throw new AgentStartError(`agent not found at ${main}: build first (npx tsc -p tsconfig.json), or use --no-agent`);
  }
  await ensureBpffs();
  await mkdir(node.pinDir, { recursive: true });
  const log = node.agentLog;
  const which = state.nodes.length === 1 ? 'the agent' : `the agent of ${node.host}`;
  try {
    const p = await startInNetns({
      netns: node.netns,
      argv: agentArgv(state, main, node),
      cgroup: node.cgroup ?? null,
      log,
      ready: agentReady,
      timeoutMs: opts.agentTimeoutMs ?? 30_000,
    });
    state.processes.push(toProcessState('agent', node.host, p, log));
  } catch (err) {
    if (err instanceof ProcessStartError) {
      const down = `'vipr lab down${state.name === 'vipr' ? '' : ` --name ${state.name}`}' removes it`;
      if (err.started) {
        state.processes.push(toProcessState('agent', node.host, err.started, log));
        throw new AgentStartError(`${err.message}; ${which} still runs (pid ${err.started.pid}) and the rest of the lab is up; ${down}`);
      }
      throw new AgentStartError(`${err.message}; the lab is up without ${which}, ${down}`);
    }
    throw err;
  } finally {
    await save();
  }
}

function findNode(state: LabState, host: string): LabNodeState {
  const node = state.nodes.find((n) => n.host === host || n.nodeName === host);
  if (!node) {
    throw new ConfigError(`no node '${host}' in lab '${state.name}'; nodes: ${state.nodes.map((n) => n.host).join(', ')}`);
  }
  return node;
}

export interface RestartAgentOptions {
  /** SIGKILL (as a crash would) instead of SIGTERM (the agent leaves programs and maps in place). */
  kill: boolean;
  agentMain?: string;
  /** The node whose agent to restart; default every node's. */
  node?: string;
}

/**
 * Stops agents and starts new ones, which take over the pinned state (so a restart moves no
 * connection): `opts.node`'s, or every node's. Returns the new pid per node host name.
 */
export async function labRestartAgents(name: string, opts: RestartAgentOptions): Promise<{ node: string; pid: number }[]> {
  const state = await loadLabState(name);
  if (!state.agentEnabled) throw new ConfigError(`lab '${name}' runs without an agent (--no-agent)`);
  const nodes = opts.node === undefined ? state.nodes : [findNode(state, opts.node)];
  const restarted: { node: string; pid: number }[] = [];
  for (const node of nodes) {
    const old = state.processes.filter((p) => p.kind === 'agent' && p.host === node.host);
    await stopProcesses(old, 5000, opts.kill ? 'SIGKILL' : 'SIGTERM');
    state.processes = state.processes.filter((p) => !(p.kind === 'agent' && p.host === node.host));
    await writeLabState(state);
    const agentMain = opts.agentMain ?? state.agentMain ?? old[0]?.argv.find((a) => a.endsWith('main.js')) ?? defaultAgentMain();
    await startAgent(state, node, { agentMain }, () => writeLabState(state));
    const started = state.processes.find((p) => p.kind === 'agent' && p.host === node.host);
    if (!started) throw new AgentStartError(`the new agent of ${node.host} was not recorded`);
    restarted.push({ node: node.host, pid: started.pid });
  }
  return restarted;
}

/**
 * Stops one agent (SIGTERM: it leaves programs and maps in place; SIGKILL: as a crash would) and
 * starts a new one, which takes over the pinned state. The lab's only agent, or `opts.node`'s
 * (required when the lab has several nodes). Returns the new pid.
 */
export async function labRestartAgent(name: string, opts: RestartAgentOptions): Promise<number> {
  if (opts.node === undefined) {
    const state = await loadLabState(name);
    if (state.nodes.length > 1) {
      throw new ConfigError(`lab '${name}' has ${state.nodes.length} nodes: say which agent (${state.nodes.map((n) => n.host).join(', ')})`);
    }
  }
  const [restarted] = await labRestartAgents(name, opts);
  if (!restarted) throw new AgentStartError('no agent was restarted');
  return restarted.pid;
}

/**
 * Creates the lab. A failure while building the network or starting servers removes everything
 * created so far; a failure of the agent alone leaves the lab up (AgentStartError).
 */
export async function labUp(opts: LabUpOptions): Promise<LabUpResult> {
  const progress = opts.onProgress ?? (() => undefined);
  const ipFamily = opts.ipFamily ?? DEFAULT_LAB_IP_FAMILY;
  const plan = planLab({ name: opts.name, backends: opts.backends, nodes: opts.nodes ?? 1, ipFamily });
  const node = plan.nodes[0];
  if (!node) throw new Error('lab plan has no node');

  const existing = await readLabState(opts.name);
  if (existing.kind !== 'missing') throw new LabExistsError(opts.name);
  const leftovers = isLabLeftover(opts.name, await listNetns());
  if (leftovers.length > 0) throw new LabExistsError(opts.name, leftovers);
  if (!existsSync(backendServerScript())) {
    throw new ConfigError(`backend server not found at ${backendServerScript()}: build first (npx tsc -p tsconfig.json)`);
  }
  let manifestsDir: string;
  if (opts.manifestsDir !== null) {
    manifestsDir = resolve(opts.manifestsDir);
    if (!existsSync(manifestsDir)) throw new ConfigError(`manifests directory ${manifestsDir} does not exist`);
  } else {
    manifestsDir = join(labStateDir(opts.name), 'manifests');
  }
  const stateDir = labStateDir(opts.name);
  const nodes = nodeStates(plan, stateDir);
  const owners = await pinDirOwners(nodes.map((n) => n.pinDir), opts.name);
  for (const [dir, lab] of owners) {
    throw new ConfigError(`pin dir ${dir} belongs to lab '${lab}'; choose another --name (or take '${lab}' down)`);
  }

  const state: LabState = {
    version: 1,
    name: opts.name,
    ipFamily,
    phase: 'creating',
    createdAt: new Date().toISOString(),
    backends: opts.backends,
    stateDir,
    pinDir: nodes[0]?.pinDir ?? defaultPinDir(opts.name),
    manifestsDir,
    defaultManifests: opts.manifestsDir === null,
    agentEnabled: opts.agent,
    ...(opts.agent ? { agentMain: resolve(opts.agentMain ?? defaultAgentMain()) } : {}),
    namespaces: [],
    hosts: hostStates(plan),
    agentIfaces: node.agentIfaces,
    nodes,
    underlay: underlayState(plan),
    processes: [],
  };
  const save = (): Promise<void> => writeLabState(state);
  await save();

  try {
    const namespaces = [...planHosts(plan).map((h) => h.netns), ...(plan.underlay ? [plan.underlay.netns] : [])];
    progress(`creating namespaces ${namespaces.join(', ')}`);
    await buildNetwork(plan, async (ns) => {
      state.namespaces.push(ns);
      await save();
    });
    const cgroups = createNodeCgroups(opts.name, state.nodes.map((n) => n.host));
    for (const n of state.nodes) {
      const cg = cgroups.get(n.host);
      if (cg !== undefined) n.cgroup = cg;
    }
    await save();
    progress(cgroups.size > 0 ? `created cgroups ${[...cgroups.values()].join(', ')}` : 'no cgroup v2 mount: the nodes get no cgroup (socket LB off)');
    if (state.defaultManifests) {
      await writeDefaultManifests(manifestsDir, plan.nodes);
      progress(`wrote default manifests to ${manifestsDir}`);
    }
    progress(`starting ${plan.nodes.reduce((n, p) => n + p.backends.length, 0)} backend servers`);
    await startServers(state, plan.nodes, save);
  } catch (err) {
    progress(`up failed, removing what was created`);
    await labDown(opts.name);
    throw err;
  }
  if (opts.agent) {
    try {
      for (const n of state.nodes) {
        progress(`starting the agent in ${n.netns}`);
        await startAgent(state, n, opts, save);
      }
    } catch (err) {
      // Everything but the agent is up: say so in the state, so status and exec work.
      state.phase = 'up';
      await save();
      throw err;
    }
  }
  state.phase = 'up';
  await save();
  return { state };
}

export interface LabDownResult {
  /** One line per thing removed, in order. */
  removed: string[];
  /** Things that could not be removed, one line each (down never throws for these). */
  failures: string[];
}

/**
 * The pin dirs of lab `name`: those its state records, else every dir its agents could have used
 * (`vipr-<name>`, `vipr-<name>-node<i>`), except those another lab's state claims (lab
 * `<name>-node1` pins in `vipr-<name>-node1` too).
 */
async function labPinDirs(name: string, state: LabState | null): Promise<string[]> {
  const dirs = new Set<string>([defaultPinDir(name)]);
  if (state) {
    dirs.add(state.pinDir);
    for (const n of state.nodes) dirs.add(n.pinDir);
    return [...dirs];
  }
  const prefix = nodePinDir(name, 'node');
  let entries: string[] = [];
  try {
    entries = await readdir(BPFFS_ROOT);
  } catch {
    // No BPF filesystem: nothing pinned.
  }
  for (const entry of entries) {
    const dir = join(BPFFS_ROOT, entry);
    if (dir.startsWith(prefix) && /^\d+$/.test(dir.slice(prefix.length))) dirs.add(dir);
  }
  const owned = await pinDirOwners([...dirs], name);
  return [...dirs].filter((d) => !owned.has(d));
}

/**
 * Removes the lab, best effort: every process, namespace, the pin dir and the state dir, whether
 * `up` finished, failed halfway, or the state file is gone (namespaces are then found by name).
 */
export async function labDown(name: string): Promise<LabDownResult> {
  const removed: string[] = [];
  const failures: string[] = [];
  const read = await readLabState(name);
  const state = read.kind === 'ok' ? read.state : null;
  if (read.kind === 'unreadable') failures.push(`state file of lab '${name}' unreadable (${read.reason}); cleaning up by name`);

  let namespaces: string[] = [];
  try {
    namespaces = isLabLeftover(name, await listNetns());
  } catch (err) {
    failures.push((err as Error).message);
  }
  for (const ns of state?.namespaces ?? []) if (!namespaces.includes(ns) && netnsExists(ns)) namespaces.push(ns);

  // Processes: those recorded (checked against their start time), and anything else still running
  // inside a lab namespace (a server whose start was never recorded, a shell from `lab exec`).
  const victims = new Map<number, { pid: number; startTime: number; what: string }>();
  for (const p of state?.processes ?? []) {
    if (isRunning(p.pid, p.startTime)) victims.set(p.pid, { pid: p.pid, startTime: p.startTime, what: `${p.kind} on ${p.host}` });
  }
  for (const ns of namespaces) {
    for (const pid of await netnsPids(ns)) {
      const startTime = processStartTime(pid);
      if (startTime !== null && !victims.has(pid)) victims.set(pid, { pid, startTime, what: `process in ${ns}` });
    }
  }
  for (const pid of labCgroupPids(name)) {
    const startTime = processStartTime(pid);
    if (startTime !== null && !victims.has(pid)) victims.set(pid, { pid, startTime, what: `process in a cgroup of lab '${name}'` });
  }
  const stopped = new Set(await stopProcesses([...victims.values()]));
  for (const v of victims.values()) {
    if (isRunning(v.pid, v.startTime)) failures.push(`could not stop ${v.what} (pid ${v.pid})`);
    else if (stopped.has(v.pid)) removed.push(`stopped ${v.what} (pid ${v.pid})`);
  }

  for (const ns of namespaces) {
    try {
      if (await deleteNetns(ns)) removed.push(`deleted netns ${ns}`);
    } catch (err) {
      failures.push((err as Error).message);
    }
  }

  for (const pinDir of await labPinDirs(name, state)) {
    if (!pinDir.startsWith(`${BPFFS_ROOT}/`) || !existsSync(pinDir)) continue;
    try {
      // Unlinking a pin drops the map or link it pinned once nothing else holds it.
      await rm(pinDir, { recursive: true, force: true });
      removed.push(`removed pin dir ${pinDir}`);
    } catch (err) {
      failures.push(`rm -rf ${pinDir} failed: ${(err as Error).message}`);
    }
  }
  // After the pin dirs: unpinning detached the socket LB links from these cgroups.
  const cgroups = removeLabCgroups(name);
  removed.push(...cgroups.removed);
  failures.push(...cgroups.failures);
  const stateDir = labStateDir(name);
  if (existsSync(stateDir)) {
    try {
      await rm(stateDir, { recursive: true, force: true });
      removed.push(`removed state dir ${stateDir}`);
    } catch (err) {
      failures.push(`rm -rf ${stateDir} failed: ${(err as Error).message}`);
    }
  }
  return { removed, failures };
}

export interface LabHostStatus {
  name: string;
  role: HostRole;
  netns: string;
  /** The node a backend runs on or the client is attached to; null for nodes and `ext`. */
  node: string | null;
  /** Whether the namespace exists now. */
  present: boolean;
  /** Live addresses (CIDR; IPv4, then IPv6 but link-local) of every interface but lo. */
  addresses: string[];
  interfaces: { ifname: string; addresses: string[] }[];
}

export interface LabProcessStatus {
  kind: LabProcessState['kind'];
  host: string;
  pid: number;
  running: boolean;
  log: string;
}

export type AgentRunState = 'running' | 'stopped' | 'disabled';

/** A node as `vipr lab status` shows it: its state (host as `name`) and its agent's. */
export interface LabNodeStatus extends Omit<LabNodeState, 'host'> {
  /** Host name, as `vipr lab exec` takes it. */
  name: string;
  agent: AgentRunState;
  /** The running agent's pid, null when none runs. */
  agentPid: number | null;
}

export interface LabStatus {
  name: string;
  ipFamily: LabIpFamily;
  phase: LabState['phase'];
  stateDir: string;
  /** The first node's pin dir (see `nodes` for every node's). */
  pinDir: string;
  manifests: string;
  /** `running` when every node's agent runs. */
  agent: AgentRunState;
  nodes: LabNodeStatus[];
  /** The bridge joining nodes and `ext` (its namespace is reachable as host `net`); null with one node. */
  underlay: LabUnderlayState | null;
  hosts: LabHostStatus[];
  processes: LabProcessStatus[];
  services: ServiceSummary[];
  /** Manifest files or documents that could not be read. */
  problems: string[];
}

export async function labStatus(name: string): Promise<LabStatus> {
  const state = await loadLabState(name);
  const hosts: LabHostStatus[] = [];
  for (const h of state.hosts) {
    const present = netnsExists(h.netns);
    const interfaces = present ? await netnsAddresses(h.netns) : [];
    hosts.push({
      name: h.name,
      role: h.role,
      netns: h.netns,
      node: h.node ?? null,
      present,
      addresses: interfaces.flatMap((i) => i.addresses),
      interfaces,
    });
  }
  const processes = state.processes.map((p) => ({
    kind: p.kind,
    host: p.host,
    pid: p.pid,
    running: isRunning(p.pid, p.startTime),
    log: p.log,
  }));
  const nodes = state.nodes.map((n): LabNodeStatus => {
    const agent = processes.find((p) => p.kind === 'agent' && p.host === n.host && p.running);
    const { host, ...rest } = n;
    return {
      name: host,
      ...rest,
      agent: !state.agentEnabled ? 'disabled' : agent ? 'running' : 'stopped',
      agentPid: agent?.pid ?? null,
    };
  });
  const summary = await summarizeManifestDir(state.manifestsDir);
  return {
    name: state.name,
    ipFamily: state.ipFamily,
    phase: state.phase,
    stateDir: state.stateDir,
    pinDir: state.pinDir,
    manifests: state.manifestsDir,
    agent: !state.agentEnabled ? 'disabled' : nodes.every((n) => n.agent === 'running') ? 'running' : 'stopped',
    nodes,
    underlay: state.underlay,
    hosts,
    processes,
    services: summary.services,
    problems: summary.problems,
  };
}

