/*
 * `vipr lab vm`: every mode measured on one kernel that has IPVS. This machine's kernel has no
 * IPVS, so the lab runs in a qemu VM booted from Debian's own packages: scripts/lab-vm.sh builds
 * the image (debootstrap minbase, linux-image-amd64, this host's node and the built project),
 * this module boots it, captures the serial console, and reads the bench JSON the guest leaves
 * in a 9p-shared directory (scripts/lab-vm/guest-run.sh runs `vipr bench`, or the lab probes
 * when the build has no bench; it copies its labs' logs and a process list to guest-state/ there
 * at the end and, with --watch-guest, every 30 s, so a run that hangs or is stopped still shows
 * what the guest was doing).
 *
 * Timing (the default, `icount`): the guest runs under TCG with qemu's instruction counting,
 * `-icount shift=N,sleep=off,align=off`: guest time advances 2^N ns per instruction executed, and
 * jumps to the next timer when every vCPU idles, so the guest's clocks follow the work it did, not
 * the host's load. icount is TCG-only (KVM runs instructions natively and cannot count them), so
 * KVM is never used for these runs. With `wall` timing (the earlier behaviour) KVM is tried first
 * when /dev/kvm exists; nested KVM can abort qemu (an MSR it cannot set) or hang before the kernel
 * prints anything, so a KVM boot that shows no kernel output within `kvmProbeMs` is abandoned for
 * TCG emulation, and the result says which one ran.
 *
 * Beside the VM's figures, `vipr bench` runs on this machine for the modes it has (or its JSON is
 * given), and calibration.ts compares the two.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { parseJson, readJsonFile, type JsonRecordKind } from '../json-file.js';
import { BENCH_PROGRAMS, ensureBenchProgram } from './traffic-programs.js';
import { repoRoot } from './lab.js';
import { CALIBRATION_MODES } from './calibration.js';
import { hostNorthSouthArgv, parseNorthSouthReport, readNorthSouthReport, type VmNorthSouthReport } from './vm-north-south.js';

/** vipr bench's dataplanes; `iptables` is iptables-legacy, `iptables-nft` the nft backend. */
export const LAB_VM_MODES = ['bpf', 'iptables', 'iptables-nft', 'nftables', 'ipvs'] as const;
export type LabVmMode = (typeof LAB_VM_MODES)[number];
export type Accel = 'kvm' | 'tcg';
/** `icount`: TCG with instruction counting (deterministic guest time); `wall`: the guest's clock is the host's. */
export type VmTiming = 'icount' | 'wall';

/**
 * icount shift: 1 instruction = 2^3 = 8 ns of guest time (125 million instructions per guest
 * second). TCG with icount executes on the order of 10^8 guest instructions per second here, so
 * a guest second costs about a wall second: the bench's fixed measuring windows, and every
 * timeout in the bench, the agent and the rule tools, see the same pace as under plain TCG, where
 * they are known to work. A smaller shift (a faster guest, closer to the real CPU's ~1-3
 * instructions per ns) multiplies the wall time of every fixed window by 2 per step; a larger one
 * makes the guest so slow that its timers (the 4 ms tick, TCP's delayed ACK) take a larger share
 * of each measured transaction.
 */
export const DEFAULT_ICOUNT_SHIFT = 3;

/** What icount timing leaves out: printed with every icount run. */
export const ICOUNT_IGNORES =
  'icount timing counts instructions only: every instruction costs 2^N ns, so it ignores caches, ' +
  'branch prediction, TLB misses, memory latency and the differing cost of instructions (a division ' +
  'costs what an add does); guest time is a weighted instruction count, comparable between modes, not a real latency';

/** `--quick` for `vipr lab vm`: one Service count, two rounds (a spread), the bench's short windows. */
export const QUICK_VM_SERVICES: readonly number[] = [1];
export const QUICK_VM_ROUNDS = 2;

export const DEFAULT_VM_CACHE = '/var/cache/vipr/lab-vm';
/** Requests per metric and mode: enough for a p99 under emulation, at ~50-200 requests/s. */
export const DEFAULT_COUNT = 500;
export const QUICK_COUNT = 100;

