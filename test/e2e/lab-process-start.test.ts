/*
 * startInNetns (src/lab/processes.ts): a process that starts but never gets ready is reported
 * with the last lines of its log, so a start-up that stalls (the bench's churn agent under
 * emulation) says where it stopped, as one that exits does.
 *
 * stopProcesses: a process that ignores SIGTERM is killed with its whole process group, so a tool
 * it was running (an agent's iptables-restore) does not outlive it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessStartError, startInNetns, stopProcesses } from '../../src/lab/processes.js';

const NETNS = `vipr-pstart-${process.pid}`;

let dir = '';
beforeAll(() => {
  execFileSync('ip', ['netns', 'add', NETNS]);
  dir = mkdtempSync(join(tmpdir(), 'vipr-pstart-'));
});
afterAll(() => {
  execFileSync('ip', ['netns', 'del', NETNS]);
  rmSync(dir, { recursive: true, force: true });
});

describe('startInNetns: a process that never gets ready', () => {

  it('names its last log lines in the error and leaves it to the caller to stop', async () => {
    const log = join(dir, 'stalled.log');
    let caught: unknown = null;
    try {
      await startInNetns({
        netns: NETNS,
        argv: ['sh', '-c', 'echo loading; echo waiting for the initial lists; exec sleep 30'],
        log,
        ready: (text) => text.includes('agent running'),
        timeoutMs: 1000,
      });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ProcessStartError);
    const err = caught as ProcessStartError;
    expect(err.message).toMatch(/not ready after 1000 ms \(log .*stalled\.log: loading \| waiting for the initial lists\)$/);
    expect(err.started).not.toBeNull();
    if (err.started) expect(await stopProcesses([err.started], 2000)).toEqual([err.started.pid]);
  });
});

/** Whether `pid` is still a process (a zombie left to init counts as gone). */
function alive(pid: number): boolean {
  try {
    return !/^\S+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

describe('stopProcesses: a process that ignores SIGTERM', () => {

  it('is killed after the grace time together with the child it was running', async () => {
    const log = join(dir, 'stubborn.log');
    // A stand-in for an agent in the middle of a rule tool: it ignores SIGTERM, its child runs on.
    const started = await startInNetns({
      netns: NETNS,
      argv: ['sh', '-c', 'trap "" TERM; sleep 300 & echo "child $!"; echo ready; wait'],
      log,
      ready: (text) => text.includes('ready'),
      timeoutMs: 10_000,
    });
    const child = Number(/child (\d+)/.exec(readFileSync(log, 'utf8'))?.[1]);
    expect([alive(started.pid), alive(child)]).toEqual([true, true]);
    expect(await stopProcesses([started], 300)).toEqual([started.pid]);
    for (const until = Date.now() + 2000; alive(child) && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
    expect([alive(started.pid), alive(child)]).toEqual([false, false]);
  });
});
