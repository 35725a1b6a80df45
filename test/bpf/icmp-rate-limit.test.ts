/*
 * ICMP rejects are rate-limited per CPU with the kernel's defaults (net.ipv4.icmp_msgs_per_sec
 * 1000, icmp_msgs_burst 50): a flood of SYNs from forged sources to a Service without endpoints
 * gets the burst of replies, then silence, counted; the budget comes back with time.
 *
 * BPF_PROG_TEST_RUN runs the program on the caller's CPU, so the test pins its thread to one CPU
 * (and checks afterwards that only that CPU's bucket was used): one bucket, exact numbers. Time
 * still passes while packets run, so bounds that refill could widen are computed from the measured
 * duration, never from an assumed speed.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { DatapathFixture, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_PASS, type SvcDef } from './fixture.js';
import { ipv4Frame, parseIcmp, prng } from './packets.js';

const RATE_PER_MS = 1; // 1000 per second
const BURST = 50;
const REFILL_STEP_MS = 20; // the bucket refills at most every 20 ms, as the kernel's

const EMPTY: SvcDef = { name: 'empty', vip: '10.0.0.99', port: 80, targetPort: 80, backends: [] };

let fx: DatapathFixture;
let savedAffinity = '';
let cpu = -1;
const rand = prng(4242);

/** The CPUs this thread may run on, e.g. "0-1". */
function allowedCpus(): string {
  const m = /^Cpus_allowed_list:\s*(\S+)$/m.exec(readFileSync(`/proc/self/task/${process.pid}/status`, 'utf8'));
  if (!m) throw new Error('no Cpus_allowed_list in /proc/self/task/<pid>/status');
  return m[1] as string;
}

beforeAll(async () => {
  savedAffinity = allowedCpus();
  cpu = Number(/^\d+/.exec(savedAffinity)?.[0]);
  // Without -a taskset sets only the thread whose id is the pid: the one running the tests.
  execFileSync('taskset', ['-p', '-c', String(cpu), String(process.pid)], { stdio: 'ignore' });
  expect(allowedCpus()).toBe(String(cpu));
  fx = new DatapathFixture(`/sys/fs/bpf/vipr-test-icmp-${process.pid}`);
  await fx.program([EMPTY]);
});

afterAll(() => {
  fx?.close();
  if (savedAffinity) execFileSync('taskset', ['-p', '-c', savedAffinity, String(process.pid)], { stdio: 'ignore' });
});

const forgedSyn = (): Buffer =>
  ipv4Frame({ src: `10.${1 + rand(200)}.${rand(256)}.${1 + rand(250)}`, dst: EMPTY.vip, proto: 'tcp', sport: 1024 + rand(60000), dport: 80 });

interface Burst {
  /** Verdict of each SYN, in order. */
  verdicts: number[];
  /** When each SYN's program run began and ended (ns, this process's monotonic clock). */
  ran: Array<[bigint, bigint]>;
  replies: number;
  drops: number;
  elapsedMs: number;
}

/** Sends SYNs to the empty Service, `count` of them or, with `forMs`, for that long. */
function flood(count: number, forMs = 0): Burst {
  const sent: Array<{ syn: Buffer; verdict: number; out: Buffer }> = [];
  const syns = Array.from({ length: forMs > 0 ? 64 : count }, forgedSyn);
  const start = process.hrtime.bigint();
  const ms = (): number => Number(process.hrtime.bigint() - start) / 1e6;
  const ran: Array<[bigint, bigint]> = [];
  while (forMs > 0 ? ms() < forMs : sent.length < count) {
    const syn = syns[sent.length % syns.length] as Buffer;
    const began = process.hrtime.bigint();
    sent.push({ syn, ...fx.ingress(syn) });
    ran.push([began, process.hrtime.bigint()]);
  }
  const elapsedMs = ms();
  for (const { syn, verdict, out } of sent.slice(0, 200)) {
    if (verdict !== TC_ACT_REDIRECT) continue;
    // A reply is a real one: port unreachable back to the forged source.
    expect(parseIcmp(out)).toMatchObject({ src: EMPTY.vip, dst: `${syn[26]}.${syn[27]}.${syn[28]}.${syn[29]}`, type: 3, code: 3, icmpChecksumOk: true });
  }
  const verdicts = sent.map((x) => x.verdict);
  return {
    verdicts,
    ran,
    replies: verdicts.filter((v) => v === TC_ACT_REDIRECT).length,
    drops: verdicts.filter((v) => v === TC_ACT_SHOT).length,
    elapsedMs,
  };
}