export interface LabVmOptions {
  /** Modes to measure, in this order (default: all). */
  modes?: readonly LabVmMode[];
  /** Fewer requests per metric (QUICK_COUNT), and `--quick` for `vipr bench`. */
  quick?: boolean;
  /** Requests per metric when the guest measures with the lab probes (default DEFAULT_COUNT). */
  count?: number;
  /** `vipr bench --services` (default: the bench's own, or its --quick ones). */
  services?: readonly number[];
  /** `vipr bench --rounds`. */
  rounds?: number;
  /** `vipr bench --traffic-only`, in the VM and on this machine (each node programmed once per count). */
  trafficOnly?: boolean;
  /**
   * The guest copies its labs' logs and a process list to the run's guest-state/ every 30 s, not
   * only at the end (for a run that hangs); each copy stalls the measurements on the one vCPU.
   */
  watchGuest?: boolean;
  /** `auto` tries KVM, then TCG (`wall` timing only; icount always runs TCG). */
  accel?: 'auto' | Accel;
  /** Default `icount`. */
  timing?: VmTiming;
  /** icount's shift (default DEFAULT_ICOUNT_SHIFT). */
  icountShift?: number;
  /** Address families of the traffic measured (`vipr bench --families`; default ipv4). */
  families?: 'ipv4' | 'ipv4,ipv6';
  /**
   * Calibration against this machine: `run` (default) runs `vipr bench` here for the modes this
   * kernel has, with the VM's Service counts and rounds; a path reads that bench's JSON instead;
   * `none` skips it.
   */
  host?: 'run' | 'none' | { json: string };
  /** Image cache (debootstrap base, kernel, rootfs.img) and run directories. */
  cacheDir?: string;
  /** Rebuild the debootstrap base even when cached. */
  rebuildBase?: boolean;
  memoryMb?: number;
  cpus?: number;
  /** The whole guest run (boot + bench); default 4 hours (40 minutes with quick). */
  timeoutMs?: number;
  /** How long a KVM boot may stay silent before TCG is used instead. */
  kvmProbeMs?: number;
  /** Every line of the image build and of the serial console, as it comes. */
  onLine?: (line: string) => void;
}

const BenchResult = z.object({
  mode: z.string(),
  services: z.number(),
  placement: z.string(),
  metric: z.string(),
  /** Traffic rows of newer benches: IPv4 or IPv6 (absent: IPv4). */
  family: z.string().optional(),
  p50: z.number(),
  // Control-plane figures (sync times, memory) have no p99 and no rate.
  p99: z.number().nullable(),
  rate: z.number().nullable(),
  unit: z.string(),
  rounds: z.number().optional(),
  /** Each round's p50 (newer benches). */
  p50ByRound: z.array(z.number()).optional(),
});
const BenchReport = z.object({
  env: z.record(z.unknown()),
  results: z.array(BenchResult),
  /** Modes the bench could not run, and why (vipr bench reports them; the probes do not). */
  unavailable: z.array(z.object({ mode: z.string(), reason: z.string() })).optional(),
});
export type BenchResult = z.infer<typeof BenchResult>;
export type BenchReport = z.infer<typeof BenchReport>;

export interface LabVmResult {
  accel: Accel;
  /** The icount shift the guest ran with; null: wall-clock timing. */
  icountShift: number | null;
  /** `vipr bench` on this machine (run or read), for the calibration; null when skipped or failed. */
  hostReport: BenchReport | null;
  /** Where hostReport came from, or why there is none. */
  hostSource: string;
  /** Why KVM was not used, when it was tried and failed. */
  kvmProblem: string | null;
  report: BenchReport;
  /** The guest workload's exit code (non-zero: some mode failed; its results are missing). */
  guestExitCode: number;
  /** Holds bench.json, guest.log, serial.log, request.env. */
  runDir: string;
  serialLog: string;
}

/** `vipr lab vm --north-south`'s result: the guest's north-south report and this machine's. */
export interface LabVmNorthSouthResult extends Omit<LabVmResult, 'report' | 'hostReport'> {
  report: VmNorthSouthReport;
  hostReport: VmNorthSouthReport | null;
}

/** The VM failed: image build, boot, or the guest produced no results. */
export class LabVmError extends Error {
  override readonly name = 'LabVmError';
}

export interface VmFiles {
  kernel: string;
  initrd: string;
  rootfs: string;
  /** Shared with the guest as 9p tag `viprout`, mounted at /out. */
  outDir: string;
}

/**
 * qemu's command line. The root image is opened with snapshot=on: runs never change it. With an
 * icount shift the CPU is TCG with instruction counting, single-threaded (icount cannot run with
 * multi-threaded TCG: the vCPUs take turns on one host thread, so one instruction clock orders them).
 */
