/*
 * `vipr lab vm` for real: debootstrap a Debian image, boot it with qemu (KVM when it works, TCG
 * otherwise) and measure every mode, IPVS included, on one kernel. Minutes long, so it is not in
 * the default suite (jest.config.js ignores test/vm/): `make lab-vm-test` runs it.
 */
import { existsSync, readFileSync } from 'node:fs';
import { LAB_VM_MODES, labVm } from '../../src/lab/vm.js';

describe('lab vm: a real VM run', () => {
  it(
    'boots the Debian kernel and measures every mode, IPVS included',
    async () => {
      const lines: string[] = [];
      const result = await labVm({ quick: true, onLine: (l) => lines.push(l) });
      expect(['kvm', 'tcg']).toContain(result.accel);
      if (result.accel === 'tcg' && existsSync('/dev/kvm')) expect(result.kvmProblem).not.toBeNull();
      expect(result.guestExitCode).toBe(0);
      expect(String(result.report.env['kernel'])).toMatch(/-amd64$/);
      for (const mode of LAB_VM_MODES) {
        for (const metric of ['rr', 'crr', 'udp']) {
          const r = result.report.results.find((x) => x.mode === mode && x.metric === metric);
          expect(r).toBeDefined();
          expect(r?.p50).toBeGreaterThan(0);
          expect(r?.p99).toBeGreaterThanOrEqual(r?.p50 ?? 0);
        }
      }
      expect(result.report.unavailable ?? []).toEqual([]);
      const serial = readFileSync(result.serialLog, 'utf8');
      expect(serial).toContain('vipr-vm: init started');
      // The guest kernel has IPVS: the modules were loaded and in use.
      expect(serial).toMatch(/^ip_vs +\d+ +\d+ \S*ip_vs_rr/m);
      expect(lines.some((l) => l.startsWith('lab-vm: booting with'))).toBe(true);
    },
    45 * 60_000,
  );
});
