/*
 * IPVS mode binds every Service address to kube-ipvs0 (this kernel has neither IPVS nor the
 * dummy link type, so a veth named kube-ipvs0 stands in; `ip` is real): changeLinkAddresses adds and deletes thousands of /32 and /128
 * addresses in one `ip -batch`, and a line that fails stops the batch with an error naming it.
 */
import { execFileSync } from 'node:child_process';
import { changeLinkAddresses, linkAddresses } from '../../src/modes/ipvs.js';
import { ToolError } from '../../src/errors.js';

const NETNS = `vipr-ipvs-addr-${process.pid}`;
const LINK = 'kube-ipvs0';

/** n addresses of each family, as a Service CIDR hands them out. */
function serviceAddresses(n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    out.push(`10.96.${i >> 8}.${i & 255}`);
    out.push(`fd00:96::${(i + 1).toString(16)}`);
  }
  return out;
}

describe('kube-ipvs0 addresses in one ip -batch', () => {
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', NETNS]);
    execFileSync('ip', ['-n', NETNS, 'link', 'add', LINK, 'type', 'veth', 'peer', 'name', 'ipvs-peer']);
  });
  afterAll(() => {
    execFileSync('ip', ['netns', 'del', NETNS]);
  });

  test('binds 3,000 addresses of each family, then unbinds half of them; the rest stay', async () => {
    const all = serviceAddresses(3000);
    await changeLinkAddresses('add', LINK, all, NETNS);
    expect(new Set(await linkAddresses(LINK, NETNS))).toEqual(new Set(all));
    const ipv4 = execFileSync('ip', ['-n', NETNS, '-4', '-o', 'addr', 'show', 'dev', LINK], { encoding: 'utf8' });
    expect(ipv4.split('\n').filter((l) => / inet 10\.96\.\d+\.\d+\/32 /.test(l))).toHaveLength(3000);

    const gone = all.filter((_, i) => i % 2 === 0);
    await changeLinkAddresses('del', LINK, gone, NETNS);
    const kept = all.filter((_, i) => i % 2 === 1);
    expect(new Set(await linkAddresses(LINK, NETNS))).toEqual(new Set(kept));
  });

  test('nothing to change runs nothing; an address already bound fails the batch and names its line', async () => {
    const before = await linkAddresses(LINK, NETNS);
    await changeLinkAddresses('add', LINK, [], NETNS);
    expect(await linkAddresses(LINK, NETNS)).toEqual(before);

    const bound = before[0] as string;
    let caught: unknown = null;
    try {
      await changeLinkAddresses('add', LINK, ['10.97.0.1', bound, '10.97.0.2'], NETNS);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ToolError);
    expect((caught as Error).message).toBe(
      `ip addr add ${bound}/${bound.includes(':') ? 128 : 32} dev ${LINK} failed: ${(caught as ToolError).reason} (line 2 of 3 in one ip -batch; the lines before it were applied)`,
    );
    expect((caught as ToolError).reason).toMatch(/already assigned|File exists/);
    // ip stops at the failing line: the one before it is bound, the one after is not.
    const after = new Set(await linkAddresses(LINK, NETNS));
    expect([after.has('10.97.0.1'), after.has('10.97.0.2')]).toEqual([true, false]);
  });
});
