/*
 * The VM lab's north-south run (`vipr lab vm --north-south`): `vipr bench --north-south` in the
 * guest, whose kernel has IPVS, beside the same bench on this machine for the modes both have.
 *
 * The figure compared is node1's CPU time per delivered packet (its NIC's receive thread, exact
 * from schedstat) relative to iptables' for the same traffic. Under icount that is the
 * instructions node1 executed per packet, times 8 ns. The guest has one vCPU, so the generator,
 * node1 and the sinks take turns on it: delivered packets per second there are one CPU's share
 * between them, not node1's capacity, while CPU per packet is node1's own. For xdp, tc and
 * nftables, the VM's ratio beside this machine's: the largest difference is the error bar on
 * IPVS's, which has no counterpart here. Pure functions of two north-south reports.
 *
 * The lab sits below the bench: the report is read here as the fields it needs (the bench's
 * NorthSouthReport, src/bench/north-south.ts, is what writes it; the CLI prints it with the
 * bench's formatter).
 */
import { z } from 'zod';
import { parseJson, readJsonFile, type JsonRecordKind } from '../json-file.js';
import { roundsText, signed, x2, type RatioComparison } from './calibration.js';

/** The north-south modes the VM runs by default: the plain XDP path (redirect needs a second CPU to mean anything), TC, the rule modes, IPVS. */
export const VM_NORTH_SOUTH_MODES: readonly string[] = ['xdp', 'tc', 'iptables', 'nftables', 'ipvs'];
/** The mode every ratio is to: in both kernels, and kube-proxy's default. */
const BASE_MODE = 'iptables';

const Row = z
  .object({
    mode: z.string(),
    traffic: z.string(),
    deliveredPps: z.number(),
    nodeNsPerPacket: z.number(),
    deliveredPpsByRound: z.array(z.number()),
    nodeNsPerPacketByRound: z.array(z.number()).optional(),
  })
  .passthrough();
const Report = z
  .object({
    env: z.record(z.unknown()),
    northSouth: z.object({ rows: z.array(Row), unavailable: z.array(z.object({ mode: z.string(), reason: z.string() })) }).passthrough(),
  })
  .passthrough();
type NsRow = z.infer<typeof Row>;
/** A `vipr bench --north-south --json` report, as far as the calibration reads it. */
export type VmNorthSouthReport = z.infer<typeof Report>;

const GIVEN: JsonRecordKind<VmNorthSouthReport> = {
  what: 'north-south bench report',
  schema: Report,
  fix: "give a file written by 'vipr bench --north-south --json' or 'vipr lab vm --north-south --json'",
};

/** A north-south report the user names (--host-json, --from-json); a missing or bad file is a one-line JsonFileError. */
export function readNorthSouthReport(path: string): VmNorthSouthReport {
  return readJsonFile(path, GIVEN);
}

/** `text` (read from `source`) as a north-south report, or a one-line JsonFileError. */
export function parseNorthSouthReport(text: string, source: string): VmNorthSouthReport {
  return parseJson(text, source, { ...GIVEN, fix: "the VM's bench wrote something else: see the VM's serial log" });
}

/** Node ns per packet over iptables'. */
export interface NsCalibrationRow extends RatioComparison {
  traffic: string;
}

export interface NsIpvsRow {
  traffic: string;
  ratio: number;
  vmRounds: number[] | null;
  /** xdp and tc in the VM beside it, when measured. */
  xdpRatio: number | null;
  tcRatio: number | null;
}

export interface NsCalibration {
  rows: NsCalibrationRow[];
  /** The row whose |disagreement| is largest: the error bar; null when no row could be compared. */
  largest: NsCalibrationRow | null;
  ipvs: NsIpvsRow[];
}

function rowOf(report: VmNorthSouthReport, mode: string, traffic: string): NsRow | undefined {
  return report.northSouth.rows.find((r) => r.mode === mode && r.traffic === traffic && r.nodeNsPerPacket > 0);
}

/** `mode`'s node CPU per packet over iptables', as medians and round by round (null unless both have the same rounds). */
export function nodeCostRatio(report: VmNorthSouthReport, mode: string, traffic: string): { ratio: number; rounds: number[] | null } | null {
  const r = rowOf(report, mode, traffic);
  const base = rowOf(report, BASE_MODE, traffic);
  if (!r || !base) return null;
  // Absent in reports from before the per-round figure.
  const a = r.nodeNsPerPacketByRound;
  const b = base.nodeNsPerPacketByRound;
  const rounds = a && b && a.length === b.length && a.length > 0 && b.every((v) => v > 0) ? a.map((v, i) => v / (b[i] as number)) : null;
  return { ratio: r.nodeNsPerPacket / base.nodeNsPerPacket, rounds };
}

