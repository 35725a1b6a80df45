/*
 * The lab's cgroups: one cgroup v2 directory per node, `<cgroup2 root>/vipr-lab-<lab>/<node>`,
 * holding every process of that node's hosts (the node itself, its pods, the one-node lab's
 * client), as the processes of a real node share its cgroup hierarchy. The node's agent attaches
 * socket LB there (--cgroup-root); hosts outside every node (`ext`, the underlay, the two-node
 * lab's client) run outside, as machines outside the cluster would.
 *
 * Invariant: the lab only ever creates, fills and removes directories under
 * `<root>/vipr-lab-<lab>`; the machine's root cgroup and every other cgroup are left alone.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Mount } from '../bpf/cgroup2-mount.js';
import { ConfigError } from '../errors.js';

/** The directory grouping lab `name`'s node cgroups, or null without a cgroup v2 mount. */
export function labCgroupDir(name: string): string | null {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new ConfigError(`lab name '${name}': only letters, digits, '.', '_' and '-' make a cgroup name`);
  const root = cgroup2Mount();
  return root === null ? null : join(root, `vipr-lab-${name}`);
}

/** Creates the cgroup of each node host; returns host → directory (empty without cgroup v2). */
export function createNodeCgroups(name: string, hosts: readonly string[]): Map<string, string> {
  const dir = labCgroupDir(name);
  const out = new Map<string, string>();
  if (dir === null) return out;
  for (const host of hosts) {
    const cg = join(dir, host);
    mkdirSync(cg, { recursive: true });
    out.set(host, cg);
  }
  return out;
}

/** The pids in a cgroup (and its descendants). */
export function cgroupPids(dir: string): number[] {
  const pids: number[] = [];
  const walk = (d: string): void => {
    try {
      for (const l of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (l.trim() !== '') pids.push(Number(l));
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    } catch {
      // Gone meanwhile.
    }
  };
  walk(dir);
  return pids;
}

/** Every pid in lab `name`'s cgroups. */
export function labCgroupPids(name: string): number[] {
  const dir = labCgroupDir(name);
  return dir === null || !existsSync(dir) ? [] : cgroupPids(dir);
}

/**
 * Removes lab `name`'s cgroups (they must be empty: stop their processes first). Returns what was
 * removed and what could not be.
 */
export function removeLabCgroups(name: string): { removed: string[]; failures: string[] } {
  const removed: string[] = [];
  const failures: string[] = [];
  const dir = labCgroupDir(name);
  if (dir === null || !existsSync(dir)) return { removed, failures };
  const remove = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) remove(join(d, e.name));
    try {
      rmdirSync(d);
      removed.push(`removed cgroup ${d}`);
    } catch (err) {
      failures.push(`rmdir ${d} failed: ${(err as Error).message}`);
    }
  };
  remove(dir);
  return { removed, failures };
}

/**
 * The argv that runs `file args` as a process of `cgroup`: a shell writes its own pid into the
 * cgroup, then execs (same pid), so the command and everything it starts are in the cgroup before
 * they open a socket. Arguments are passed as positional parameters, never parsed by the shell.
 */
export function inCgroupArgv(cgroup: string, file: string, args: readonly string[]): [string, string[]] {
  return ['sh', ['-c', 'echo $$ > "$0" && exec "$@"', join(cgroup, 'cgroup.procs'), file, ...args]];
}
