/*
 * How far the VM lab's emulated ratios sit from the real machine's. The VM (qemu, TCG with
 * instruction counting) is the only place IPVS runs here; bpf, iptables, iptables-nft and nftables
 * run both there and on this machine. For those, each mode's p50 relative to the `direct` floor
 * (no NAT) in the VM is put beside the same ratio from `vipr bench` on this machine: the largest
 * difference between the two is how far an emulated ratio can be trusted, and so the error bar on
 * IPVS's ratio, which has no real counterpart here. Each side's ratio round by round is shown
 * too: this machine's own spread between rounds is part of any disagreement. Pure functions of
 * two bench reports.
 */
import type { BenchReport, BenchResult } from './vm.js';

/** Modes measured both in the VM and on this machine. */
export const CALIBRATION_MODES = ['bpf', 'iptables', 'iptables-nft', 'nftables'] as const;
/**
 * The modes that find a Service by a hash lookup whatever the count, as IPVS does (its virtual
 * servers are a hash table): their disagreement is the error bar for a hash lookup. iptables and
 * iptables-nft walk a rule per Service, which instruction counting charges at full price and a
 * real CPU runs as a loop of predicted branches over cached rules.
 */
export const HASH_LOOKUP_MODES: readonly string[] = ['bpf', 'nftables'];
/** Traffic metrics compared (p50 latency, service placed last, IPv4). */
export const CALIBRATION_METRICS = ['rr', 'crr', 'udp'] as const;

export interface RatioRange {
  min: number;
  max: number;
}

/** A mode's ratio to a base mode in the VM beside the same ratio on this machine. */
export interface RatioComparison {
  mode: string;
  /** VM: the ratio of medians over rounds. */
  vmRatio: number;
  /** VM: the same ratio round by round, when the report has rounds. */
  vmRounds: number[] | null;
  /** This machine: the ratio. */
  hostRatio: number;
  /** This machine: the ratio round by round (its own noise, part of any disagreement). */
  hostRounds: number[] | null;
  /** vmRatio - hostRatio. */
  disagreement: number;
}

/** Latency: p50 over direct's p50. */
export interface CalibrationRow extends RatioComparison {
  metric: string;
  services: number;
}

export interface IpvsRow {
  metric: string;
  services: number;
  /** IPVS in the VM: p50 / direct's p50. */
  ratio: number;
  vmRounds: number[] | null;
  /** bpf in the VM beside it, when measured. */
  bpfRatio: number | null;
}

export interface Calibration {
  rows: CalibrationRow[];
  /** The row whose |disagreement| is largest: the error bar; null when no row could be compared. */
  largest: CalibrationRow | null;
  /** The same among HASH_LOOKUP_MODES: the error bar for a mode that looks Services up by hash. */
  largestHash: CalibrationRow | null;
  ipvs: IpvsRow[];
}

/** The IPv4 traffic result of `mode` (direct: placement none; the others: the Service placed last). */
function trafficResult(report: BenchReport, mode: string, metric: string, services: number): BenchResult | undefined {
  const placement = mode === 'direct' ? 'none' : 'last';
  return report.results.find(
    (r) =>
      r.mode === mode &&
      r.metric === metric &&
      r.services === services &&
      r.placement === placement &&
      (r.family ?? 'IPv4') === 'IPv4',
  );
}

/** `result`'s p50 over `floor`'s, round by round; null unless both carry the same number of rounds. */
export function roundRatios(result: BenchResult, floor: BenchResult): number[] | null {
  const a = result.p50ByRound;
  const b = floor.p50ByRound;
  if (!a || !b || a.length !== b.length || a.length === 0) return null;
  if (b.some((v) => v <= 0)) return null;
  return a.map((v, i) => v / (b[i] as number));
}

export function rangeOf(values: readonly number[]): RatioRange {
  if (values.length === 0) throw new RangeError('range of nothing');
  return { min: Math.min(...values), max: Math.max(...values) };
}

/** Service counts present (with a `direct` row) in both reports, ascending. */
function sharedCounts(vm: BenchReport, host: BenchReport): number[] {
  const counts = (r: BenchReport): Set<number> => new Set(r.results.filter((x) => x.mode === 'direct').map((x) => x.services));
  const h = counts(host);
  return [...counts(vm)].filter((n) => h.has(n)).sort((a, b) => a - b);
}

function ratio(report: BenchReport, mode: string, metric: string, services: number): { ratio: number; rounds: number[] | null } | null {
  const floor = trafficResult(report, 'direct', metric, services);
  const r = trafficResult(report, mode, metric, services);
  if (!floor || !r || floor.p50 <= 0) return null;
  return { ratio: r.p50 / floor.p50, rounds: roundRatios(r, floor) };
}

