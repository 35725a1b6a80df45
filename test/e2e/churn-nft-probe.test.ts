/*
 * The bench's nftables churn probe (`nft monitor rules`) is ready only when the monitor listens.
 * nft lists the whole ruleset before it listens and starts that listing over when a commit
 * overtakes it; on a slow node with 1,000 Services (the VM lab) the changes the churn made
 * meanwhile were never printed, and the cell waited for them until it was stopped. Here the
 * overtaking commits are made on purpose for the first seconds: a change made as soon as the
 * probe says it is ready must be seen.
 *
 * And the whole nftables churn, agent included, when its looks are slow: a look over hundreds of
 * pending changes takes milliseconds here (as a few do under the VM lab's emulation), and the
 * churn must still write, read the monitor and end.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { measureChurn, probeFor, type ChurnResult, type DataplaneProbe } from '../../src/bench/churn.js';
import { BENCH_NAMESPACE, serviceName } from '../../src/bench/plan.js';
import { nftServicePortChainNameBase } from '../../src/render/hash.js';
import { run } from '../../src/lab/exec.js';

const NETNS = `vipr-t-nftprobe-${process.pid}`;
const SERVICES = 1000;
const CHANGED = 7;

function serviceChain(index: number): string {
  return `service-${nftServicePortChainNameBase({ namespace: BENCH_NAMESPACE, name: serviceName(index), port: '' }, 'tcp')}`;
}

function dispatchRule(index: number, endpoints: number): string {
  const verdicts = Array.from({ length: endpoints }, (_, j) => `${j} : goto endpoint-${index}-${j}`).join(', ');
  return `add rule ip kube-proxy ${serviceChain(index)} numgen random mod ${endpoints} vmap { ${verdicts} }`;
}

/** A table shaped like kube-proxy's at 1,000 Services: a chain per Service with a vmap over 3 endpoint chains. */
function kubeProxyTable(): string {
  const lines = ['add table ip kube-proxy', 'add chain ip kube-proxy churn-commits'];
  for (let i = 0; i < SERVICES; i++) {
    lines.push(`add chain ip kube-proxy ${serviceChain(i)}`);
    for (let j = 0; j < 3; j++) {
      lines.push(`add chain ip kube-proxy endpoint-${i}-${j}`);
      lines.push(`add rule ip kube-proxy endpoint-${i}-${j} meta l4proto tcp dnat to 10.244.0.${11 + j}:9000`);
    }
    lines.push(dispatchRule(i, 3));
  }
  return `${lines.join('\n')}\n`;
}

beforeAll(() => {
  execFileSync('ip', ['netns', 'add', NETNS]);
  execFileSync('ip', ['netns', 'exec', NETNS, 'nft', '-f', '-'], { input: kubeProxyTable() });
});

afterAll(() => {
  execFileSync('ip', ['netns', 'del', NETNS]);
});

test('a change made once the nftables probe is ready is seen, although commits overtook the monitor at its start', async () => {
  // Commits for the first 3 s, as an agent's sync would make: each one restarts nft's listing.
  const commits = (async () => {
    const until = performance.now() + 3000;
    while (performance.now() < until) await run('nft', ['add', 'rule', 'ip', 'kube-proxy', 'churn-commits', 'counter'], { netns: NETNS });
  })();
  let probe: DataplaneProbe | null = null;
  try {
    probe = await probeFor('nftables', { pinDir: '', netns: NETNS, initial: 3 });
    execFileSync('ip', ['netns', 'exec', NETNS, 'nft', '-f', '-'], { input: `flush chain ip kube-proxy ${serviceChain(CHANGED)}\n${dispatchRule(CHANGED, 2)}\n` });
    let endpoints = 3;
    for (const until = performance.now() + 10_000; performance.now() < until; await new Promise((r) => setTimeout(r, 50))) {
      endpoints = (await probe.endpoints([CHANGED])).get(CHANGED) ?? -1;
      if (endpoints === 2) break;
    }
    expect(endpoints).toBe(2);
  } finally {
    probe?.close();
    await commits;
  }
}, 120_000);

/** measureChurn in mode nftables with the real agent, in a namespace of its own. */
async function nftablesChurn(services: number, perSecond: number, durationMs: number): Promise<ChurnResult> {
  const netns = `vipr-t-churnfast-${process.pid}`;
  const pinDir = `/sys/fs/bpf/vipr-t-churnfast-${process.pid}`;
  const logDir = mkdtempSync(join(tmpdir(), 'vipr-t-churnfast-'));
  execFileSync('ip', ['netns', 'add', netns]);
  try {
    execFileSync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
    return await measureChurn({
      mode: 'nftables',
      services,
      backendIps: ['10.244.0.11', '10.244.0.12', '10.244.0.13'],
      perSecond,
      durationMs,
      nodeNetns: netns,
      pinDir,
      agentArgs: ['--mode', 'nftables'],
      logDir,
      signal: new AbortController().signal,
    });
  } finally {
    execFileSync('ip', ['netns', 'del', netns]);
    rmSync(pinDir, { recursive: true, force: true });
    rmSync(logDir, { recursive: true, force: true });
  }
}

test('an nftables churn far faster than its agent is followed to its end: the bench keeps writing and reading while hundreds of changes wait', async () => {
  // Before: the watcher's looks over the pending changes took over 1 ms, it skipped its timer and
  // looped on already resolved promises, and nothing else in the process ran again (the writer's
  // timers, the monitor's output, the API's events to the agent): the cell never ended.
  // 500 changes at 1,000 a second: hundreds in flight at once over the pool's 997 Services.
  const res = await nftablesChurn(SERVICES, 1000, 500);
  expect(res.latenciesMs).toHaveLength(500);
  // The writer kept its pace: its timers ran while the watcher looked.
  expect(res.rate).toBeGreaterThan(500);
  expect(Number.isFinite(res.p99)).toBe(true);
}, 240_000);

test('every change of a churn is timed when it outruns its few Services: a Service gets its next change only once its last has landed', async () => {
  // Before: with every Service of the pool waiting for a change, the writer changed one again;
  // the first went untimed, and one that undid it could leave the agent nothing to write (the
  // probe then waited for a rule that never came, and the cell failed after 120 s).
  const res = await nftablesChurn(10, 1000, 300);
  expect(res.latenciesMs).toHaveLength(300);
  expect(Number.isFinite(res.p99)).toBe(true);
}, 240_000);