export function qemuArgv(files: VmFiles, accel: Accel, memoryMb: number, cpus: number, icountShift: number | null = null): string[] {
  if (icountShift !== null && accel !== 'tcg') throw new ConfigError('vipr lab vm: icount timing needs TCG (KVM cannot count instructions)');
  const cmdline = [
    'console=ttyS0',
    'earlyprintk=serial,ttyS0',
    'root=/dev/vda',
    'rw',
    'init=/sbin/vipr-init',
    // Keeps eth0 instead of enp0s2-style names.
    'net.ifnames=0',
    'panic=-1',
    'quiet',
  ].join(' ');
  return [
    ...(accel === 'kvm'
      ? ['-accel', 'kvm', '-cpu', 'host']
      : icountShift !== null
        ? ['-accel', 'tcg,thread=single', '-cpu', 'max', '-icount', `shift=${icountShift},sleep=off,align=off`]
        : ['-accel', 'tcg,thread=multi', '-cpu', 'max']),
    '-M', 'q35',
    '-m', String(memoryMb),
    '-smp', String(cpus),
    '-nographic',
    '-nodefaults',
    '-no-reboot',
    '-serial', 'stdio',
    '-kernel', files.kernel,
    '-initrd', files.initrd,
    '-append', cmdline,
    '-drive', `file=${files.rootfs},format=raw,if=virtio,snapshot=on`,
    '-virtfs', `local,path=${files.outDir},mount_tag=viprout,security_model=none,id=out`,
  ];
}

/** The guest's request file: shell assignments of validated values only. */
export function requestEnv(
  modes: readonly LabVmMode[],
  count: number,
  quick: boolean,
  accel: Accel,
  bench: {
    services?: readonly number[]; rounds?: number; families?: string; icountShift?: number | null; trafficOnly?: boolean; watchGuest?: boolean;
    /** `vipr bench --north-south` with these modes instead of the latency bench. */
    northSouth?: readonly string[];
  } = {},
): string {
  return [
    `VIPR_VM_MODES="${modes.join(' ')}"`,
    `VIPR_VM_COUNT=${count}`,
    `VIPR_VM_QUICK=${quick ? 1 : 0}`,
    `VIPR_VM_ACCEL=${accel}`,
    `VIPR_VM_SERVICES="${(bench.services ?? []).join(',')}"`,
    `VIPR_VM_ROUNDS="${bench.rounds ?? ''}"`,
    `VIPR_VM_FAMILIES="${bench.families ?? ''}"`,
    `VIPR_VM_ICOUNT_SHIFT="${bench.icountShift ?? ''}"`,
    `VIPR_VM_TRAFFIC_ONLY=${bench.trafficOnly === true ? 1 : 0}`,
    `VIPR_VM_NORTH_SOUTH="${(bench.northSouth ?? []).join(' ')}"`,
    `VIPR_VM_WATCH=${bench.watchGuest === true ? 1 : 0}`,
    '',
  ].join('\n');
}

/** The bench report the VM writes (`vipr bench --json` inside it). */
const BENCH_REPORT: JsonRecordKind<BenchReport> = {
  what: 'bench report',
  schema: BenchReport,
  fix: "the VM's bench wrote something else: see the VM's serial log",
};

/** A bench report file the user names (--host-json, --from-json). */
const GIVEN_BENCH_REPORT: JsonRecordKind<BenchReport> = {
  what: 'bench report',
  schema: BenchReport,
  fix: "give a file written by 'vipr bench --json' or 'vipr lab vm --json'",
};

/** The bench report at `path`; a missing or bad file is a one-line JsonFileError. */
export function readBenchReport(path: string): BenchReport {
  return readJsonFile(path, GIVEN_BENCH_REPORT);
}

/** `text` (read from `source`) as a bench report, or a one-line JsonFileError. */
export function parseBenchReport(text: string, source: string): BenchReport {
  return parseJson(text, source, BENCH_REPORT);
}

/** How the guest of a saved VM report was timed (guest-run.sh records accel and icountShift in env). */
export function reportTiming(report: BenchReport): { accel: Accel; icountShift: number | null } {
  const shift = report.env['icountShift'];
  return { accel: report.env['accel'] === 'kvm' ? 'kvm' : 'tcg', icountShift: typeof shift === 'number' ? shift : null };
}

const EMULATION_NOTE = 'emulated CPU (TCG): absolute times are meaningless, compare ratios between modes only';

