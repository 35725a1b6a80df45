/*
 * The benches' path from an agent in a node's namespace to the fake API server: socat
 * (socatToBridgeArgv) → the Unix bridge (startBridge) → the server, with 1,000 Services and
 * EndpointSlices as in the churn metric at 1,000. The bridge destroyed the agent's connection as
 * soon as the server closed its own after a response, dropping what was still queued for an agent
 * slow to read (busy with the Services list: a busy machine, the VM lab's emulated CPU); the
 * EndpointSlice list came cut short, node-fetch waited forever for the rest, and the churn agent's
 * "initial lists complete" never came. Here the agent (dist/, from `make build`) starts in the
 * namespace several times, as the churn metric starts it; each must list everything within 20 s,
 * far below LIST_TIMEOUT_MS (60 s), so a list that had to be retried fails the test too.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { benchObjects } from '../../src/bench/plan.js';
import { kubeconfigFor } from '../../src/lab/fake-apiserver/kubeconfig.js';
import { FakeApiServer, type KubeObject } from '../../src/lab/fake-apiserver/server.js';
import { socatToBridgeArgv, startBridge } from '../../src/lab/fake-apiserver/unix-bridge.js';
import { startInNetns, stopProcesses, type StartedProcess } from '../../src/lab/processes.js';

const NETNS = `vipr-socat-${process.pid}`;
const PORT = 6443;
const SERVICES = 1000;
const STARTS = 5;

/** The agent's log says it has listed everything (src/sources/kube.ts). */
const LISTED = '"msg":"initial lists complete"';

describe('socat to the fake API server bridge, 1,000 Services', () => {
  let dir = '';
  let api: FakeApiServer;
  let bridge: { server: Server; sockets: Set<Socket> } | null = null;
  let socat: StartedProcess | null = null;

  beforeAll(async () => {
    execFileSync('ip', ['netns', 'add', NETNS]);
    execFileSync('ip', ['-n', NETNS, 'link', 'set', 'lo', 'up']);
    dir = mkdtempSync(join(tmpdir(), 'vipr-socat-'));
    writeFileSync(join(dir, 'kubeconfig'), kubeconfigFor(`http://127.0.0.1:${PORT}`));
    api = new FakeApiServer();
    await api.start();
    api.createOrUpdate({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'node', labels: {} }, status: { addresses: [] } });
    for (const o of benchObjects(SERVICES, ['10.244.0.11', '10.244.0.12', '10.244.0.13'], 'node')) api.createOrUpdate(o as unknown as KubeObject);
    const sock = join(dir, 'api.sock');
    bridge = await startBridge(sock, Number(new URL(api.url).port));
    socat = await startInNetns({
      netns: NETNS,
      argv: socatToBridgeArgv(PORT, sock),
      log: join(dir, 'socat.log'),
      ready: (text) => text.includes('listening on'),
      timeoutMs: 10_000,
    });
  });

  afterAll(async () => {
    if (socat) await stopProcesses([socat], 2000);
    if (bridge) {
      for (const s of bridge.sockets) s.destroy();
      await new Promise<void>((r) => bridge?.server.close(() => r()));
    }
    await api.stop();
    execFileSync('ip', ['netns', 'del', NETNS]);
    rmSync(dir, { recursive: true, force: true });
  });

  it(`the agent lists every Service and EndpointSlice, ${STARTS} starts in a row`, async () => {
    for (let i = 0; i < STARTS; i++) {
      const log = join(dir, `agent-${i}.log`);
      // nftables: the mode whose churn agent stalled; its rules stay in this namespace. Debug
      // logging slows the agent's reading of the lists just enough to lose the race most runs.
      const agent = await startInNetns({
        netns: NETNS,
        argv: [
          process.execPath, resolve('dist/src/cli/main.js'), 'run', '--kubeconfig', join(dir, 'kubeconfig'), '--mode', 'nftables',
          '--pin-dir', `/sys/fs/bpf/${NETNS}`, '--node-name', 'node', '--min-sync-period', '0s', '--log-level', 'debug',
        ],
        log,
        ready: (text) => text.includes(LISTED),
        timeoutMs: 20_000,
      }).catch((err: unknown) => err as Error);
      if (agent instanceof Error) {
        const started = (agent as Error & { started?: StartedProcess | null }).started;
        if (started) await stopProcesses([started], 5000);
        throw new Error(`start ${i + 1}: ${agent.message}`);
      }
      await stopProcesses([agent], 5000);
      expect(readFileSync(log, 'utf8')).toContain('"services":1000,"endpointSlices":1000');
    }
  }, 150_000);
});