export function calibrateNorthSouth(vm: VmNorthSouthReport, host: VmNorthSouthReport | null): NsCalibration {
  const traffics = [...new Set(vm.northSouth.rows.map((r) => r.traffic))];
  const modes = [...new Set(vm.northSouth.rows.map((r) => r.mode))].filter((m) => m !== BASE_MODE && m !== 'ipvs');
  const rows: NsCalibrationRow[] = [];
  const ipvs: NsIpvsRow[] = [];
  for (const traffic of traffics) {
    for (const mode of modes) {
      const v = nodeCostRatio(vm, mode, traffic);
      const h = host === null ? null : nodeCostRatio(host, mode, traffic);
      if (!v || !h) continue;
      rows.push({ traffic, mode, vmRatio: v.ratio, vmRounds: v.rounds, hostRatio: h.ratio, hostRounds: h.rounds, disagreement: v.ratio - h.ratio });
    }
    const v = nodeCostRatio(vm, 'ipvs', traffic);
    if (v) {
      ipvs.push({
        traffic, ratio: v.ratio, vmRounds: v.rounds,
        xdpRatio: nodeCostRatio(vm, 'xdp', traffic)?.ratio ?? null, tcRatio: nodeCostRatio(vm, 'tc', traffic)?.ratio ?? null,
      });
    }
  }
  let largest: NsCalibrationRow | null = null;
  for (const r of rows) if (!largest || Math.abs(r.disagreement) > Math.abs(largest.disagreement)) largest = r;
  return { rows, largest, ipvs };
}

const TRAFFIC_TITLE: Record<string, string> = {
  udp: 'UDP to a NodePort, tracked flows, forwarded to the other node',
  syn: 'TCP SYN to a NodePort, every packet a new flow, to local pods',
};

/** The calibration table, the largest disagreement, and IPVS's node CPU per packet ×iptables with it as the error bar. */
export function formatNorthSouthCalibration(cal: NsCalibration, hostSource: string): string {
  const lines = [
    `north-south calibration: node1's CPU time per delivered packet ×iptables in the VM beside this machine (${hostSource})`,
    `  ${'traffic'.padEnd(7)} ${'mode'.padEnd(12)} ${'VM'.padStart(6)} ${'VM rounds'.padStart(13)} ${'host'.padStart(6)} ${'host rounds'.padStart(13)} ${'VM-host'.padStart(7)}`,
  ];
  for (const r of cal.rows) {
    lines.push(
      `  ${r.traffic.padEnd(7)} ${r.mode.padEnd(12)} ${x2(r.vmRatio).padStart(6)} ${roundsText(r.vmRounds).padStart(13)} ` +
        `${x2(r.hostRatio).padStart(6)} ${roundsText(r.hostRounds).padStart(13)} ${signed(r.disagreement).padStart(7)}`,
    );
  }
  const l = cal.largest;
  lines.push(
    l === null
      ? 'largest disagreement: none (no mode measured both in the VM and on this machine beside iptables)'
      : `largest disagreement: ${Math.abs(l.disagreement).toFixed(2)} (${l.mode} ${l.traffic}: VM ${x2(l.vmRatio)}, host ${x2(l.hostRatio)})`,
  );
  const bar = l === null ? null : Math.abs(l.disagreement);
  lines.push(`IPVS in the VM, node1's CPU per delivered packet ×iptables${bar === null ? ' (error bar unknown)' : ` ± ${bar.toFixed(2)} (the largest disagreement above)`}:`);
  if (cal.ipvs.length === 0) lines.push('  not measured');
  for (const r of cal.ipvs) {
    const beside = [r.xdpRatio === null ? null : `xdp ${x2(r.xdpRatio)}`, r.tcRatio === null ? null : `tc ${x2(r.tcRatio)}`].filter((x) => x !== null);
    lines.push(
      `  ipvs ${r.traffic} (${TRAFFIC_TITLE[r.traffic] ?? r.traffic}): ${x2(r.ratio)}${bar === null ? '' : ` ± ${bar.toFixed(2)}`}` +
        ` (rounds ${roundsText(r.vmRounds)})${beside.length === 0 ? '' : `; ${beside.join(', ')}`}`,
    );
  }
  lines.push(
    '  (one vCPU in the VM: the generator, node1 and the sinks share it, so its delivered pps are a share of one CPU;',
    '  CPU per packet is node1\'s own. Under icount every instruction costs 8 ns: no caches, branch prediction or TLB.)',
  );
  return `${lines.join('\n')}\n`;
}

/** `vipr bench --north-south`'s arguments on this machine for the calibration: the VM's modes it has, rounds and windows. */
export function hostNorthSouthArgv(modes: readonly string[], opts: { quick: boolean; rounds?: number }, json: string): string[] {
  return [
    'bench', '--north-south',
    '--modes', modes.filter((m) => m !== 'ipvs').join(','),
    ...(opts.rounds !== undefined ? ['--rounds', String(opts.rounds)] : []),
    ...(opts.quick ? ['--quick'] : []),
    '--lab-prefix', 'vmhost',
    '--json', json,
  ];
}