const cell = (v: number | null, width: number): string =>
  (v === null ? '-' : String(Math.round(v * 10) / 10)).padStart(width);

/** The header line naming how the guest was timed. */
export function timingLine(accel: Accel, icountShift: number | null): string {
  if (icountShift !== null) {
    return (
      `qemu TCG with instruction counting: -icount shift=${icountShift},sleep=off,align=off ` +
      `(1 instruction = 2^${icountShift} = ${2 ** icountShift} ns of guest time; KVM not used: icount is TCG-only)`
    );
  }
  return `qemu ${accel === 'kvm' ? 'KVM' : 'TCG (emulation)'}`;
}

/** `min–max` of a row's per-round p50s, when it has more than one round. */
function roundsCell(r: BenchResult): string {
  const rounds = r.p50ByRound;
  if (!rounds || rounds.length < 2) return '-';
  return `${cell(Math.min(...rounds), 0).trim()}–${cell(Math.max(...rounds), 0).trim()}`;
}

/**
 * A table per metric, service count and placement: each mode's p50/p99/rate, the range of its
 * per-round p50s (when there were rounds), and its p50 relative to the baseline mode (bpf when
 * measured, else the first), which is the only column that means something under emulation.
 */
export function formatComparison(report: BenchReport, accel: Accel, icountShift: number | null = null): string {
  const env = report.env;
  const lines: string[] = [];
  const kernel = typeof env['kernel'] === 'string' ? env['kernel'] : 'unknown kernel';
  lines.push(`vipr lab vm: kernel ${kernel}, ${timingLine(accel, icountShift)}`);
  if (icountShift !== null) lines.push(`NOTE: ${ICOUNT_IGNORES.replace('2^N', `2^${icountShift}`)}`);
  else lines.push(accel === 'tcg' ? `NOTE: ${EMULATION_NOTE}` : 'NOTE: virtual machine: compare modes with each other, not with bare metal');
  const groups = new Map<string, BenchResult[]>();
  const title = (r: BenchResult, placement: string): string =>
    `${r.metric} (${r.unit}), ${r.services} service${r.services === 1 ? '' : 's'}, placement ${placement}` +
    (r.family !== undefined && r.family !== 'IPv4' ? `, ${r.family}` : '');
  // vipr bench's `direct` floor (no NAT) has no placement: it is shown in every placement's table.
  const floors = report.results.filter((r) => r.mode === 'direct');
  for (const r of report.results) {
    if (r.mode === 'direct') continue;
    const key = title(r, r.placement);
    if (!groups.has(key)) {
      groups.set(key, floors.filter((f) => f.metric === r.metric && f.services === r.services && (f.family ?? 'IPv4') === (r.family ?? 'IPv4')));
    }
    groups.get(key)?.push(r);
  }
  for (const [title, rows] of groups) {
    const base = rows.find((r) => r.mode === 'bpf') ?? rows[0];
    if (!base) continue;
    const withRounds = rows.some((r) => (r.p50ByRound?.length ?? 0) > 1);
    lines.push('', `${title}; ratio = p50 / p50 of ${base.mode}`);
    lines.push(
      `  ${'mode'.padEnd(13)} ${'p50'.padStart(9)} ${'p99'.padStart(9)} ${'rate/s'.padStart(8)} ${'ratio'.padStart(6)}` +
        (withRounds ? `  ${'p50 of rounds'.padStart(17)}` : ''),
    );
    for (const r of rows) {
      const ratio = base.p50 > 0 ? (r.p50 / base.p50).toFixed(2) : '-';
      lines.push(
        `  ${r.mode.padEnd(13)} ${cell(r.p50, 9)} ${cell(r.p99, 9)} ${cell(r.rate, 8)} ${ratio.padStart(6)}` +
          (withRounds ? `  ${roundsCell(r).padStart(17)}` : ''),
      );
    }
  }
  for (const u of report.unavailable ?? []) lines.push('', `${u.mode}: unavailable: ${u.reason}`);
  return `${lines.join('\n')}\n`;
}

type ResolvedVmOptions = Required<Omit<LabVmOptions, 'onLine' | 'count' | 'services' | 'rounds' | 'icountShift'>> &
  Pick<LabVmOptions, 'services' | 'rounds'> & { count: number; icountShift: number | null };

