/*
 * Running the real tools: failures become one line naming the tool and what it said, a missing
 * tool names its package, and the iptables backend is chosen as the iptables-wrapper does.
 */
import { DataplaneError } from '../../src/errors.js';
import { detectIptablesBackend, firstStderrLine, parseIptablesBackendChoice, runTool } from '../../src/modes/tools.js';

describe('runTool', () => {
  test('stdin reaches the tool; stdout comes back', async () => {
    // --test only parses: nothing is applied anywhere.
    const r = await runTool('iptables-legacy-restore', ['--test'], { input: '*nat\n:KUBE-X - [0:0]\n-A KUBE-X -j RETURN\nCOMMIT\n' });
    expect(r.code).toBe(0);
  });

  test('a failing tool is one DataplaneError line with its first stderr line', async () => {
    const err = await runTool('iptables-legacy-restore', ['--test'], { input: '*nat\n-A KUBE-NOPE -j RETURN\nCOMMIT\n' }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DataplaneError);
    expect((err as Error).message).toMatch(/^iptables-legacy-restore failed: .*KUBE-NOPE|^iptables-legacy-restore failed: .*line 2/);
    expect((err as Error).message).not.toContain('\n');
  });

  test('check: false returns the exit code instead', async () => {
    const r = await runTool('sh', ['-c', 'echo oops >&2; exit 3'], { check: false });
    expect(r).toMatchObject({ code: 3, stderr: 'oops\n' });
  });

  test('a missing tool, or a usage error, is one line', async () => {
    await expect(runTool('ipvsadm-vipr-missing', [])).rejects.toThrow(/^ipvsadm-vipr-missing not found$/);
    await expect(runTool('nft', ['--vipr-no-such-flag'])).rejects.toThrow(/^nft failed: /);
  });

  test('firstStderrLine skips blank lines and the other backend warning', () => {
    expect(firstStderrLine('\n# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\nreal cause\nmore\n')).toBe('real cause');
    expect(firstStderrLine('  \n')).toBeNull();
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
