/*
 * The comparison as text: one table per figure, modes down, service counts across, every
 * latency also as a ratio to `direct` (the floor) and every rate and control-plane figure also
 * as a ratio to BPF; then BPF against each other mode, and BPF at N against BPF at 1.
 */
import { failedMetric, findResult, type BenchReport, type BenchResult, type ResultPlacement } from './results.js';
import type { BenchMode, Metric, TrafficMetric } from './plan.js';
import type { IpFamily } from '../model/ip.js';

const TRAFFIC_TITLES: Record<TrafficMetric, { title: string; rate: string }> = {
  rr: { title: 'TCP request/response on one established connection (rr)', rate: 'req/s' },
  crr: { title: 'TCP new connection: connect, request/response, close (crr)', rate: 'conn/s' },
  udp: { title: 'UDP request/response, new source port per query (udp)', rate: 'q/s' },
};

type ControlTable = 'sync_all' | 'sync_one' | 'rss' | 'heap' | 'churn';

const CONTROL_TITLES: Record<ControlTable, string> = {
  sync_all: 'programming all N services from nothing (sync_all), ms',
  sync_one: 'one changed service on top of N (sync_one), ms',
  rss: 'agent memory with N services (VmRSS), MiB',
  heap: 'agent V8 heap in use with N services (nodejs_heap_size_used_bytes), MiB',
  churn: 'endpoint change to dataplane under a stream of changes (churn), p50/p99 ms',
};

function fmtNum(v: number, digits: number): string {
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function fmtLatency(v: number): string {
  return v >= 1000 ? fmtNum(v, 0) : v >= 100 ? fmtNum(v, 1) : fmtNum(v, 1);
}

function fmtMs(v: number): string {
  return v >= 100 ? fmtNum(v, 0) : v >= 1 ? fmtNum(v, 2) : fmtNum(v, 3);
}

function ratio(a: number, b: number): string {
  if (b === 0) return '×?';
  return `×${(a / b).toFixed(2)}`;
}

function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('   ').trimEnd());
}

function servicesLabel(n: number): string {
  return `${n.toLocaleString('en-US')} service${n === 1 ? '' : 's'}`;
}

function modesOf(report: BenchReport): BenchMode[] {
  const seen: BenchMode[] = [];
  for (const r of report.results) if (!seen.includes(r.mode)) seen.push(r.mode);
  return seen;
}

function servicesOf(report: BenchReport): number[] {
  return [...new Set(report.results.map((r) => r.services))].sort((a, b) => a - b);
}

function failedCell(report: BenchReport, mode: BenchMode, services: number, metric: Metric): string {
  return failedMetric(report.failures, mode, services, metric) ? 'failed (see below)' : '-';
}

function unavailableRows(report: BenchReport, columns: number): string[][] {
  return report.unavailable.map((u) => [u.mode, `unavailable: ${u.reason}`, ...Array<string>(Math.max(0, columns - 1)).fill('')]);
}

function trafficTable(report: BenchReport, metric: TrafficMetric, placement: Exclude<ResultPlacement, 'none'>, family: IpFamily = 'IPv4'): string[] {
  const services = servicesOf(report);
  const rows: string[][] = [['mode', ...services.map(servicesLabel)]];
  let any = false;
  for (const mode of modesOf(report)) {
    const row: string[] = [mode];
    for (const n of services) {
      const r = findResult(report.results, { mode, services: n, placement: mode === 'direct' ? 'none' : placement, metric, family });
      if (!r) {
        row.push(failedCell(report, mode, n, metric));
        continue;
      }
      any = any || mode !== 'direct';
      const direct = findResult(report.results, { mode: 'direct', services: n, placement: 'none', metric, family });
      const bpf = findResult(report.results, { mode: 'bpf', services: n, placement, metric, family });
      let cellText = `${fmtLatency(r.p50)}/${fmtLatency(r.p99 ?? r.p50)} µs`;
      if (mode !== 'direct' && direct) cellText += ` ${ratio(r.p50, direct.p50)}`;
      cellText += `  ${fmtNum(r.rate ?? 0, 0)}/s`;
      if (mode !== 'bpf' && mode !== 'direct' && bpf?.rate && r.rate) cellText += ` (bpf ${ratio(bpf.rate, r.rate)})`;
      row.push(cellText);
    }
    rows.push(row);
  }
  if (!any) return [];
  rows.push(...unavailableRows(report, services.length));
  const where = placement === 'last' ? 'service placed last' : 'service placed in the middle';
  // Reports that measured IPv6 name the family of every traffic table; IPv4-only ones read as before.
  const measuredIpv6 = report.results.some((r) => r.family === 'IPv6');
  return [
    `${TRAFFIC_TITLES[metric].title}, ${where}${measuredIpv6 ? `, ${family}` : ''}`,
    `  p50/p99 latency (p50 ×direct)  ${TRAFFIC_TITLES[metric].rate} (bpf's rate ×this mode's)`,
    ...table(rows).map((l) => `  ${l}`),
    '',
  ];
}