function resolveOptions(opts: LabVmOptions): ResolvedVmOptions {
  const modes = opts.modes ?? LAB_VM_MODES;
  if (modes.length === 0) throw new ConfigError('vipr lab vm: no modes to measure');
  for (const m of modes) {
    if (!(LAB_VM_MODES as readonly string[]).includes(m)) {
      throw new ConfigError(`vipr lab vm: unknown mode '${m}' (expected ${LAB_VM_MODES.join(', ')})`);
    }
  }
  const quick = opts.quick ?? false;
  const count = opts.count ?? (quick ? QUICK_COUNT : DEFAULT_COUNT);
  if (!Number.isInteger(count) || count < 20) throw new ConfigError(`vipr lab vm: --count must be an integer >= 20, got ${count}`);
  for (const n of opts.services ?? []) {
    if (!Number.isInteger(n) || n < 1) throw new ConfigError(`vipr lab vm: service counts must be positive integers, got ${n}`);
  }
  if (opts.rounds !== undefined && (!Number.isInteger(opts.rounds) || opts.rounds < 1)) {
    throw new ConfigError(`vipr lab vm: rounds must be a positive integer, got ${opts.rounds}`);
  }
  const timing = opts.timing ?? 'icount';
  const accel = opts.accel ?? 'auto';
  if (timing === 'icount' && accel === 'kvm') {
    throw new ConfigError('vipr lab vm: --accel kvm cannot count instructions (icount is TCG-only): use --timing wall for KVM');
  }
  const shift = opts.icountShift ?? DEFAULT_ICOUNT_SHIFT;
  if (!Number.isInteger(shift) || shift < 0 || shift > 10) {
    throw new ConfigError(`vipr lab vm: the icount shift must be an integer from 0 to 10, got ${shift}`);
  }
  if (timing === 'icount' && opts.cpus !== undefined && opts.cpus !== 1) {
    throw new ConfigError(`vipr lab vm: icount timing runs one vCPU (qemu hangs bringing up a second with sleep=off), got cpus ${opts.cpus}`);
  }
  const services = opts.services ?? (quick ? QUICK_VM_SERVICES : undefined);
  const rounds = opts.rounds ?? (quick ? QUICK_VM_ROUNDS : undefined);
  return {
    modes,
    quick,
    count,
    timing,
    icountShift: timing === 'icount' ? shift : null,
    families: opts.families ?? 'ipv4',
    host: opts.host ?? 'run',
    accel: timing === 'icount' ? 'tcg' : accel,
    cacheDir: opts.cacheDir ?? DEFAULT_VM_CACHE,
    rebuildBase: opts.rebuildBase ?? false,
    trafficOnly: opts.trafficOnly ?? false,
    watchGuest: opts.watchGuest ?? false,
    memoryMb: opts.memoryMb ?? 2048,
    // One vCPU under icount: the vCPUs would take turns on one host thread anyway (no more
    // compute from a second), and qemu 7.2 hangs bringing up a second vCPU with sleep=off.
    cpus: timing === 'icount' ? 1 : (opts.cpus ?? Math.min(2, availableParallelism())),
    timeoutMs: opts.timeoutMs ?? defaultTimeoutMinutes(quick, services, rounds) * 60_000,
    kvmProbeMs: opts.kvmProbeMs ?? 30_000,
    ...(services ? { services } : {}),
    ...(rounds !== undefined ? { rounds } : {}),
  };
}

/**
 * How long the guest may run: 40 minutes for a quick run of 2 rounds, 4 hours otherwise; a quick
 * run of more rounds gets 20 minutes a round, and one with 1,000 Services or more twice as long
 * (a round of every mode at 1,000 takes 15-20 minutes).
 */
export function defaultTimeoutMinutes(quick: boolean, services: readonly number[] | undefined, rounds: number | undefined): number {
  if (!quick) return 240;
  const large = (services ?? []).some((n) => n >= 1000);
  return 20 * Math.max(QUICK_VM_ROUNDS, rounds ?? QUICK_VM_ROUNDS) * (large ? 2 : 1);
}

/** The modes `vipr bench` runs on this machine for the calibration: the VM's that this kernel has too. */
export function hostModes(modes: readonly LabVmMode[]): LabVmMode[] {
  return modes.filter((m) => (CALIBRATION_MODES as readonly string[]).includes(m));
}

