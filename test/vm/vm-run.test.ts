/*
 * `vipr lab vm --quick` for real: debootstrap a Debian image, boot it with qemu under TCG with
 * instruction counting (icount), measure every mode, IPVS included, on one kernel, bench the
 * modes this machine has here too, and print the calibration table. Minutes long, so it is not in
 * the default suite (jest.config.js ignores test/vm/): `make lab-vm-test` runs it.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { calibrate, CALIBRATION_MODES, formatCalibration } from '../../src/lab/calibration.js';
import { DEFAULT_ICOUNT_SHIFT, LAB_VM_MODES, labVm, labVmNorthSouth, QUICK_VM_ROUNDS, QUICK_VM_SERVICES } from '../../src/lab/vm.js';
import { calibrateNorthSouth, formatNorthSouthCalibration } from '../../src/lab/vm-north-south.js';

describe('lab vm: a real VM run', () => {
  it(
    'boots the Debian kernel under icount, measures every mode with IPVS, and calibrates against this machine',
    async () => {
      const lines: string[] = [];
      const result = await labVm({ quick: true, onLine: (l) => lines.push(l) });
      // icount is TCG-only: KVM is not even tried.
      expect(result.accel).toBe('tcg');
      expect(result.icountShift).toBe(DEFAULT_ICOUNT_SHIFT);
      expect(result.guestExitCode).toBe(0);
      expect(String(result.report.env['kernel'])).toMatch(/-amd64$/);
      expect(result.report.env['icountShift']).toBe(DEFAULT_ICOUNT_SHIFT);
      for (const mode of ['direct', ...LAB_VM_MODES]) {
        for (const metric of ['rr', 'crr', 'udp']) {
          const r = result.report.results.find((x) => x.mode === mode && x.metric === metric && x.services === QUICK_VM_SERVICES[0]);
          expect(r).toBeDefined();
          expect(r?.p50).toBeGreaterThan(0);
          expect(r?.p99).toBeGreaterThanOrEqual(r?.p50 ?? 0);
          // Every round's p50 is kept: the spread is reported.
          expect(r?.p50ByRound).toHaveLength(QUICK_VM_ROUNDS);
        }
      }
      expect(result.report.unavailable ?? []).toEqual([]);
      const serial = readFileSync(result.serialLog, 'utf8');
      expect(serial).toContain('vipr-vm: init started');
      expect(serial).toContain(`icount shift=${DEFAULT_ICOUNT_SHIFT}`);
      // The guest kernel has IPVS: the modules were loaded and in use.
      expect(serial).toMatch(/^ip_vs +\d+ +\d+ \S*ip_vs_rr/m);
      // The bpf agent on 6.1: no TCX links there (6.6), so every program went in through clsact;
      // no bpf_sock_destroy (6.5), so it runs without the UDP socket destroyer and says so once.
      const agentLines = serial.split('\n').filter((l) => l.startsWith('agent: '));
      const attached = agentLines.filter((l) => l.startsWith('agent: attached {'));
      expect(attached.length).toBeGreaterThan(0);
      for (const l of attached) expect(l).toContain('"how":["tc","tc"]');
      expect(agentLines.filter((l) => l.includes('UDP socket destroyer unavailable'))).toHaveLength(1);
      expect(agentLines.some((l) => l.startsWith('agent: socket LB attached'))).toBe(true);
      expect(agentLines.some((l) => l.startsWith('agent: agent running {'))).toBe(true);
      // The XDP object passes 6.1's verifier too (flow cache and next-hop maps included).
      expect(serial).toMatch(/^xdp: xdp_lb\.bpf\.o loads on 6\.1\./m);
      expect(lines.some((l) => l.startsWith(`lab-vm: booting with qemu TCG with instruction counting: -icount shift=${DEFAULT_ICOUNT_SHIFT},sleep=off,align=off`))).toBe(true);

      // The calibration: this machine's bench ran, and the table has every shared mode and metric.
      expect(result.hostReport).not.toBeNull();
      const text = formatCalibration(calibrate(result.report, result.hostReport as NonNullable<typeof result.hostReport>), result.hostSource);
      const table = text.split('\n');
      expect(table[1]?.trim().split(/\s+/)).toEqual(['metric', 'services', 'mode', 'VM', 'VM', 'rounds', 'host', 'host', 'rounds', 'VM-host']);
      for (const metric of ['rr', 'crr', 'udp']) {
        for (const mode of CALIBRATION_MODES) {
          const row = table.find((l) => new RegExp(`^ {2}${metric} +1 +${mode} `).test(l));
          expect(row?.trim().split(/\s+/)).toEqual([metric, '1', mode, expect.stringMatching(/^×\d+\.\d\d$/), expect.stringMatching(/^×\d+\.\d\d–×\d+\.\d\d$/), expect.stringMatching(/^×\d+\.\d\d$/), expect.stringMatching(/^×\d+\.\d\d–×\d+\.\d\d$/), expect.stringMatching(/^[+-]\d+\.\d\d$/)]);
        }
      }
      expect(text).toMatch(/^largest disagreement: \d+\.\d\d \((bpf|iptables|iptables-nft|nftables) (rr|crr|udp) at 1 service: VM ×\d+\.\d\d, host ×\d+\.\d\d\)$/m);
      expect(text).toMatch(/^IPVS in the VM, p50 ×direct ± \d+\.\d\d \(the largest disagreement above\):$/m);
      for (const metric of ['rr', 'crr', 'udp']) {
        expect(text).toMatch(new RegExp(`^ {2}ipvs ${metric} \\(.*\\), 1 service: ×\\d+\\.\\d\\d ± \\d+\\.\\d\\d(?: \\(± \\d+\\.\\d\\d as a hash lookup\\))? \\(rounds ×\\d+\\.\\d\\d–×\\d+\\.\\d\\d\\); bpf ×\\d+\\.\\d\\d$`, 'm'));
      }

      // What `make lab-vm` prints: the CLI reprints the saved run (no VM) with the same table.
      const hostJson = join(result.runDir, 'host-bench.json');
      const printed = execFileSync(process.execPath, ['dist/src/cli/main.js', 'lab', 'vm', '--from-json', join(result.runDir, 'bench.json'), '--host-json', hostJson], { encoding: 'utf8' });
      expect(printed).toContain(formatCalibration(calibrate(result.report, result.hostReport as NonNullable<typeof result.hostReport>), hostJson));
    },
    60 * 60_000,
  );

  it(
    'runs the north-south bench in the guest with IPVS and puts node1\'s CPU per packet beside this machine\'s',
    async () => {
      const result = await labVmNorthSouth(['xdp', 'iptables', 'ipvs'], { quick: true, rounds: 1, host: { json: 'bench/results/north-south.json' } });
      expect(result.guestExitCode).toBe(0);
      expect(result.report.env['icountShift']).toBe(DEFAULT_ICOUNT_SHIFT);
      for (const mode of ['xdp', 'iptables', 'ipvs']) {
        for (const traffic of ['udp', 'syn']) {
          const r = result.report.northSouth.rows.find((x) => x.mode === mode && x.traffic === traffic);
          expect([mode, traffic, (r?.deliveredPps ?? 0) > 0, (r?.nodeNsPerPacket ?? 0) > 0]).toEqual([mode, traffic, true, true]);
        }
      }
      expect(result.report.northSouth.unavailable).toEqual([]);
      const text = formatNorthSouthCalibration(calibrateNorthSouth(result.report, result.hostReport), result.hostSource);
      expect(text).toMatch(/^largest disagreement: \d+\.\d\d \(xdp (udp|syn): VM ×\d+\.\d\d, host ×\d+\.\d\d\)$/m);
      for (const traffic of ['udp', 'syn']) {
        expect(text).toMatch(new RegExp(`^ {2}ipvs ${traffic} \\(.*\\): ×\\d+\\.\\d\\d ± \\d+\\.\\d\\d \\(rounds ×\\d+\\.\\d\\d\\); xdp ×\\d+\\.\\d\\d$`, 'm'));
      }
    },
    40 * 60_000,
  );
});
