/*
 * One long-lived TCP connection from a lab host (test/e2e/tools/keepalive-probe.mjs): asks
 * `GET /whoami` every interval over the same socket and records the answers, so a test can
 * check that an established connection survives what it does (agent restarts, backend removal).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inCgroupArgv } from '../../src/lab/cgroups.js';

const PROBE = join(dirname(fileURLToPath(import.meta.url)), '..', 'e2e', 'tools', 'keepalive-probe.mjs');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class KeepaliveProbe {
  readonly lines: string[] = [];
  private readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;

  /** `cgroup`: run as a process of it (a lab node's, to go through its socket LB). */
  constructor(netns: string, ip: string, port = 80, intervalMs = 100, cgroup: string | null = null) {
    const [file, args] = cgroup === null
      ? ['nsenter', [`--net=/run/netns/${netns}`, process.execPath, PROBE, ip, String(port), String(intervalMs)]] as const
      : inCgroupArgv(cgroup, 'nsenter', [`--net=/run/netns/${netns}`, process.execPath, PROBE, ip, String(port), String(intervalMs)]);
    this.proc = spawn(file, args);
    let buf = '';
    this.proc.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      this.lines.push(...parts);
    });
    this.exited = new Promise((r) => this.proc.on('exit', (code) => r(code)));
  }

  /** Backend and client address:port of every answer so far. */
  answers(): Array<{ backend: string; client: string }> {
    return this.lines.filter((l) => !l.startsWith('ERROR')).map((l) => {
      const [, backend, client] = l.split(' ');
      return { backend: backend as string, client: client as string };
    });
  }

  backends(): string[] {
    return this.answers().map((a) => a.backend);
  }

  errors(): string[] {
    return this.lines.filter((l) => l.startsWith('ERROR'));
  }

  /** Waits for `n` answers in all; throws on a probe error or after `timeoutMs`. */
  async waitFor(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.answers().length < n) {
      if (this.errors().length > 0) throw new Error(`probe failed: ${this.lines.join('\n')}`);
      if (Date.now() > deadline) throw new Error(`probe got ${this.answers().length} of ${n} answers`);
      await sleep(50);
    }
  }

  async stop(): Promise<void> {
    this.proc.kill('SIGTERM');
    await this.exited;
  }
}