/** `vipr bench`'s arguments for the calibration run on this machine: the VM's counts, rounds and windows, IPv4. */
export function hostBenchArgv(
  modes: readonly LabVmMode[],
  opts: { quick: boolean; services?: readonly number[]; rounds?: number; trafficOnly?: boolean },
  json: string,
): string[] {
  return [
    'bench',
    '--modes', modes.join(','),
    '--families', 'ipv4',
    ...(opts.services ? ['--services', opts.services.join(',')] : []),
    ...(opts.rounds !== undefined ? ['--rounds', String(opts.rounds)] : []),
    ...(opts.quick ? ['--quick'] : []),
    ...(opts.trafficOnly === true ? ['--traffic-only'] : []),
    '--lab-prefix', 'vmhost',
    '--json', json,
  ];
}

/** Runs `vipr bench` on this machine (before the VM boots, so qemu does not load the CPUs it measures). */
async function runHostBench(argv: string[], onLine: (line: string) => void): Promise<number | null> {
  const main = join(repoRoot(), 'dist', 'src', 'cli', 'main.js');
  onLine(`lab-vm: on this machine for the calibration: vipr ${argv.join(' ')}`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [main, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    const prefixed = (l: string): void => onLine(`host bench: ${l}`);
    const out = lineSplitter(prefixed);
    const err = lineSplitter(prefixed);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (code) => {
      out.end();
      err.end();
      resolve(code);
    });
  });
}

/** This machine's bench report for the calibration, per `opts.host`. */
async function hostReportFor(
  opts: ResolvedVmOptions,
  runDir: string,
  onLine: (line: string) => void,
): Promise<{ report: BenchReport | null; source: string }> {
  if (opts.host === 'none') return { report: null, source: 'skipped (--no-host)' };
  if (typeof opts.host === 'object') return { report: readBenchReport(opts.host.json), source: opts.host.json };
  const modes = hostModes(opts.modes);
  if (modes.length === 0) return { report: null, source: `none of ${CALIBRATION_MODES.join(', ')} among the modes` };
  const file = join(runDir, 'host-bench.json');
  const code = await runHostBench(hostBenchArgv(modes, opts, file), onLine);
  if (!existsSync(file)) return { report: null, source: `vipr bench on this machine failed (exit code ${code}) and wrote no JSON` };
  return { report: parseBenchReport(await readFile(file, 'utf8'), file), source: `vipr bench on this machine, ${file}` };
}

/** Splits a stream into lines for `onLine`. */
function lineSplitter(onLine: (line: string) => void): { push(chunk: Buffer): void; end(): void } {
  // A chunk can end inside a multi-byte character (the bench prints '×' and 'µ').
  const decoder = new StringDecoder('utf8');
  let rest = '';
  return {
    push(chunk) {
      rest += decoder.write(chunk);
      const parts = rest.split(/\r?\n/);
      rest = parts.pop() ?? '';
      for (const p of parts) onLine(p);
    },
    end() {
      rest += decoder.end();
      if (rest.length > 0) onLine(rest);
      rest = '';
    },
  };
}

async function buildImage(cacheDir: string, rebuildBase: boolean, onLine: (line: string) => void): Promise<void> {
  const script = join(repoRoot(), 'scripts', 'lab-vm.sh');
  const args = ['build', '--cache', cacheDir, ...(rebuildBase ? ['--rebuild-base'] : [])];
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(script, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = lineSplitter(onLine);
    const err = lineSplitter(onLine);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.on('close', (c) => {
      out.end();
      err.end();
      resolve(c);
    });
  });
  if (code !== 0) throw new LabVmError(`building the VM image failed (${script} ${args.join(' ')}: exit code ${code})`);
}

interface BootOutcome {
  /** qemu's exit code, or null when a signal ended it. */
  exitCode: number | null;
  /** The signal that ended qemu (SIGABRT: qemu's own assertion; SIGKILL: ours). */
  signal: NodeJS.Signals | null;
  /** The kernel printed something: the accelerator works. */
  guestSpoke: boolean;
  killedFor: 'kvm-silent' | 'timeout' | null;
  /** qemu's own complaint (its stderr-style lines on the console), for the KVM diagnosis. */
  qemuError: string | null;
}

