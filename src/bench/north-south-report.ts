/*
 * `vipr bench --north-south` as text: per traffic kind, packets per second sent and delivered,
 * CPU per packet, each mode against iptables; how XDP attached; the XDP paths' BPF_PROG_TEST_RUN
 * costs against the 100 ns target (10 Mpps per core for the program).
 */
import type { NorthSouthReport } from './north-south.js';
import { XDP_PATH_TITLES, type NorthSouthTraffic } from './north-south-plan.js';

const TRAFFIC_TITLES: Record<NorthSouthTraffic, string> = {
  udp: 'UDP to NodePort 30053, 64 tracked flows, backends on the other node (DNAT + SNAT, forwarded)',
  syn: 'TCP SYN to NodePort 30080, every packet a new flow, backends on the balancing node (DNAT)',
};

/** The XDP NodePort path's target per packet in BPF_PROG_TEST_RUN. */
export const XDP_TARGET_NS = 100;
/** Delivered packets per second of xdp over iptables, the target. */
export const XDP_OVER_IPTABLES_TARGET = 3;

function n(v: number): string {
  return Math.round(v).toLocaleString('en-US');
}

function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((row) => row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('   ').trimEnd());
}

export function formatNorthSouth(report: NorthSouthReport): string {
  const { env, northSouth: ns } = report;
  const out: string[] = [];
  for (const traffic of ['udp', 'syn'] as const) {
    const rows = ns.rows.filter((r) => r.traffic === traffic);
    if (rows.length === 0) continue;
    const ipt = rows.find((r) => r.mode === 'iptables');
    out.push(TRAFFIC_TITLES[traffic]);
    const t: string[][] = [['mode', 'XDP', 'sent pps', 'delivered pps', '×iptables', 'node ns/pkt', 'node busy', 'rounds (delivered pps)']];
    for (const r of rows) {
      t.push([
        r.mode, r.xdp, n(r.sentPps), n(r.deliveredPps),
        ipt && ipt.deliveredPps > 0 ? `×${(r.deliveredPps / ipt.deliveredPps).toFixed(2)}` : '-',
        n(r.nodeNsPerPacket), `${Math.round(r.nodeBusy * 100)}%`, r.deliveredPpsByRound.map(n).join(', '),
      ]);
    }
    out.push(...table(t).map((l) => `  ${l}`), ...ns.unavailable.map((u) => `  ${u.mode.padEnd(8)}   unavailable: ${u.reason}`), '');
  }
  out.push(
    `  sent: frames the generator (XDP live frames, no skb) offered node1's NIC per second; what its queue had no room for`,
    `  was dropped there, as by a NIC. delivered: frames per second that left node1 rewritten for a backend, counted by an XDP`,
    `  sink where they land (the underlay port facing node1, the backends' eth0). node ns/pkt: CPU time of node1's receive`,
    `  thread (its NIC's NAPI, pinned to CPU ${ns.nodeCpu}: XDP or the skb, GRO, stack, netfilter, up to the next send) per delivered`,
    `  packet; node busy: that thread's share of the run (near 100%: delivered pps is node1's capacity on one CPU).`,
    `  Generator and sinks: CPU ${env.pinnedCpu}.`,
    '',
  );
  if (ns.xdpPaths !== null) {
    out.push(`XDP program cost per path, BPF_PROG_TEST_RUN in the xdp lab's node (target: NodePort ≤ ${XDP_TARGET_NS} ns, 10 Mpps per core)`);
    const t: string[][] = [['path', 'ns', 'cold', 'verdict', 'what']];
    for (const p of ns.xdpPaths.paths) t.push([p.path, p.ns.toFixed(1), p.coldNs.toFixed(1), p.verdict, XDP_PATH_TITLES[p.path]]);
    const first = ns.xdpPaths.paths[0];
    const newFlow = ns.xdpPaths.paths.find((p) => p.path === 'nodeport_new_local');
    out.push(
      ...table(t).map((l) => `  ${l}`),
      `  ns: warm, as at line rate: the mean over ${n(first?.warmRuns ?? 0)} runs in one call (new flows: ${n(newFlow?.warmRuns ?? 0)}, a flow each) of the bench's`,
      `  harness (bench/xdp_paths.bpf.c: writes the frame back, then runs the program's IPv4 code), less the harness alone`,
      `  (${first?.harnessNs.toFixed(1) ?? '-'} ns a run). cold: the median of ${n(first?.runs ?? 0)} single runs, a fresh frame each (a syscall between runs),`,
      `  less ${ns.xdpPaths.overheadNs.toFixed(1)} ns of fixed cost (a non-IPv4 frame's single run less its mean over one repeated call).`,
      `  NodePort paths ≤ ${XDP_TARGET_NS} ns: ` +
        ns.xdpPaths.paths.filter((p) => p.path.startsWith('nodeport_')).map((p) => `${p.path} ${p.ns <= XDP_TARGET_NS ? 'met' : 'missed'}`).join(', '),
      '',
    );
  }
  for (const [mode, byTraffic] of [['xdp', ns.xdpOverIptables], ['xdp-redirect', ns.xdpRedirectOverIptables ?? {}]] as const) {
    const ratios = Object.entries(byTraffic);
    if (ratios.length === 0) continue;
    out.push(
      `${mode} over iptables, delivered pps (target ≥ ×${XDP_OVER_IPTABLES_TARGET}): ` +
        ratios.map(([t, r]) => `${t} ×${(r as number).toFixed(2)} (${(r as number) >= XDP_OVER_IPTABLES_TARGET ? 'met' : 'missed'})`).join(', '),
    );
  }
  out.push(`load average ${env.loadAverage.start.join(' ')} at the start, ${env.loadAverage.end.join(' ')} at the end; ${env.wallSeconds} s`, '');
  return `${out.join('\n')}\n`;
}