function controlTable(report: BenchReport, metric: ControlTable): string[] {
  const services = servicesOf(report);
  const rows: string[][] = [['mode', ...services.map(servicesLabel)]];
  for (const mode of modesOf(report)) {
    if (mode === 'direct') continue;
    const row: string[] = [mode];
    for (const n of services) {
      const r = findResult(report.results, { mode, services: n, placement: 'none', metric });
      if (!r) {
        row.push(failedCell(report, mode, n, metric));
        continue;
      }
      const bpf = findResult(report.results, { mode: 'bpf', services: n, placement: 'none', metric });
      let text = metric === 'rss' || metric === 'heap' ? fmtNum(r.p50, 1) : fmtMs(r.p50);
      if (metric === 'sync_one' && r.p99 !== null) text += ` (p99 ${fmtMs(r.p99)})`;
      if (metric === 'churn') text += `/${fmtMs(r.p99 ?? r.p50)} at ${fmtNum(r.rate ?? 0, 0)}/s (looks ${fmtMs(r.resolutionMs ?? 0)})`;
      if (r.mapWork !== undefined) text += ` [maps ${fmtMs(r.mapWork)}]`;
      if (mode !== 'bpf' && bpf && bpf.p50 > 0) text += ` ${ratio(r.p50, bpf.p50)} bpf`;
      row.push(text);
    }
    rows.push(row);
  }
  // Metrics a report has none of (churn above CHURN_MAX_SERVICES, heap in older files): no table.
  if (!report.results.some((r) => r.metric === metric)) return [];
  rows.push(...unavailableRows(report, services.length));
  const note = metric !== 'rss' && rows.some((r) => r.some((c) => c.includes('[maps '))) ? ['  [maps X]: the part of it spent in BPF map calls'] : [];
  const churnNote = metric === 'churn'
    ? ['  from the API update to the first look at the dataplane that shows it (an upper bound by one look); agents at --min-sync-period 0']
    : [];
  return [CONTROL_TITLES[metric], ...table(rows).map((l) => `  ${l}`), ...note, ...churnNote, ''];
}

/** BPF's headline comparisons, one line each. */
function bpfSummary(report: BenchReport): string[] {
  const services = servicesOf(report);
  const lines: string[] = [];
  const get = (mode: BenchMode, n: number, metric: Metric, placement: ResultPlacement): BenchResult | undefined =>
    findResult(report.results, { mode, services: n, placement, metric });
  for (const n of services) {
    const bpf = get('bpf', n, 'crr', 'last');
    const direct = get('direct', n, 'crr', 'none');
    if (!bpf) continue;
    const parts: string[] = [];
    if (direct) parts.push(`new-connection p50 ${((bpf.p50 / direct.p50 - 1) * 100).toFixed(1)}% vs direct`);
    for (const mode of modesOf(report)) {
      if (mode === 'bpf' || mode === 'direct') continue;
      const other = get(mode, n, 'crr', 'last');
      if (other?.rate && bpf.rate) parts.push(`conn/s ${ratio(bpf.rate, other.rate)} ${mode}`);
    }
    const one = get('bpf', services[0] as number, 'crr', 'last');
    if (one && n !== services[0]) parts.push(`p50 ${((bpf.p50 / one.p50 - 1) * 100).toFixed(1)}% vs bpf at ${servicesLabel(one.services)}`);
    lines.push(`  ${servicesLabel(n)}: ${parts.join('; ')}`);
  }
  return lines.length === 0 ? [] : ['BPF, service placed last:', ...lines, ''];
}

export function formatReport(report: BenchReport): string {
  const e = report.env;
  const out: string[] = [
    `vipr bench: ${e.cpu} (${e.cpus} CPUs), kernel ${e.kernel}, ${e.date}`,
    `  ${e.backends} backends per service; medians of ${e.rounds} round${e.rounds === 1 ? '' : 's'}; load generator and responders on CPU ${e.pinnedCpu}; /dev/cpu_dma_latency ${e.cpuDmaLatency}`,
    `  direct = client → backend, routed, no NAT (the floor); load average ${e.loadAverage.start.join(' ')} at the start, ${e.loadAverage.end.join(' ')} at the end`,
    ...(e.trafficOnly === true ? ['  traffic only: each node programmed once per service count by its agent; no sync_all, sync_one or churn'] : []),
    '',
  ];
  for (const metric of ['crr', 'rr', 'udp'] as const) out.push(...trafficTable(report, metric, 'last'));
  for (const metric of ['crr', 'udp'] as const) out.push(...trafficTable(report, metric, 'middle'));
  // IPv6 (when measured): the same traffic to each Service's IPv6 cluster IP, placed last.
  for (const metric of ['crr', 'rr', 'udp'] as const) out.push(...trafficTable(report, metric, 'last', 'IPv6'));
  for (const metric of ['sync_all', 'sync_one', 'churn', 'rss', 'heap'] as const) out.push(...controlTable(report, metric));
  out.push(...bpfSummary(report));
  if (report.failures.length > 0) {
    out.push('Not measured:');
    for (const f of report.failures) out.push(`  ${f.mode}${f.metric ? ` ${f.metric}` : ''} with ${servicesLabel(f.services)} (round ${f.round}): ${f.reason}`);
    out.push('');
  }
  if (report.placements.length > 0) {
    const where = report.placements.map((p) => `${p.mode} ${p.services}: ${p.placement} rule ${p.position}/${p.of}`);
    out.push(`KUBE-SERVICES positions of the measured services: ${where.join(', ')}`, '');
  }
  out.push(`wall time ${e.wallSeconds} s`);
  return `${out.join('\n')}\n`;
}