function boot(argv: string[], serialLog: string, accel: Accel, timeoutMs: number, kvmProbeMs: number, onLine: (line: string) => void): Promise<BootOutcome> {
  return new Promise((resolve, reject) => {
    const log = createWriteStream(serialLog, { flags: 'a' });
    const child = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let guestSpoke = false;
    let killedFor: BootOutcome['killedFor'] = null;
    let qemuError: string | null = null;
    const handle = (line: string): void => {
      log.write(`${line}\n`);
      // Any kernel or init line proves the CPU runs; SeaBIOS's banner does not.
      if (!guestSpoke && /Linux version|vipr-vm:|\[\s*\d+\.\d+\]/.test(line)) guestSpoke = true;
      if (line.startsWith('qemu-system-x86_64:')) qemuError ??= line.replace(/^qemu-system-x86_64: /, '');
      onLine(line);
    };
    const out = lineSplitter(handle);
    const err = lineSplitter(handle);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    const kill = (why: NonNullable<BootOutcome['killedFor']>): void => {
      killedFor = why;
      child.kill('SIGKILL');
    };
    const probe = accel === 'kvm' ? setTimeout(() => guestSpoke || kill('kvm-silent'), kvmProbeMs) : null;
    const deadline = setTimeout(() => kill('timeout'), timeoutMs);
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (probe) clearTimeout(probe);
      clearTimeout(deadline);
      log.end();
      reject(
        e.code === 'ENOENT'
          ? new ConfigError('qemu-system-x86_64 not found (apt-get install qemu-system-x86)', { cause: e })
          : e,
      );
    });
    child.on('close', (code, signal) => {
      if (probe) clearTimeout(probe);
      clearTimeout(deadline);
      out.end();
      err.end();
      log.end(() => resolve({ exitCode: code, signal, guestSpoke, killedFor, qemuError }));
    });
  });
}

/** Builds the image, boots it, runs the bench inside, and returns its report. Needs root. */
export async function labVm(options: LabVmOptions = {}): Promise<LabVmResult> {
  const opts = resolveOptions(options);
  const onLine = options.onLine ?? ((): void => undefined);
  // A bad --host-json shows now, not after the image build.
  if (typeof opts.host === 'object') readBenchReport(opts.host.json);
  const run = await runGuest(opts, onLine, {}, (runDir) => hostReportFor(opts, runDir, onLine), parseBenchReport);
  return { ...run, hostReport: run.host.report, hostSource: run.host.source };
}

/**
 * `vipr bench --north-south` in the VM (`modes`: north-south modes, as `vipr bench --north-south --modes` takes them), beside the same bench on
 * this machine for the modes it has (or `host`'s JSON) for the calibration. Needs root.
 */
export async function labVmNorthSouth(modes: readonly string[], options: LabVmOptions = {}): Promise<LabVmNorthSouthResult> {
  // opts.modes (the latency bench's) go unused: the guest runs the north-south bench with `modes`.
  const opts = resolveOptions(options);
  const onLine = options.onLine ?? ((): void => undefined);
  if (typeof opts.host === 'object') readNorthSouthReport(opts.host.json);
  const run = await runGuest(opts, onLine, { northSouth: modes }, (runDir) => hostNorthSouthFor(opts, modes, runDir, onLine), parseNorthSouthReport);
  return { ...run, hostReport: run.host.report, hostSource: run.host.source };
}

/** This machine's north-south report for the calibration, per `opts.host`. */
async function hostNorthSouthFor(
  opts: ResolvedVmOptions,
  modes: readonly string[],
  runDir: string,
  onLine: (line: string) => void,
): Promise<{ report: VmNorthSouthReport | null; source: string }> {
  if (opts.host === 'none') return { report: null, source: 'skipped (--no-host)' };
  if (typeof opts.host === 'object') return { report: readNorthSouthReport(opts.host.json), source: opts.host.json };
  if (!modes.includes('iptables') || modes.every((m) => m === 'iptables' || m === 'ipvs')) {
    return { report: null, source: 'needs iptables and another mode this kernel has among the modes' };
  }
  const file = join(runDir, 'host-north-south.json');
  const code = await runHostBench(hostNorthSouthArgv(modes, opts, file), onLine);
  if (!existsSync(file)) return { report: null, source: `vipr bench --north-south on this machine failed (exit code ${code}) and wrote no JSON` };
  return { report: parseNorthSouthReport(await readFile(file, 'utf8'), file), source: `vipr bench --north-south on this machine, ${file}` };
}

interface GuestRun<R, H> {
  accel: Accel;
  icountShift: number | null;
  host: { report: H | null; source: string };
  kvmProblem: string | null;
  report: R;
  guestExitCode: number;
  runDir: string;
  serialLog: string;
}

