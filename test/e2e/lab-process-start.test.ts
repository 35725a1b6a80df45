/*
 * startInNetns (src/lab/processes.ts): a process that starts but never gets ready is reported
 * with the last lines of its log, so a start-up that stalls (the bench's churn agent under
 * emulation) says where it stopped, as one that exits does.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessStartError, startInNetns, stopProcesses } from '../../src/lab/processes.js';

const NETNS = `vipr-pstart-${process.pid}`;

describe('startInNetns: a process that never gets ready', () => {
  let dir = '';
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NETNS]);
    dir = mkdtempSync(join(tmpdir(), 'vipr-pstart-'));
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'del', NETNS]);
    rmSync(dir, { recursive: true, force: true });
  });

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
