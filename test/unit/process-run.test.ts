/*
 * The one tool runner, against real processes: each way a run can fail is told by the ToolError's
 * fields (not its text), and its message is one line naming the command and, where known, the fix.
 */
import { ToolError } from '../../src/errors.js';
import { DEFAULT_TIMEOUT_MS, run, runSync, setDefaultToolTimeout, stderrReason, toolExists } from '../../src/process/run.js';

async function failure(p: Promise<unknown>): Promise<ToolError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ToolError);
  const e = err as ToolError;
  expect(e.message).not.toContain('\n');
  return e;
}

function syncFailure(f: () => unknown): ToolError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(ToolError);
    expect((err as ToolError).message).not.toContain('\n');
    return err as ToolError;
  }
  throw new Error('expected a ToolError');
}

describe('run', () => {
  test('output and exit code of a run that succeeds; stdin reaches the tool', async () => {
    await expect(run('sh', ['-c', 'cat; echo err >&2'], { input: 'in\n' })).resolves.toEqual({ stdout: 'in\n', stderr: 'err\n', exitCode: 0 });
  });

  test('a missing binary: code ENOENT, and the package to install when vipr knows it', async () => {
    const e = await failure(run('vipr-no-such-tool', ['-x']));
    expect(e).toMatchObject({ command: 'vipr-no-such-tool', args: ['-x'], code: 'ENOENT', exitCode: null, signal: null, timedOut: false });
    expect(e.notFound).toBe(true);
    expect(e.message).toBe('vipr-no-such-tool not found on PATH');
    // A known tool on a PATH without it.
    const nft = await failure(run('nft', ['list', 'ruleset'], { env: { PATH: '/nonexistent' } }));
    expect(nft.code).toBe('ENOENT');
    expect(nft.message).toBe('nft not found: apt-get install nftables');
  });

  test('a non-zero exit: exitCode, stderr, and the tool\'s own complaint as the reason', async () => {
    const e = await failure(run('sh', ['-c', 'echo "sh: boom" >&2; echo "more" >&2; exit 3']));
    expect(e).toMatchObject({ code: null, exitCode: 3, signal: null, timedOut: false, isCanceled: false, stderr: 'sh: boom\nmore\n', reason: 'boom' });
    expect(e.message).toBe(`sh -c echo "sh: boom" >&2; echo "more" >&2; exit 3 failed: boom`);
    // Nothing on stderr: the exit code is the reason.
    const quiet = await failure(run('sh', ['-c', 'exit 3'], { display: 'the quiet tool' }));
    expect(quiet.message).toBe('the quiet tool failed: exit code 3');
  });

  test('check: false returns a non-zero exit instead of failing', async () => {
    await expect(run('sh', ['-c', 'exit 3'], { check: false })).resolves.toEqual({ stdout: '', stderr: '', exitCode: 3 });
  });

  test('killed by a signal: signal set, no exit code', async () => {
    const e = await failure(run('sh', ['-c', 'kill -9 $$']));
    expect(e).toMatchObject({ code: null, exitCode: null, signal: 'SIGKILL', timedOut: false, isCanceled: false });
    expect(e.message).toBe('sh -c kill -9 $$ was killed by SIGKILL');
  });

  test('a timeout kills the tool: timedOut, and it does not wait for the tool', async () => {
    const start = Date.now();
    const e = await failure(run('sleep', ['5'], { timeoutMs: 100 }));
    expect(Date.now() - start).toBeLessThan(3000);
    expect(e).toMatchObject({ code: null, exitCode: null, signal: 'SIGTERM', timedOut: true, isCanceled: false });
    expect(e.message).toBe('sleep 5 timed out after 100 ms');
  });

  test('a tool given no limit of its own gets the process-wide one (vipr run --tool-timeout), and its error names that option', async () => {
    setDefaultToolTimeout(100);
    try {
      const e = await failure(run('sleep', ['5']));
      expect(e).toMatchObject({ timedOut: true, reason: 'timed out after 100 ms' });
      expect(e.message).toBe('sleep 5 timed out after 100 ms (a slow node: raise vipr run --tool-timeout)');
    } finally {
      setDefaultToolTimeout(DEFAULT_TIMEOUT_MS);
    }
    expect(() => setDefaultToolTimeout(0)).toThrow(RangeError);
  });

  test('an abort kills the tool: isCanceled', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 50);
    const e = await failure(run('sleep', ['5'], { signal: ac.signal }));
    expect(e).toMatchObject({ isCanceled: true, timedOut: false, signal: 'SIGTERM' });
    expect(e.message).toBe('sleep 5 was canceled');
  });

  test('more output than the limit kills the tool: isMaxBuffer', async () => {
    const e = await failure(run('yes', [], { maxBuffer: 4096 }));
    expect(e).toMatchObject({ isMaxBuffer: true, timedOut: false });
    expect(e.message).toBe('yes printed more than 4096 bytes');
  });

  test('the error keeps only the start of a long stderr; the reason is one clipped line', async () => {
    const e = await failure(run('sh', ['-c', "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1"]));
    expect(e.stderr.length).toBe(8 * 1024);
    expect(e.reason.length).toBeLessThanOrEqual(300);
  });
});

describe('runSync', () => {
  test('the same result and the same fields', () => {
    expect(runSync('sh', ['-c', 'cat'], { input: 'x' })).toEqual({ stdout: 'x', stderr: '', exitCode: 0 });
    expect(syncFailure(() => runSync('vipr-no-such-tool', []))).toMatchObject({ code: 'ENOENT', message: 'vipr-no-such-tool not found on PATH' });
    expect(syncFailure(() => runSync('sh', ['-c', 'echo "oops" >&2; exit 4']))).toMatchObject({ exitCode: 4, reason: 'oops' });
    expect(syncFailure(() => runSync('sh', ['-c', 'kill -9 $$']))).toMatchObject({ signal: 'SIGKILL', exitCode: null, timedOut: false });
    const t = syncFailure(() => runSync('sleep', ['5'], { timeoutMs: 100 }));
    expect(t).toMatchObject({ timedOut: true, message: 'sleep 5 timed out after 100 ms' });
  });
});

describe('toolExists and stderrReason', () => {
  test('toolExists is false only for a tool that cannot start', async () => {
    await expect(toolExists('sh')).resolves.toBe(true);
    await expect(toolExists('vipr-no-such-tool')).resolves.toBe(false);
  });

  test('prefixes tools put in front are dropped; JSON log lines are not a reason', () => {
    expect(stderrReason('RTNETLINK answers: File exists\n')).toBe('File exists');
    expect(stderrReason('ethtool: boom\n', ['ethtool'])).toBe('boom');
    expect(stderrReason('{"level":50,"msg":"x"}\nprogram-worker: no endpoints\n')).toBe('program-worker: no endpoints');
  });
});