/**
 * The image built, this machine's bench for the calibration (before qemu loads its CPUs), the
 * guest booted (KVM first when allowed, then TCG) with its request, and its bench.json parsed.
 */
async function runGuest<R, H>(
  opts: ResolvedVmOptions,
  onLine: (line: string) => void,
  request: { northSouth?: readonly string[] },
  hostFor: (runDir: string) => Promise<{ report: H | null; source: string }>,
  parse: (text: string, source: string) => R,
): Promise<GuestRun<R, H>> {
  if (process.getuid?.() !== 0) throw new ConfigError('vipr lab vm must run as root (debootstrap, chroot)');
  await mkdir(opts.cacheDir, { recursive: true });
  // The bench's C load generator and responders are compiled here (the guest has no compiler);
  // same Debian release on both sides, so the binaries run in the guest as they are.
  for (const program of BENCH_PROGRAMS) await ensureBenchProgram(program);
  await buildImage(opts.cacheDir, opts.rebuildBase, onLine);

  const runDir = join(opts.cacheDir, 'runs', new Date().toISOString().replace(/[:.]/g, '-'));
  await mkdir(runDir, { recursive: true });
  const host = await hostFor(runDir);
  const serialLog = join(runDir, 'serial.log');
  const files: VmFiles = {
    kernel: join(opts.cacheDir, 'vmlinuz'),
    initrd: join(opts.cacheDir, 'initrd.img'),
    rootfs: join(opts.cacheDir, 'rootfs.img'),
    outDir: runDir,
  };

  const candidates: Accel[] =
    opts.accel === 'auto' ? (existsSync('/dev/kvm') ? ['kvm', 'tcg'] : ['tcg']) : [opts.accel];
  let kvmProblem: string | null = opts.accel === 'auto' && !existsSync('/dev/kvm') ? 'no /dev/kvm' : null;
  for (const accel of candidates) {
    await writeFile(join(runDir, 'request.env'), requestEnv(opts.modes, opts.count, opts.quick, accel, { ...opts, ...request }));
    onLine(`lab-vm: booting with ${timingLine(accel, opts.icountShift)}; serial console in ${serialLog}`);
    const started = Date.now();
    const outcome = await boot(
      qemuArgv(files, accel, opts.memoryMb, opts.cpus, opts.icountShift),
      serialLog,
      accel,
      opts.timeoutMs,
      opts.kvmProbeMs,
      onLine,
    );
    onLine(`lab-vm: the VM ran for ${Math.round((Date.now() - started) / 1000)} s of wall time`);
    if (accel === 'kvm' && !outcome.guestSpoke) {
      kvmProblem =
        outcome.killedFor === 'kvm-silent'
          ? `no kernel output within ${opts.kvmProbeMs / 1000}s under KVM`
          : `qemu ${outcome.signal ? `died of ${outcome.signal}` : `exited with code ${outcome.exitCode}`} under KVM` +
            (outcome.qemuError ? ` (${outcome.qemuError})` : '');
      onLine(`lab-vm: KVM does not work here (${kvmProblem}); falling back to TCG`);
      if (candidates.includes('tcg')) continue;
      throw new LabVmError(`KVM does not work here: ${kvmProblem}`);
    }
    if (outcome.killedFor === 'timeout') {
      throw new LabVmError(
        `the VM did not finish within ${opts.timeoutMs / 60_000} minutes; see ${serialLog}` +
          (opts.watchGuest
            ? `, and what the guest was doing in ${join(runDir, 'guest-state')} (its labs' agent and churn logs, ps.log: processes every 30 s)`
            : ` (run again with --watch-guest to see what the guest was doing: its labs' logs and processes every 30 s)`),
      );
    }
    const benchFile = join(runDir, 'bench.json');
    if (!existsSync(benchFile)) {
      throw new LabVmError(
        `the VM left no results (qemu ${outcome.signal ?? `exit code ${outcome.exitCode}`}); see ${serialLog} and ${join(runDir, 'guest-state')}`,
      );
    }
    const report = parse(await readFile(benchFile, 'utf8'), benchFile);
    const exitFile = join(runDir, 'exit-code');
    const guestExitCode = existsSync(exitFile) ? Number((await readFile(exitFile, 'utf8')).trim()) : -1;
    return {
      accel,
      icountShift: opts.icountShift,
      host,
      kvmProblem,
      report,
      guestExitCode,
      runDir,
      serialLog,
    };
  }
  throw new LabVmError('no accelerator to boot the VM with');
}
