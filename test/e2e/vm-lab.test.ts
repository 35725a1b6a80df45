/*
 * `vipr lab vm`. The pieces that need no VM (qemu's command line, the guest request, reading and
 * printing a bench report) are checked here, on every run. The VM itself (debootstrap, a qemu
 * boot under TCG, every mode measured inside: minutes) is test/vm/vm-run.test.ts, run by
 * `make lab-vm-test` only.
 */
import {
  DEFAULT_ICOUNT_SHIFT,
  formatComparison,
  hostBenchArgv,
  hostModes,
  LAB_VM_MODES,
  labVm,
  parseBenchReport,
  qemuArgv,
  readBenchReport,
  reportTiming,
  requestEnv,
  type BenchReport,
} from '../../src/lab/vm.js';
import { JsonFileError } from '../../src/json-file.js';

const FILES = { kernel: '/c/vmlinuz', initrd: '/c/initrd.img', rootfs: '/c/rootfs.img', outDir: '/c/runs/1' };

function option(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
}

describe('lab vm: qemu command line and guest request', () => {
  it('boots the kernel with the minimal init, eth0 names and the serial console', () => {
    const argv = qemuArgv(FILES, 'tcg', 2048, 2);
    const cmdline = option(argv, '-append')?.split(' ') ?? [];
    expect(cmdline).toEqual(expect.arrayContaining(['console=ttyS0', 'init=/sbin/vipr-init', 'net.ifnames=0', 'root=/dev/vda', 'rw']));
    expect(option(argv, '-kernel')).toBe('/c/vmlinuz');
    expect(option(argv, '-initrd')).toBe('/c/initrd.img');
    expect(option(argv, '-serial')).toBe('stdio');
    expect(argv).toContain('-no-reboot');
    expect(option(argv, '-m')).toBe('2048');
    expect(option(argv, '-smp')).toBe('2');
  });

  it('never writes to the image, and shares the run directory as viprout', () => {
    const argv = qemuArgv(FILES, 'tcg', 1024, 1);
    expect(option(argv, '-drive')).toBe('file=/c/rootfs.img,format=raw,if=virtio,snapshot=on');
    expect(option(argv, '-virtfs')).toBe('local,path=/c/runs/1,mount_tag=viprout,security_model=none,id=out');
  });

  it('selects the accelerator: KVM with the host CPU, TCG multi-threaded with the max model', () => {
    const kvm = qemuArgv(FILES, 'kvm', 1024, 1);
    expect([option(kvm, '-accel'), option(kvm, '-cpu')]).toEqual(['kvm', 'host']);
    const tcg = qemuArgv(FILES, 'tcg', 1024, 1);
    expect([option(tcg, '-accel'), option(tcg, '-cpu')]).toEqual(['tcg,thread=multi', 'max']);
    expect(tcg).not.toContain('-icount');
  });

  it('counts instructions under single-threaded TCG for icount timing, and never with KVM', () => {
    const argv = qemuArgv(FILES, 'tcg', 2048, 2, 3);
    expect(option(argv, '-icount')).toBe('shift=3,sleep=off,align=off');
    // icount cannot run with multi-threaded TCG.
    expect(option(argv, '-accel')).toBe('tcg,thread=single');
    expect(() => qemuArgv(FILES, 'kvm', 2048, 2, 3)).toThrow(/icount timing needs TCG/);
    expect(DEFAULT_ICOUNT_SHIFT).toBe(3);
  });

  it('benches on this machine only the modes it has, with the VM run\'s counts and rounds, IPv4', () => {
    expect(hostModes(['bpf', 'iptables', 'iptables-nft', 'nftables', 'ipvs'])).toEqual(['bpf', 'iptables', 'iptables-nft', 'nftables']);
    expect(hostModes(['ipvs'])).toEqual([]);
    expect(hostBenchArgv(['bpf', 'iptables'], { quick: true, services: [1], rounds: 2 }, '/r/host.json')).toEqual([
      'bench', '--modes', 'bpf,iptables', '--families', 'ipv4', '--services', '1', '--rounds', '2', '--quick', '--lab-prefix', 'vmhost', '--json', '/r/host.json',
    ]);
    expect(hostBenchArgv(['bpf'], { quick: false }, '/h.json')).toEqual(['bench', '--modes', 'bpf', '--families', 'ipv4', '--lab-prefix', 'vmhost', '--json', '/h.json']);
    // --traffic-only on both sides: the calibration compares like with like.
    expect(hostBenchArgv(['bpf'], { quick: true, services: [10000], trafficOnly: true }, '/h.json')).toEqual([
      'bench', '--modes', 'bpf', '--families', 'ipv4', '--services', '10000', '--quick', '--traffic-only', '--lab-prefix', 'vmhost', '--json', '/h.json',
    ]);
  });

  it('asks the guest for the north-south bench with its modes', () => {
    expect(requestEnv(['bpf'], 100, true, 'tcg', { northSouth: ['xdp', 'iptables', 'ipvs'] })).toMatch(/^VIPR_VM_NORTH_SOUTH="xdp iptables ipvs"$/m);
  });

  it('writes the guest request as shell assignments guest-run.sh sources', () => {
    expect(requestEnv(['bpf', 'ipvs'], 100, true, 'tcg')).toBe(
      'VIPR_VM_MODES="bpf ipvs"\nVIPR_VM_COUNT=100\nVIPR_VM_QUICK=1\nVIPR_VM_ACCEL=tcg\nVIPR_VM_SERVICES=""\nVIPR_VM_ROUNDS=""\n' +
        'VIPR_VM_FAMILIES=""\nVIPR_VM_ICOUNT_SHIFT=""\nVIPR_VM_TRAFFIC_ONLY=0\nVIPR_VM_NORTH_SOUTH=""\nVIPR_VM_WATCH=0\n',
    );
    expect(requestEnv(['iptables-nft'], 500, false, 'tcg', { services: [1, 1000], rounds: 2, families: 'ipv4', icountShift: 3, trafficOnly: true })).toBe(
      'VIPR_VM_MODES="iptables-nft"\nVIPR_VM_COUNT=500\nVIPR_VM_QUICK=0\nVIPR_VM_ACCEL=tcg\nVIPR_VM_SERVICES="1,1000"\nVIPR_VM_ROUNDS="2"\n' +
        'VIPR_VM_FAMILIES="ipv4"\nVIPR_VM_ICOUNT_SHIFT="3"\nVIPR_VM_TRAFFIC_ONLY=1\nVIPR_VM_NORTH_SOUTH=""\nVIPR_VM_WATCH=0\n',
    );
  });
});

