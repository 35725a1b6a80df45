/*
 * Per-backend open-flow counters (lc) must not drift when a flow's packets are processed on
 * several CPUs at once. Two threads, each pinned to its own CPU, run the real TC ingress program
 * (BPF_PROG_TEST_RUN runs on the caller's CPU): each opens half of 10,000 flows, then both send
 * the FIN of every flow in lockstep (a spin barrier per flow), so the two CPUs close the same flow
 * at the same moment. Exactly one of them may count the close: afterwards every counter is 0.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { DatapathFixture, type SvcDef } from './fixture.js';
import { TCP_ACK, TCP_FIN, ipv4Frame } from './packets.js';
import { numPossibleCpus } from '../../src/bpf/libbpf.js';
import { packageRoot } from '../../src/paths.js';

const FLOWS = 10_000;
const LC: SvcDef = { name: 'lc', vip: '10.0.0.20', port: 80, targetPort: 80, backends: ['10.244.1.71', '10.244.1.72', '10.244.1.73'], scheduler: 'lc' };

/*
 * The worker: plain JavaScript (worker threads do not go through ts-jest), using the compiled
 * libbpf binding from dist/. It pins its own thread, opens its half of the flows, reports, waits
 * for the go, then closes every flow in step with the other worker.
 */
const WORKER = `
const { workerData, parentPort } = require('node:worker_threads');
const { readFileSync, readlinkSync } = require('node:fs');
const { execFileSync } = require('node:child_process');
(async () => {
  const { me, cpu, progFd, syns, fins, shared, libbpfUrl } = workerData;
  const libbpf = await import(libbpfUrl);
  const tid = readlinkSync('/proc/thread-self').split('/').pop();
  execFileSync('taskset', ['-p', '-c', String(cpu), tid], { stdio: 'ignore' });
  const sync = new Int32Array(shared); // [progress of worker 0, progress of worker 1, go]
  for (let i = me; i < syns.length; i += 2) libbpf.progTestRun(progFd, Buffer.from(syns[i]));
  parentPort.postMessage({ opened: true });
  Atomics.wait(sync, 2, 0);
  for (let i = 0; i < fins.length; i++) {
    Atomics.store(sync, me, i + 1);
    Atomics.notify(sync, me);
    // Spin, so both CPUs close flow i together; sleep if the other thread is not running.
    let spins = 0;
    for (let seen; (seen = Atomics.load(sync, 1 - me)) < i + 1; ) if (++spins > 5000) Atomics.wait(sync, 1 - me, seen, 1);
    libbpf.progTestRun(progFd, Buffer.from(fins[i]));
  }
  // Field 39 of stat: the CPU this thread last ran on.
  const ranOn = Number(readFileSync('/proc/thread-self/stat', 'utf8').split(') ')[1].split(' ')[36]);
  parentPort.postMessage({ done: true, ranOn });
})().catch((err) => parentPort.postMessage({ error: String(err && err.stack || err) }));
`;

let fx: DatapathFixture;

beforeAll(async () => {
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-ctrace-${process.pid}`);
  await fx.program([LC]);
});

afterAll(() => fx?.close());

function activeCounts(): number[] {
  return fx.dp.maps.backendConns.entries().map(([, v]) => v.active);
}

test('after 10,000 flows opened and closed on two CPUs at once, every per-backend counter is 0', async () => {
  const libbpfJs = join(packageRoot(), 'dist', 'src', 'bpf', 'libbpf.js');
  if (!existsSync(libbpfJs)) throw new Error(`${libbpfJs} is missing: run 'make build' first`);
  expect(numPossibleCpus()).toBeGreaterThanOrEqual(2);
  // The two CPUs this process may use.
  const allowed = execFileSync('taskset', ['-c', '-p', String(process.pid)], { encoding: 'utf8' });
  expect(allowed).toMatch(/0-1|0,1/);

  const tuple = (i: number) => ({ src: `172.31.${i >> 8}.${i & 255}`, dst: LC.vip, proto: 'tcp' as const, sport: 40000 + (i % 20000), dport: 80 });
  const syns = Array.from({ length: FLOWS }, (_, i) => ipv4Frame(tuple(i)));
  const fins = Array.from({ length: FLOWS }, (_, i) => ipv4Frame({ ...tuple(i), tcpFlags: TCP_FIN | TCP_ACK }));
  const shared = new SharedArrayBuffer(3 * 4);
  const sync = new Int32Array(shared);
  const workers = [0, 1].map((me) => new Worker(WORKER, {
    eval: true,
    workerData: { me, cpu: me, progFd: fx.dp.programs.ingress, syns, fins, shared, libbpfUrl: pathToFileURL(libbpfJs).href },
  }));
  const next = (w: Worker): Promise<{ opened?: boolean; done?: boolean; ranOn?: number; error?: string }> =>
    new Promise((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
  try {
    const opened = await Promise.all(workers.map(next));
    for (const m of opened) expect(m.error).toBeUndefined();
    expect(activeCounts().reduce((a, b) => a + b, 0)).toBe(FLOWS);

    const finished = Promise.all(workers.map(next));
    Atomics.store(sync, 2, 1);
    Atomics.notify(sync, 2);
    const done = await finished;
    for (const m of done) expect(m.error).toBeUndefined();
    expect(done.map((m) => m.ranOn)).toEqual([0, 1]);
    expect(activeCounts()).toEqual(LC.backends.map(() => 0));
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}, 120_000);
