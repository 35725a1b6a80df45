/*
 * Where a lab keeps what `down`, `status` and `exec` need: /run/vipr/lab/<name>/state.json (in
 * /run, so a reboot, which removes the namespaces too, also forgets the lab). The file is written
 * as soon as `up` starts and rewritten after each step, so a lab whose `up` failed halfway can
 * still be found and removed.
 */
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { JsonFileError, parseJson, type JsonRecordKind } from '../json-file.js';
import { DEFAULT_LAB_NAME, hostNetns, LAB_IP_FAMILIES, type HostRole, type LabIpFamily } from './topology.js';

export const LAB_STATE_ROOT = '/run/vipr/lab';
export const BPFFS_ROOT = '/sys/fs/bpf';

export function labStateDir(name: string): string {
  return join(LAB_STATE_ROOT, name);
}

export function labStateFile(name: string): string {
  return join(labStateDir(name), 'state.json');
}

/** The default lab pins where the agent pins by default; other labs get their own directory. */
export function defaultPinDir(name: string): string {
  return name === DEFAULT_LAB_NAME ? join(BPFFS_ROOT, 'vipr') : join(BPFFS_ROOT, `vipr-${name}`);
}

export interface LabInterfaceState {
  ifname: string;
  addresses: string[];
}

export interface LabHostState {
  name: string;
  role: HostRole;
  netns: string;
  /** The node a backend runs on, or the client is attached to; absent for nodes and `ext`. */
  node?: string;
  /** As planned; `status` reports the live addresses. */
  interfaces: LabInterfaceState[];
}

export interface LabProcessState {
  kind: 'server' | 'agent';
  host: string;
  pid: number;
  /** /proc/<pid>/stat start time (clock ticks since boot): tells this process from a reused pid. */
  startTime: number;
  argv: string[];
  log: string;
}

/** One node and what its agent gets. */
export interface LabNodeState {
  /** The host name (`node`, or `node1`, `node2`...), also its Kubernetes node name. */
  host: string;
  nodeName: string;
  netns: string;
  /** The node IP on the underlay of the lab's first family; null in the one-node lab. */
  nodeIp: string | null;
  /** Every node IP on the underlay, IPv4 first (the agent's `--node-ip`s); [] in the one-node lab. */
  nodeIps: string[];
  /** The pod CIDR of the lab's first family. */
  podCidr: string;
  /** The pod CIDR of each family, IPv4 first. */
  podCidrs: string[];
  /** Where this node's agent pins; never shared by two agents. */
  pinDir: string;
  /** The node's interfaces the agent attaches to. */
  agentIfaces: string[];
  agentLog: string;
  /**
   * The node's cgroup v2 directory, holding the processes of its hosts (absent: a lab made before
   * labs had cgroups, or a machine without cgroup v2). The agent's --cgroup-root.
   */
  cgroup?: string;
}

export interface LabUnderlayState {
  netns: string;
  bridge: string;
  /** Of the lab's first family. */
  cidr: string;
  /** Of each family, IPv4 first. */
  cidrs: string[];
}

export interface LabState {
  version: 1;
  name: string;
  /** `--ip-family`: the address families of the lab's links (`ipv4` for labs made before IPv6). */
  ipFamily: LabIpFamily;
  /** `creating` until `up` finished; a lab left in `creating` failed or is still being built. */
  phase: 'creating' | 'up';
  createdAt: string;
  /** Backends per node. */
  backends: number;
  stateDir: string;
  /** The first node's pin dir (the only one in the one-node lab). */
  pinDir: string;
  manifestsDir: string;
  /** True when the manifests were written by the lab (in the state dir) rather than given. */
  defaultManifests: boolean;
  agentEnabled: boolean;
  /** The script agents run from (`--agent-main`), so a restarted agent is the same program. */
  agentMain?: string;
  /** Every namespace created so far, in creation order. */
  namespaces: string[];
  hosts: LabHostState[];
  /** The first node's agent interfaces (as `nodes[0].agentIfaces`). */
  agentIfaces: string[];
  nodes: LabNodeState[];
  /** The bridge joining the nodes and `ext`; null in the one-node lab. */
  underlay: LabUnderlayState | null;
  processes: LabProcessState[];
}

export async function writeLabState(state: LabState): Promise<void> {
  await mkdir(state.stateDir, { recursive: true });
  const file = labStateFile(state.name);
  const tmp = `${file}.tmp`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n');
  await rename(tmp, file);
}

const HOST_ROLES = ['client', 'node', 'backend', 'external'] as const satisfies readonly HostRole[];

/*
 * The state file as stored. Fields added after the first labs (nodes, underlay, agentIfaces,
 * agentMain, cgroup, ipFamily, nodeIps, podCidrs, cidrs) may be absent: withNodes() fills in
 * what an IPv4 (one-node) lab had. Fields this
 * schema does not know pass through untouched, so a newer vipr's state survives a rewrite.
 */
const LabInterfaceSchema = z.object({ ifname: z.string().min(1), addresses: z.array(z.string()) }).passthrough();
const LabHostSchema = z
  .object({
    name: z.string().min(1),
    role: z.enum(HOST_ROLES),
    netns: z.string().min(1),
    node: z.string().optional(),
    interfaces: z.array(LabInterfaceSchema),
  })
  .passthrough();
