/*
 * The modes' real tools through the one runner: failures become one line naming the tool and what
 * it said, a missing tool names its package, and the iptables backend is chosen as the
 * iptables-wrapper does.
 */
import { ToolError } from '../../src/errors.js';
import { run, stderrReason } from '../../src/process/run.js';
import { detectIptablesBackend, parseIptablesBackendChoice } from '../../src/modes/tools.js';

describe('the modes\' tools', () => {
  test('stdin reaches the tool; stdout comes back', async () => {
    // --test only parses: nothing is applied anywhere.
    const r = await run('iptables-legacy-restore', ['--test'], { input: '*nat\n:KUBE-X - [0:0]\n-A KUBE-X -j RETURN\nCOMMIT\n' });
    expect(r.exitCode).toBe(0);
  });

  test('a failing tool is one ToolError line with its first stderr line', async () => {
    const err = await run('iptables-legacy-restore', ['--test'], { input: '*nat\n-A KUBE-NOPE -j RETURN\nCOMMIT\n' }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ToolError);
    expect(err).toMatchObject({ command: 'iptables-legacy-restore', exitCode: 1, code: null, signal: null, timedOut: false });
    expect((err as Error).message).toMatch(/^iptables-legacy-restore --test failed: .*KUBE-NOPE|^iptables-legacy-restore --test failed: .*line 2/);
    expect((err as Error).message).not.toContain('\n');
  });

  test('check: false returns the exit code instead', async () => {
    const r = await run('sh', ['-c', 'echo oops >&2; exit 3'], { check: false });
    expect(r).toMatchObject({ exitCode: 3, stderr: 'oops\n' });
  });

  test('a missing tool, or a usage error, is one line', async () => {
    await expect(run('ipvsadm-vipr-missing', [])).rejects.toThrow(/^ipvsadm-vipr-missing not found on PATH$/);
    await expect(run('nft', ['--vipr-no-such-flag'])).rejects.toThrow(/^nft --vipr-no-such-flag failed: [^\n]+$/);
  });

  test('the reason skips blank lines, the other backend\'s warning and the usage hint', () => {
    expect(stderrReason('\n# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\nreal cause\nmore\n')).toBe('real cause');
    expect(stderrReason("iptables: Chain already exists.\nTry `iptables -h' or 'iptables --help' for more information.\n", ['iptables'])).toBe('Chain already exists.');
    expect(stderrReason('  \n')).toBeNull();
  });
});

describe('iptables backend', () => {
  test('explicit choices are kept; anything else is refused', async () => {
    await expect(detectIptablesBackend('legacy')).resolves.toBe('legacy');
    await expect(detectIptablesBackend('nft')).resolves.toBe('nft');
    expect(() => parseIptablesBackendChoice('xtables')).toThrow('--iptables-backend xtables: expected auto, legacy or nft');
  });

  test('auto picks one of the two', async () => {
    await expect(detectIptablesBackend('auto')).resolves.toMatch(/^(legacy|nft)$/);
  });
});
