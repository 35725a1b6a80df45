/*
 * Interfaces by name or by pattern. A DaemonSet cannot list pod interfaces ahead of time: with
 * `--iface veth+` (iptables' wildcard: a trailing `+` matches any suffix) the agent attaches to
 * every matching link now and to each new one as it appears, and drops the pins of links that
 * went away. Links are read over netlink with `ip`, which sees the agent's network namespace
 * (/sys/class/net would show the namespace /sys was mounted in).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { runSync } from '../process/run.js';
import { componentLogger } from '../log.js';

const log = componentLogger('interfaces');

export interface IfaceSpec {
  /** Exact names. */
  names: string[];
  /** Prefixes from `name+` patterns. */
  prefixes: string[];
}

export function parseIfaceSpec(args: string[]): IfaceSpec {
  const names: string[] = [];
  const prefixes: string[] = [];
  for (const a of args) {
    if (a.endsWith('+')) prefixes.push(a.slice(0, -1));
    else names.push(a);
  }
  return { names, prefixes };
}

export function matchesSpec(spec: IfaceSpec, name: string): boolean {
  return spec.names.includes(name) || spec.prefixes.some((p) => name.startsWith(p));
}

/** Link names in this network namespace (`ip -o link show`; `name@peer` shortened to name). */
export function listLinks(): string[] {
  const out = runSync('ip', ['-o', 'link', 'show'], { timeoutMs: 10_000 }).stdout;
  return out
    .split('\n')
    .map((l) => /^\d+: ([^:@\s]+)/.exec(l)?.[1])
    .filter((n): n is string => n !== undefined);
}

/**
 * Calls `onAdd` for each link matching a pattern that appears, `onDelete` for each that goes
 * (`ip -o monitor link`). Returns a stop function.
 */
export function watchLinks(spec: IfaceSpec, onAdd: (name: string) => void, onDelete: (name: string) => void): () => void {
  if (spec.prefixes.length === 0) return () => undefined;
  let proc: ChildProcess | null = spawn('ip', ['-o', 'monitor', 'link'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const known = new Set(listLinks().filter((n) => matchesSpec(spec, n)));
  let buf = '';
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    for (const line of lines) {
      const m = /^(Deleted )?\d+: ([^:@\s]+)/.exec(line);
      const name = m?.[2];
      if (!name || !matchesSpec(spec, name)) continue;
      if (m[1]) {
        if (known.delete(name)) onDelete(name);
      } else if (!known.has(name)) {
        known.add(name);
        onAdd(name);
      }
    }
  });
  proc.on('exit', (code) => {
    if (proc !== null) log.error({ code }, "'ip monitor link' exited: new interfaces are no longer picked up");
  });
  return () => {
    const p = proc;
    proc = null;
    p?.kill();
  };
}
