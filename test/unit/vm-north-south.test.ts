/*
 * The VM lab's north-south calibration: node1's CPU per packet relative to iptables, in the VM
 * beside this machine, the largest difference as IPVS's error bar; the host bench's arguments.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NorthSouthReport } from '../../src/bench/north-south.js';
import type { NorthSouthRow } from '../../src/bench/north-south-plan.js';
import {
  calibrateNorthSouth, formatNorthSouthCalibration, hostNorthSouthArgv, nodeCostRatio, readNorthSouthReport, type VmNorthSouthReport,
} from '../../src/lab/vm-north-south.js';

function row(mode: NorthSouthRow['mode'], traffic: NorthSouthRow['traffic'], ns: number, byRound: number[] = [ns]): NorthSouthRow {
  return {
    mode, traffic, sentPps: 1e6, deliveredPps: 1e9 / ns, nodeNsPerPacket: ns, nodeBusy: 1, xdp: 'none', rounds: byRound.length,
    deliveredPpsByRound: byRound.map((v) => 1e9 / v), nodeNsPerPacketByRound: byRound,
  };
}

function report(rows: NorthSouthRow[]): VmNorthSouthReport {
  // What the bench writes (its NorthSouthReport), as the lab reads it.
  const written: Omit<NorthSouthReport, 'env'> & { env: Record<string, unknown> } = {
    env: { kernel: '6.1.0-50-amd64' },
    northSouth: { rows, nodeCpu: 0, xdpPaths: null, unavailable: [], xdpOverIptables: {}, xdpRedirectOverIptables: {} },
  };
  return written as unknown as VmNorthSouthReport;
}

const VM = report([
  row('xdp', 'udp', 1000, [1000, 1100]), row('tc', 'udp', 2000, [2000, 2000]), row('iptables', 'udp', 4000, [4000, 4400]),
  row('nftables', 'udp', 4400, [4400, 4400]), row('ipvs', 'udp', 3000, [3000, 3300]),
  row('iptables', 'syn', 8000), row('ipvs', 'syn', 6000), row('xdp', 'syn', 2000),
]);
const HOST = report([
  row('xdp', 'udp', 100, [100, 100]), row('tc', 'udp', 300, [300, 300]), row('iptables', 'udp', 1000, [1000, 1000]),
  row('nftables', 'udp', 1200, [1200, 1200]), row('iptables', 'syn', 1000), row('xdp', 'syn', 500),
]);

describe('north-south calibration', () => {
  it('takes each mode\'s node CPU per packet over iptables\', round by round where both have rounds', () => {
    expect(nodeCostRatio(VM, 'xdp', 'udp')).toEqual({ ratio: 0.25, rounds: [0.25, 0.25] });
    expect(nodeCostRatio(VM, 'ipvs', 'syn')).toEqual({ ratio: 0.75, rounds: [0.75] });
    expect(nodeCostRatio(VM, 'tc', 'syn')).toBeNull();
  });

  it('puts the VM beside this machine for the modes both ran, and takes the largest difference as the error bar on IPVS', () => {
    const cal = calibrateNorthSouth(VM, HOST);
    expect(cal.rows.map((r) => `${r.traffic} ${r.mode} ${r.vmRatio.toFixed(2)} ${r.hostRatio.toFixed(2)} ${r.disagreement.toFixed(2)}`)).toEqual([
      'udp xdp 0.25 0.10 0.15', 'udp tc 0.50 0.30 0.20', 'udp nftables 1.10 1.20 -0.10', 'syn xdp 0.25 0.50 -0.25',
    ]);
    expect(cal.largest?.mode).toBe('xdp');
    expect(cal.largest?.traffic).toBe('syn');
    expect(cal.ipvs.map((r) => [r.traffic, r.ratio, r.xdpRatio, r.tcRatio])).toEqual([['udp', 0.75, 0.25, 0.5], ['syn', 0.75, 0.25, null]]);
    const text = formatNorthSouthCalibration(cal, 'host.json');
    expect(text).toMatch(/^largest disagreement: 0\.25 \(xdp syn: VM ×0\.25, host ×0\.50\)$/m);
    expect(text).toMatch(/^ {2}ipvs udp \(.*\): ×0\.75 ± 0\.25 \(rounds ×0\.75–×0\.75\); xdp ×0\.25, tc ×0\.50$/m);
  });

  it('says so when nothing could be compared', () => {
    const cal = calibrateNorthSouth(VM, null);
    expect(cal.rows).toEqual([]);
    expect(formatNorthSouthCalibration(cal, 'skipped')).toMatch(/^IPVS in the VM, node1's CPU per delivered packet ×iptables \(error bar unknown\):$/m);
  });

  it('runs the host bench for the modes this kernel has, with the VM run\'s rounds and windows', () => {
    expect(hostNorthSouthArgv(['xdp', 'iptables', 'ipvs'], { quick: true, rounds: 2 }, '/r/h.json')).toEqual([
      'bench', '--north-south', '--modes', 'xdp,iptables', '--rounds', '2', '--quick', '--lab-prefix', 'vmhost', '--json', '/r/h.json',
    ]);
  });

  it('refuses a file that is not a north-south report in one line naming it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'vipr-ns-cal-'));
    try {
      const file = join(dir, 'latency.json');
      writeFileSync(file, JSON.stringify({ env: {}, results: [] }));
      expect(() => readNorthSouthReport(file)).toThrow(new RegExp(`^.*${file}.*north-south bench report.*vipr bench --north-south --json`));
      expect(() => readNorthSouthReport(file)).toThrow(expect.objectContaining({ message: expect.not.stringContaining('\n') }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