const REPORT: BenchReport = {
  env: { kernel: '6.1.0-50-amd64', accel: 'tcg' },
  results: [
    { mode: 'bpf', services: 2, placement: 'netns-lab', metric: 'crr', p50: 2000, p99: 9000, rate: 400, unit: 'us' },
    { mode: 'ipvs', services: 2, placement: 'netns-lab', metric: 'crr', p50: 5000, p99: 12000, rate: 180, unit: 'us' },
    { mode: 'bpf', services: 2, placement: 'netns-lab', metric: 'udp', p50: 1000, p99: 3000, rate: 900, unit: 'us' },
    { mode: 'ipvs', services: 2, placement: 'netns-lab', metric: 'udp', p50: 1500, p99: 3100, rate: 600, unit: 'us' },
  ],
};

describe('lab vm: reading and printing the bench report', () => {
  it('reads a bench JSON report and rejects what is not one', () => {
    expect(parseBenchReport(JSON.stringify(REPORT), 'bench.json')).toEqual(REPORT);
    expect(() => parseBenchReport('{"env":{},"results":[{"mode":"bpf"}]}', 'bench.json')).toThrow(JsonFileError);
    expect(() => parseBenchReport('{"env":{},"results":[{"mode":"bpf"}]}', 'bench.json')).toThrow(/^bench\.json: bad bench report at results\[0\]\.services: Required; /);
    expect(() => parseBenchReport('not json', 'x.json')).toThrow(/^x\.json: bench report is not JSON \(/);
  });

  it('prints each metric with p50 ratios against bpf, and says emulated times mean nothing', () => {
    const text = formatComparison(REPORT, 'tcg');
    expect(text).toContain('qemu TCG (emulation)');
    expect(text).toContain('absolute times are meaningless, compare ratios between modes only');
    expect(text).toContain('crr (us), 2 services, placement netns-lab; ratio = p50 / p50 of bpf');
    const crr = text.split('\n').filter((l) => /^\s+(bpf|ipvs)\s/.test(l));
    expect(crr.map((l) => l.trim().split(/\s+/))).toEqual([
      ['bpf', '2000', '9000', '400', '1.00'],
      ['ipvs', '5000', '12000', '180', '2.50'],
      ['bpf', '1000', '3000', '900', '1.00'],
      ['ipvs', '1500', '3100', '600', '1.50'],
    ]);
  });

  it('shows control-plane figures without p99 or rate, and the modes the bench could not run', () => {
    const report = parseBenchReport(
      JSON.stringify({
        env: {},
        results: [{ mode: 'bpf', services: 1000, placement: 'none', metric: 'sync_all', p50: 12, p99: null, rate: null, unit: 'ms' }],
        unavailable: [{ mode: 'ipvs', reason: 'no ip_vs module' }],
      }),
      'bench.json',
    );
    const text = formatComparison(report, 'kvm');
    expect(text).toContain('sync_all (ms), 1000 services, placement none');
    expect(text).toMatch(/^ {2}bpf +12 +- +- +1\.00$/m);
    expect(text).toContain('ipvs: unavailable: no ip_vs module');
  });

  it('under icount, names the shift, that KVM was not used and what the timing ignores; shows the rounds\' p50 range', () => {
    const rounds: BenchReport = {
      env: { kernel: '6.1.0-50-amd64' },
      results: [
        { mode: 'direct', services: 1, placement: 'none', metric: 'crr', family: 'IPv4', p50: 800, p99: 900, rate: 1200, unit: 'us', rounds: 3, p50ByRound: [800, 790, 812.5] },
        { mode: 'bpf', services: 1, placement: 'last', metric: 'crr', family: 'IPv4', p50: 1000, p99: 1500, rate: 1000, unit: 'us', rounds: 3, p50ByRound: [1000, 1000, 1000] },
        { mode: 'bpf', services: 1, placement: 'last', metric: 'crr', family: 'IPv6', p50: 1100, p99: 1600, rate: 900, unit: 'us', rounds: 1, p50ByRound: [1100] },
      ],
    };
    const text = formatComparison(rounds, 'tcg', 3);
    expect(text).toContain('-icount shift=3,sleep=off,align=off (1 instruction = 2^3 = 8 ns of guest time; KVM not used: icount is TCG-only)');
    expect(text).toMatch(/^NOTE: icount timing counts instructions only: every instruction costs 2\^3 ns, so it ignores caches, branch prediction, TLB misses, memory latency/m);
    expect(text).toMatch(/^ {2}mode +p50 +p99 +rate\/s +ratio +p50 of rounds$/m);
    expect(text).toMatch(/^ {2}direct +800 +900 +1200 +0\.80 +790–812\.5$/m);
    expect(text).toMatch(/^ {2}bpf +1000 +1500 +1000 +1\.00 +1000–1000$/m);
    // IPv6 rows get a table of their own, without IPv4's direct floor.
    expect(text).toContain('crr (us), 1 service, placement last, IPv6; ratio = p50 / p50 of bpf');
    expect(text.slice(text.indexOf('IPv6;'))).not.toContain('direct');
  });

  it('names a missing or bad --host-json / --from-json file and what to give instead', () => {
    expect(() => readBenchReport('/nonexistent/host.json')).toThrow(
      "/nonexistent/host.json: bench report is missing; give a file written by 'vipr bench --json' or 'vipr lab vm --json'",
    );
  });

  it('reads how a saved run was timed from its env (guest-run.sh records accel and icountShift)', () => {
    expect(reportTiming({ env: { accel: 'tcg', icountShift: 3 }, results: [] })).toEqual({ accel: 'tcg', icountShift: 3 });
    expect(reportTiming({ env: { accel: 'kvm' }, results: [] })).toEqual({ accel: 'kvm', icountShift: null });
    expect(reportTiming({ env: {}, results: [] })).toEqual({ accel: 'tcg', icountShift: null });
  });

  it('uses the first mode as the baseline when bpf was not measured', () => {
    const noBpf = { env: {}, results: REPORT.results.filter((r) => r.mode === 'ipvs') };
    expect(formatComparison(noBpf, 'kvm')).toMatch(/ratio = p50 \/ p50 of ipvs/);
    expect(formatComparison(noBpf, 'kvm')).not.toContain('meaningless');
  });

  it('refuses unknown modes and bad bench sizes before building anything', async () => {
    await expect(labVm({ modes: ['bpf', 'userspace' as never] })).rejects.toThrow(/unknown mode 'userspace'/);
    await expect(labVm({ services: [0] })).rejects.toThrow(/service counts must be positive integers/);
    await expect(labVm({ rounds: 1.5 })).rejects.toThrow(/rounds must be a positive integer/);
    await expect(labVm({ accel: 'kvm' })).rejects.toThrow(/--accel kvm cannot count instructions \(icount is TCG-only\): use --timing wall/);
    await expect(labVm({ icountShift: 11 })).rejects.toThrow(/icount shift must be an integer from 0 to 10, got 11/);
  });
});