/** The calibration table of a VM report against a report of this machine. */
export function calibrate(vm: BenchReport, host: BenchReport): Calibration {
  const rows: CalibrationRow[] = [];
  const ipvs: IpvsRow[] = [];
  const vmCounts = [...new Set(vm.results.filter((x) => x.mode === 'direct').map((x) => x.services))].sort((a, b) => a - b);
  const shared = sharedCounts(vm, host);
  for (const metric of CALIBRATION_METRICS) {
    for (const services of shared) {
      for (const mode of CALIBRATION_MODES) {
        const v = ratio(vm, mode, metric, services);
        const h = ratio(host, mode, metric, services);
        if (!v || !h) continue;
        rows.push({ metric, services, mode, vmRatio: v.ratio, vmRounds: v.rounds, hostRatio: h.ratio, hostRounds: h.rounds, disagreement: v.ratio - h.ratio });
      }
    }
    for (const services of vmCounts) {
      const v = ratio(vm, 'ipvs', metric, services);
      if (!v) continue;
      ipvs.push({ metric, services, ratio: v.ratio, vmRounds: v.rounds, bpfRatio: ratio(vm, 'bpf', metric, services)?.ratio ?? null });
    }
  }
  const largestOf = (of: CalibrationRow[]): CalibrationRow | null => {
    let largest: CalibrationRow | null = null;
    for (const r of of) if (!largest || Math.abs(r.disagreement) > Math.abs(largest.disagreement)) largest = r;
    return largest;
  };
  return { rows, largest: largestOf(rows), largestHash: largestOf(rows.filter((r) => HASH_LOOKUP_MODES.includes(r.mode))), ipvs };
}

const METRIC_TITLE: Record<string, string> = {
  rr: 'rr (request/response on one connection)',
  crr: 'crr (new connection)',
  udp: 'udp (query, new source port)',
};

export const x2 = (v: number): string => `×${v.toFixed(2)}`;
export const signed = (v: number): string => `${v >= 0 ? '+' : '-'}${Math.abs(v).toFixed(2)}`;
/** A ratio's range over rounds (`×1.08–×1.11`), or `-` without rounds. */
export const roundsText = (rounds: number[] | null): string => {
  if (!rounds) return '-';
  const { min, max } = rangeOf(rounds);
  return rounds.length === 1 ? x2(min) : `${x2(min)}–${x2(max)}`;
};
const servicesText = (n: number): string => `${n.toLocaleString('en-US')} service${n === 1 ? '' : 's'}`;

/**
 * The table `make lab-vm` prints: per metric, Service count and mode, the VM's p50 ratio to
 * `direct` (and its range over rounds), this machine's, and their difference; then the largest
 * difference, the largest among the hash-lookup modes when that is smaller, and IPVS's ratios
 * with both as error bars.
 */
export function formatCalibration(cal: Calibration, hostSource: string): string {
  const lines: string[] = [];
  lines.push(`calibration: p50 ×direct in the VM beside this machine (${hostSource}); IPv4, Service placed last`);
  lines.push(
    `  ${'metric'.padEnd(6)} ${'services'.padStart(8)} ${'mode'.padEnd(13)} ${'VM'.padStart(6)} ${'VM rounds'.padStart(13)} ${'host'.padStart(6)} ${'host rounds'.padStart(13)} ${'VM-host'.padStart(7)}`,
  );
  for (const r of cal.rows) {
    lines.push(
      `  ${r.metric.padEnd(6)} ${r.services.toLocaleString('en-US').padStart(8)} ${r.mode.padEnd(13)} ${x2(r.vmRatio).padStart(6)} ${roundsText(r.vmRounds).padStart(13)} ${x2(r.hostRatio).padStart(6)} ${roundsText(r.hostRounds).padStart(13)} ${signed(r.disagreement).padStart(7)}`,
    );
  }
  if (cal.largest === null) {
    lines.push('largest disagreement: none (no mode measured both in the VM and on this machine at the same Service count)');
    lines.push('IPVS error bar: unknown');
  } else {
    const l = cal.largest;
    lines.push(
      `largest disagreement: ${Math.abs(l.disagreement).toFixed(2)} (${l.mode} ${l.metric} at ${servicesText(l.services)}: VM ${x2(l.vmRatio)}, host ${x2(l.hostRatio)})`,
    );
  }
  const h = cal.largestHash;
  if (h !== null && h !== cal.largest) {
    lines.push(
      `largest among the modes that look a Service up by hash, as IPVS does (${HASH_LOOKUP_MODES.join(', ')}): ` +
        `${Math.abs(h.disagreement).toFixed(2)} (${h.mode} ${h.metric} at ${servicesText(h.services)}: VM ${x2(h.vmRatio)}, host ${x2(h.hostRatio)})`,
    );
  }
  const bar = cal.largest === null ? null : Math.abs(cal.largest.disagreement);
  const hashBar = h === null || h === cal.largest ? null : Math.abs(h.disagreement);
  lines.push(`IPVS in the VM, p50 ×direct${bar === null ? '' : ` ± ${bar.toFixed(2)} (the largest disagreement above)`}:`);
  if (cal.ipvs.length === 0) lines.push('  not measured');
  for (const r of cal.ipvs) {
    lines.push(
      `  ipvs ${METRIC_TITLE[r.metric] ?? r.metric}, ${servicesText(r.services)}: ${x2(r.ratio)}${bar === null ? '' : ` ± ${bar.toFixed(2)}`}` +
        `${hashBar === null ? '' : ` (± ${hashBar.toFixed(2)} as a hash lookup)`}` +
        ` (rounds ${roundsText(r.vmRounds)})${r.bpfRatio === null ? '' : `; bpf ${x2(r.bpfRatio)}`}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
