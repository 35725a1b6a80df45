/*
 * Where a lab keeps what `down`, `status` and `exec` need: /run/vipr/lab/<name>/state.json (in
 * /run, so a reboot, which removes the namespaces too, also forgets the lab). The file is written
 * as soon as `up` starts and rewritten after each step, so a lab whose `up` failed halfway can
 * still be found and removed.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DEFAULT_LAB_NAME, type HostRole } from './topology.js';

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

export interface LabState {
  version: 1;
  name: string;
  /** `creating` until `up` finished; a lab left in `creating` failed or is still being built. */
  phase: 'creating' | 'up';
  createdAt: string;
  backends: number;
  stateDir: string;
  pinDir: string;
  manifestsDir: string;
  /** True when the manifests were written by the lab (in the state dir) rather than given. */
  defaultManifests: boolean;
  agentEnabled: boolean;
  /** Every namespace created so far, in creation order. */
  namespaces: string[];
  hosts: LabHostState[];
  /** The node's interfaces the agent attaches to, client-facing first. */
  agentIfaces: string[];
  processes: LabProcessState[];
}

export async function writeLabState(state: LabState): Promise<void> {
  await mkdir(state.stateDir, { recursive: true });
  const file = labStateFile(state.name);
  const tmp = `${file}.tmp`;
  await writeFile(tmp, JSON.stringify(state, null, 2) + '\n');
  await rename(tmp, file);
}

function isLabState(v: unknown): v is LabState {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    o.version === 1 &&
    typeof o.name === 'string' &&
    typeof o.stateDir === 'string' &&
    typeof o.pinDir === 'string' &&
    typeof o.manifestsDir === 'string' &&
    Array.isArray(o.namespaces) &&
    Array.isArray(o.hosts) &&
    Array.isArray(o.processes)
  );
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
    const parsed: unknown = JSON.parse(text);
    if (!isLabState(parsed)) return { kind: 'unreadable', reason: 'not a vipr lab state file (version 1)' };
    return { kind: 'ok', state: parsed };
  } catch (err) {
    return { kind: 'unreadable', reason: (err as Error).message };
  }
}
