/*
 * The bench's iptables-nft churn probe: a few pending Services are looked at chain by chain
 * (`iptables-nft -t nat -S KUBE-SVC-…`), many with one `iptables-nft-save`; both count the same
 * endpoints, and a Service whose chain is not there yet has none. In a namespace of its own, with
 * the real tools.
 */
import { execFileSync } from 'node:child_process';
import { probeFor } from '../../src/bench/churn.js';
import { BENCH_NAMESPACE, serviceName } from '../../src/bench/plan.js';
import { servicePortChainName } from '../../src/render/hash.js';

const NETNS = `vipr-t-iptprobe-${process.pid}`;

const chainOf = (index: number): string => servicePortChainName(`${BENCH_NAMESPACE}/${serviceName(index)}`, 'tcp');

beforeAll(() => {
  execFileSync('ip', ['netns', 'add', NETNS]);
  // Service i with i endpoints (its KUBE-SVC chain jumping to i KUBE-SEP chains), for i in 1..100.
  const lines = ['*nat'];
  for (let i = 1; i <= 100; i++) {
    lines.push(`:${chainOf(i)} - [0:0]`);
    for (let e = 0; e < i % 4; e++) lines.push(`:KUBE-SEP-T${i}X${e} - [0:0]`);
  }
  for (let i = 1; i <= 100; i++) for (let e = 0; e < i % 4; e++) lines.push(`-A ${chainOf(i)} -j KUBE-SEP-T${i}X${e}`);
  lines.push('COMMIT', '');
  execFileSync('ip', ['netns', 'exec', NETNS, 'iptables-nft-restore', '--noflush'], { input: lines.join('\n') });
});

afterAll(() => {
  execFileSync('ip', ['netns', 'del', NETNS]);
});

test('chain by chain for a few Services, one save for many: the same counts; a chain not there counts none', async () => {
  const probe = await probeFor('iptables-nft', { pinDir: '', netns: NETNS, initial: 3 });
  try {
    const few = [1, 2, 3, 4, 7, 200];
    expect(Object.fromEntries(await probe.endpoints(few))).toEqual({ 1: 1, 2: 2, 3: 3, 4: 0, 7: 3, 200: 0 });
    const many = Array.from({ length: 100 }, (_, k) => k + 1);
    const counts = await probe.endpoints(many);
    expect(many.filter((i) => counts.get(i) !== i % 4)).toEqual([]);
  } finally {
    probe.close();
  }
});
