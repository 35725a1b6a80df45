/*
 * `vipr lab vm`: every mode measured on one kernel that has IPVS. This machine's kernel has no
 * IPVS, so the lab runs in a qemu VM booted from Debian's own packages: scripts/lab-vm.sh builds
 * the image (debootstrap minbase, linux-image-amd64, this host's node and the built project),
 * this module boots it, captures the serial console, and reads the bench JSON the guest leaves
 * in a 9p-shared directory (scripts/lab-vm/guest-run.sh runs `vipr bench`, or the lab probes
 * when the build has no bench).
 *
 * KVM is tried first when /dev/kvm exists; nested KVM can abort qemu (an MSR it cannot set) or
 * hang before the kernel prints anything, so a KVM boot that shows no kernel output within
 * `kvmProbeMs` is abandoned for TCG emulation, and the result says which one ran.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { parseJson, type JsonRecordKind } from '../json-file.js';
import { BENCH_PROGRAMS, ensureBenchProgram } from './traffic-programs.js';
import { repoRoot } from './lab.js';

/** vipr bench's dataplanes; `iptables` is iptables-legacy, `iptables-nft` the nft backend. */
export const LAB_VM_MODES = ['bpf', 'iptables', 'iptables-nft', 'nftables', 'ipvs'] as const;
export type LabVmMode = (typeof LAB_VM_MODES)[number];
export type Accel = 'kvm' | 'tcg';

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
  /** `auto` tries KVM, then TCG. */
  accel?: 'auto' | Accel;
  /** Image cache (debootstrap base, kernel, rootfs.img) and run directories. */
  cacheDir?: string;
  /** Rebuild the debootstrap base even when cached. */
  rebuildBase?: boolean;
  memoryMb?: number;
  cpus?: number;
  /** The whole guest run (boot + bench); default 40 minutes. */
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
  p50: z.number(),
  // Control-plane figures (sync times, memory) have no p99 and no rate.
  p99: z.number().nullable(),
  rate: z.number().nullable(),
  unit: z.string(),
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
  /** Why KVM was not used, when it was tried and failed. */
  kvmProblem: string | null;
  report: BenchReport;
  /** The guest workload's exit code (non-zero: some mode failed; its results are missing). */
  guestExitCode: number;
  /** Holds bench.json, guest.log, serial.log, request.env. */
  runDir: string;
  serialLog: string;
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