/** The most replies a burst may get: the bucket's burst, plus what refills during the burst. */
const maxReplies = (b: Burst, burst = BURST): number => burst + (b.elapsedMs >= REFILL_STEP_MS ? Math.ceil(b.elapsedMs * RATE_PER_MS) : 0);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('ICMP rejects are rate-limited', () => {
  test('a flood gets the burst of 50 replies, then drops counted as drop_icmp_rate_limit', () => {
    const rejectBefore = fx.counter('reject');
    const limitedBefore = fx.counter('drop_icmp_rate_limit');
    const b = flood(150);
    expect(b.verdicts.slice(0, BURST).every((v) => v === TC_ACT_REDIRECT)).toBe(true);
    expect(b.replies + b.drops).toBe(150);
    // Exactly 50 when the flood takes under 20 ms (the usual case); never more than refill allows.
    expect(b.replies).toBeLessThanOrEqual(maxReplies(b));
    expect(b.drops).toBeGreaterThanOrEqual(150 - maxReplies(b));
    expect(fx.counter('drop_icmp_rate_limit') - limitedBefore).toBe(b.drops);
    // Every SYN was a reject; only the ICMP was withheld.
    expect(fx.counter('reject') - rejectBefore).toBe(150);
  });

  test('after a pause the full burst is available again', async () => {
    flood(100); // whatever refilled meanwhile is spent
    await sleep(100);
    const b = flood(150);
    expect(b.verdicts.slice(0, BURST).every((v) => v === TC_ACT_REDIRECT)).toBe(true);
    expect(b.replies).toBeLessThanOrEqual(maxReplies(b));
  });

  test('under a sustained flood, replies follow the rate: 1 per ms after the burst', () => {
    flood(100);
    const b = flood(0, 400);
    // The bucket as the kernel's: every >= 20 ms it adds the time since its last refill at 1 per
    // ms (whole tokens; under one, the stamp stays), up to the burst. Replayed over when each SYN
    // ran, it says how many replies the flood should get; on a busy machine the flood itself is
    // preempted (this test shares its CPU), so the rate over the wall time is no bound, but the
    // replay is. Each program run read the clock somewhere between its began and ended stamps:
    // replaying both brackets it.
    const replay = (at: (r: [bigint, bigint]) => bigint, tokens: number, stamp: bigint): number => {
      let replies = 0;
      for (const r of b.ran) {
        const now = at(r);
        const elapsed = now - stamp;
        if (elapsed >= BigInt(REFILL_STEP_MS * 1e6)) {
          const add = Number((elapsed > 1_000_000_000n ? 1_000_000_000n : elapsed) * BigInt(RATE_PER_MS) / 1_000_000n);
          if (add > 0) {
            tokens = Math.min(BURST, tokens + add);
            stamp = now;
          }
        }
        if (tokens > 0) {
          tokens--;
          replies++;
        }
      }
      return replies;
    };
    // flood(100) just spent the bucket: it starts near empty, stamped at most a step ago.
    const first = (b.ran[0] as [bigint, bigint])[0];
    const fewest = replay((r) => r[0], 0, first);
    const most = replay((r) => r[1], BURST, first - BigInt(REFILL_STEP_MS * 1e6));
    expect(b.replies).toBeGreaterThanOrEqual(fewest - 2);
    expect(b.replies).toBeLessThanOrEqual(most + 2);
    expect(b.replies).toBeLessThanOrEqual(maxReplies(b));
    // On a quiet machine this is ~1 per ms after the burst; the flood is far faster than that.
    expect(b.drops).toBeGreaterThan(0);
  });

  test('only the pinned CPU\'s bucket was used', () => {
    const buckets = fx.dp.maps.icmpBucket.lookupPerCpu(0) ?? [];
    const used = buckets.map((bk, i) => (bk.refilled_ns > 0n ? i : -1)).filter((i) => i >= 0);
    expect(used).toEqual([cpu]);
  });

  test('XDP hands a reject to TC without spending a token (one token per reply)', async () => {
    // After a pause any use of the bucket would refill it and move its stamp.
    await sleep(2 * REFILL_STEP_MS);
    const before = fx.dp.maps.icmpBucket.lookupPerCpu(0)?.[cpu];
    const syn = forgedSyn();
    const { verdict, out } = fx.xdp(syn);
    expect(verdict).toBe(XDP_PASS);
    expect(out.equals(syn)).toBe(true);
    expect(fx.dp.maps.icmpBucket.lookupPerCpu(0)?.[cpu]).toEqual(before);
  });
});