const LabProcessSchema = z
  .object({
    kind: z.enum(['server', 'agent']),
    host: z.string(),
    pid: z.number().int().positive(),
    startTime: z.number().int().nonnegative(),
    argv: z.array(z.string()),
    log: z.string(),
  })
  .passthrough();
const LabNodeSchema = z
  .object({
    host: z.string().min(1),
    nodeName: z.string().min(1),
    netns: z.string().min(1),
    nodeIp: z.string().nullable(),
    nodeIps: z.array(z.string()).optional(),
    podCidr: z.string(),
    podCidrs: z.array(z.string()).optional(),
    pinDir: z.string().min(1),
    agentIfaces: z.array(z.string()),
    agentLog: z.string(),
    cgroup: z.string().optional(),
  })
  .passthrough();
const StoredLabStateSchema = z
  .object({
    version: z.literal(1),
    name: z.string().min(1),
    ipFamily: z.enum(LAB_IP_FAMILIES as [LabIpFamily, ...LabIpFamily[]]).optional(),
    phase: z.enum(['creating', 'up']),
    createdAt: z.string(),
    backends: z.number().int().nonnegative(),
    stateDir: z.string().min(1),
    pinDir: z.string().min(1),
    manifestsDir: z.string().min(1),
    defaultManifests: z.boolean(),
    agentEnabled: z.boolean(),
    agentMain: z.string().optional(),
    namespaces: z.array(z.string()),
    hosts: z.array(LabHostSchema),
    agentIfaces: z.array(z.string()).optional(),
    nodes: z.array(LabNodeSchema).optional(),
    underlay: z
      .object({ netns: z.string(), bridge: z.string(), cidr: z.string(), cidrs: z.array(z.string()).optional() })
      .passthrough()
      .nullable()
      .optional(),
    processes: z.array(LabProcessSchema),
  })
  .passthrough();
type StoredLabState = z.infer<typeof StoredLabStateSchema>;

function labStateKind(name: string): JsonRecordKind<StoredLabState> {
  return {
    what: 'lab state',
    schema: StoredLabStateSchema,
    fix: `'vipr lab down --name ${name}' cleans up by name`,
  };
}

/**
 * A state written before labs had several nodes has no `nodes`/`underlay`: it was a one-node lab,
 * whose node, pin dir and interfaces the old fields describe.
 */
function withNodes(state: StoredLabState): LabState {
  const ipFamily = state.ipFamily ?? 'ipv4';
  if (state.nodes !== undefined) {
    const underlay = state.underlay ? { ...state.underlay, cidrs: state.underlay.cidrs ?? [state.underlay.cidr] } : null;
    const nodes = state.nodes.map((n) => ({
      ...n,
      nodeIps: n.nodeIps ?? (n.nodeIp === null ? [] : [n.nodeIp]),
      podCidrs: n.podCidrs ?? [n.podCidr],
    }));
    return { ...state, ipFamily, agentIfaces: state.agentIfaces ?? [], nodes, underlay };
  }
  return {
    ...state,
    ipFamily,
    agentIfaces: state.agentIfaces ?? [],
    nodes: [
      {
        host: 'node',
        nodeName: 'node',
        netns: hostNetns(state.name, 'node'),
        nodeIp: null,
        nodeIps: [],
        podCidr: '10.244.0.0/24',
        podCidrs: ['10.244.0.0/24'],
        pinDir: state.pinDir,
        agentIfaces: state.agentIfaces ?? [],
        agentLog: join(state.stateDir, 'agent.log'),
      },
    ],
    underlay: null,
  };
}

/** Names of the labs with a state directory on this machine. */
export async function listLabNames(): Promise<string[]> {
  try {
    return (await readdir(LAB_STATE_ROOT, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/**
 * The labs other than `except` whose agents pin in one of `pinDirs` (a lab named `a-node1` and
 * node1 of a two-node lab `a` would both use /sys/fs/bpf/vipr-a-node1), as `dir → lab`.
 */
export async function pinDirOwners(pinDirs: readonly string[], except: string): Promise<Map<string, string>> {
  const owners = new Map<string, string>();
  for (const lab of await listLabNames()) {
    if (lab === except) continue;
    const read = await readLabState(lab);
    if (read.kind !== 'ok') continue;
    for (const dir of [read.state.pinDir, ...read.state.nodes.map((n) => n.pinDir)]) {
      if (pinDirs.includes(dir)) owners.set(dir, lab);
    }
  }
  return owners;
}

export type LabStateRead =
  | { kind: 'missing' }
  | { kind: 'unreadable'; reason: string }
  | { kind: 'ok'; state: LabState };

export async function readLabState(name: string): Promise<LabStateRead> {
  let text: string;
  try {
    text = await readFile(labStateFile(name), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'unreadable', reason: (err as Error).message };
  }
  try {
    return { kind: 'ok', state: withNodes(parseJson(text, labStateFile(name), labStateKind(name))) };
  } catch (err) {
    if (err instanceof JsonFileError) return { kind: 'unreadable', reason: err.short };
    throw err;
  }
}
