/*
 * What `vipr lab exec` and the lab's other readers need of a lab that is up: its state, where a
 * host's namespace and cgroup are, and the errors naming a lab that is not (or already) up. Kept
 * apart from lab.ts, which brings labs up and down, so that `vipr lab exec` (run hundreds of
 * times by the tests, and by users in loops) loads only this.
 */
import { ConfigError } from '../errors.js';
import { netnsExists } from './network.js';
import { readLabState, type LabState } from './state.js';
import { UNDERLAY_HOST } from './topology.js';

export class LabExistsError extends Error {
  override readonly name = 'LabExistsError';
  constructor(
    readonly lab: string,
    /** Namespaces of the lab found without a state file (leftovers of an interrupted run). */
    readonly leftovers: string[] = [],
  ) {
    super(
      `lab '${lab}' is already up` +
        (leftovers.length > 0 ? ` (namespaces ${leftovers.join(', ')} exist)` : '') +
        `; run 'vipr lab down${lab === 'vipr' ? '' : ` --name ${lab}`}' first`,
    );
  }
}

export class LabNotUpError extends Error {
  override readonly name = 'LabNotUpError';
  constructor(readonly lab: string) {
    super(`lab '${lab}' is not up; run 'vipr lab up${lab === 'vipr' ? '' : ` --name ${lab}`}' first`);
  }
}

/** The agent failed to start; the rest of the lab is up and stays so (to debug the agent in it). */
export class AgentStartError extends Error {
  override readonly name = 'AgentStartError';
}

/**
 * The cgroup a host's processes run in: a node's own, for the node, its pods and the one-node
 * lab's client (the node's only client, as a pod of it); none for `ext`, the underlay and the
 * two-node lab's client, which stand for machines outside the cluster.
 */
export function hostCgroup(state: LabState, host: string): string | null {
  const h = state.hosts.find((x) => x.name === host);
  if (!h) return null;
  const nodeHost = h.role === 'node' ? h.name : h.role === 'backend' || (h.role === 'client' && state.nodes.length === 1) ? h.node : undefined;
  return state.nodes.find((n) => n.host === nodeHost)?.cgroup ?? null;
}

export async function loadLabState(name: string): Promise<LabState> {
  const read = await readLabState(name);
  if (read.kind === 'missing') throw new LabNotUpError(name);
  if (read.kind === 'unreadable') {
    throw new ConfigError(`state of lab '${name}' is unreadable (${read.reason}); 'vipr lab down --name ${name}' cleans up`);
  }
  return read.state;
}

/** Where `host`'s commands run: its namespace, and its node's cgroup for a node's hosts. */
export async function labHostPlacement(name: string, host: string): Promise<{ netns: string; cgroup: string | null }> {
  const netns = await labHostNetns(name, host);
  return { netns, cgroup: hostCgroup(await loadLabState(name), host) };
}

/** The namespace of `host` in lab `name`; a ConfigError naming the valid hosts otherwise. */
export async function labHostNetns(name: string, host: string): Promise<string> {
  const state = await loadLabState(name);
  const found =
    state.hosts.find((h) => h.name === host) ??
    (host === UNDERLAY_HOST && state.underlay ? { name: host, netns: state.underlay.netns } : undefined);
  if (!found) {
    throw new ConfigError(`no host '${host}' in lab '${name}'; hosts: ${state.hosts.map((h) => h.name).join(', ')}`);
  }
  if (!netnsExists(found.netns)) {
    throw new ConfigError(`namespace ${found.netns} of host '${host}' is gone; 'vipr lab down' then 'vipr lab up' rebuilds the lab`);
  }
  return found.netns;
}