/** qemu's command line. The root image is opened with snapshot=on: runs never change it. */
export function qemuArgv(files: VmFiles, accel: Accel, memoryMb: number, cpus: number): string[] {
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
    ...(accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max']),
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
  bench: { services?: readonly number[]; rounds?: number } = {},
): string {
  return [
    `VIPR_VM_MODES="${modes.join(' ')}"`,
    `VIPR_VM_COUNT=${count}`,
    `VIPR_VM_QUICK=${quick ? 1 : 0}`,
    `VIPR_VM_ACCEL=${accel}`,
    `VIPR_VM_SERVICES="${(bench.services ?? []).join(',')}"`,
    `VIPR_VM_ROUNDS="${bench.rounds ?? ''}"`,
    '',
  ].join('\n');
}

/** The bench report the VM writes (`vipr bench --json` inside it). */
const BENCH_REPORT: JsonRecordKind<BenchReport> = {
  what: 'bench report',
  schema: BenchReport,
  fix: "the VM's bench wrote something else: see the VM's serial log",
};

/** `text` (read from `source`) as a bench report, or a one-line JsonFileError. */
export function parseBenchReport(text: string, source: string): BenchReport {
  return parseJson(text, source, BENCH_REPORT);
}

const EMULATION_NOTE = 'emulated CPU (TCG): absolute times are meaningless, compare ratios between modes only';

const cell = (v: number | null, width: number): string =>
  (v === null ? '-' : String(Math.round(v * 10) / 10)).padStart(width);

/**
 * A table per metric, service count and placement: each mode's p50/p99/rate and its p50 relative
 * to the baseline mode (bpf when measured, else the first), which is the only column that means
 * something under TCG.
 */
export function formatComparison(report: BenchReport, accel: Accel): string {
  const env = report.env;
  const lines: string[] = [];
  const kernel = typeof env['kernel'] === 'string' ? env['kernel'] : 'unknown kernel';
  lines.push(`vipr lab vm: kernel ${kernel}, qemu ${accel === 'kvm' ? 'KVM' : 'TCG (emulation)'}`);
  lines.push(accel === 'tcg' ? `NOTE: ${EMULATION_NOTE}` : 'NOTE: virtual machine: compare modes with each other, not with bare metal');
  const groups = new Map<string, BenchResult[]>();
  const title = (r: BenchResult, placement: string): string =>
    `${r.metric} (${r.unit}), ${r.services} service${r.services === 1 ? '' : 's'}, placement ${placement}`;
  // vipr bench's `direct` floor (no NAT) has no placement: it is shown in every placement's table.
  const floors = report.results.filter((r) => r.mode === 'direct');
  for (const r of report.results) {
    if (r.mode === 'direct') continue;
    const key = title(r, r.placement);
    if (!groups.has(key)) {
      groups.set(key, floors.filter((f) => f.metric === r.metric && f.services === r.services));
    }
    groups.get(key)?.push(r);
  }
  for (const [title, rows] of groups) {
    const base = rows.find((r) => r.mode === 'bpf') ?? rows[0];
    if (!base) continue;
    lines.push('', `${title}; ratio = p50 / p50 of ${base.mode}`);
    lines.push(`  ${'mode'.padEnd(13)} ${'p50'.padStart(9)} ${'p99'.padStart(9)} ${'rate/s'.padStart(8)} ${'ratio'.padStart(6)}`);
    for (const r of rows) {
      const ratio = base.p50 > 0 ? (r.p50 / base.p50).toFixed(2) : '-';
      lines.push(`  ${r.mode.padEnd(13)} ${cell(r.p50, 9)} ${cell(r.p99, 9)} ${cell(r.rate, 8)} ${ratio.padStart(6)}`);
    }
  }
  for (const u of report.unavailable ?? []) lines.push('', `${u.mode}: unavailable: ${u.reason}`);
  return `${lines.join('\n')}\n`;
}

type ResolvedVmOptions = Required<Omit<LabVmOptions, 'onLine' | 'count' | 'services' | 'rounds'>> &
  Pick<LabVmOptions, 'services' | 'rounds'> & { count: number };

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
  return {
    modes,
    quick,
    count,
    accel: opts.accel ?? 'auto',
    cacheDir: opts.cacheDir ?? DEFAULT_VM_CACHE,
    rebuildBase: opts.rebuildBase ?? false,
    memoryMb: opts.memoryMb ?? 2048,
    cpus: opts.cpus ?? Math.min(2, availableParallelism()),
    timeoutMs: opts.timeoutMs ?? 40 * 60_000,
    kvmProbeMs: opts.kvmProbeMs ?? 30_000,
    ...(opts.services ? { services: opts.services } : {}),
    ...(opts.rounds !== undefined ? { rounds: opts.rounds } : {}),
  };
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
  if (process.getuid?.() !== 0) throw new ConfigError('vipr lab vm must run as root (debootstrap, chroot)');
  await mkdir(opts.cacheDir, { recursive: true });
  // The bench's C load generator and responders are compiled here (the guest has no compiler);
  // same Debian release on both sides, so the binaries run in the guest as they are.
  for (const program of BENCH_PROGRAMS) await ensureBenchProgram(program);
  await buildImage(opts.cacheDir, opts.rebuildBase, onLine);

  const runDir = join(opts.cacheDir, 'runs', new Date().toISOString().replace(/[:.]/g, '-'));
  await mkdir(runDir, { recursive: true });
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
    await writeFile(join(runDir, 'request.env'), requestEnv(opts.modes, opts.count, opts.quick, accel, opts));
    onLine(`lab-vm: booting with ${accel === 'kvm' ? 'KVM' : 'TCG (emulation)'}; serial console in ${serialLog}`);
    const outcome = await boot(qemuArgv(files, accel, opts.memoryMb, opts.cpus), serialLog, accel, opts.timeoutMs, opts.kvmProbeMs, onLine);
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
      throw new LabVmError(`the VM did not finish within ${opts.timeoutMs / 60_000} minutes; see ${serialLog}`);
    }
    const benchFile = join(runDir, 'bench.json');
    if (!existsSync(benchFile)) {
      throw new LabVmError(`the VM left no results (qemu ${outcome.signal ?? `exit code ${outcome.exitCode}`}); see ${serialLog}`);
    }
    const report = parseBenchReport(await readFile(benchFile, 'utf8'), benchFile);
    const exitFile = join(runDir, 'exit-code');
    const guestExitCode = existsSync(exitFile) ? Number((await readFile(exitFile, 'utf8')).trim()) : -1;
    return { accel, kvmProblem, report, guestExitCode, runDir, serialLog };
  }
  throw new LabVmError('no accelerator to boot the VM with');
}
