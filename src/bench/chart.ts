/*
 * The chart: new-connection latency (p50) and connections per second against the number of
 * services, one line per mode (the measured service placed last) and family (IPv6 lines are
 * `<mode> IPv6`), as a vega-lite spec rendered to SVG on the server with vega's headless View
 * (no browser, no canvas: SVG needs neither).
 */
import { View, parse } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { BenchReport } from './results.js';
import type { NorthSouthReport } from './north-south.js';

interface Point {
  /** The line: the mode, `<mode> IPv6` for IPv6 traffic. */
  mode: string;
  family: string;
  services: number;
  p50: number;
  rate: number;
}

export function chartPoints(report: BenchReport): Point[] {
  return report.results
    .filter((r) => r.metric === 'crr' && (r.placement === 'last' || (r.mode === 'direct' && r.placement === 'none')))
    .map((r) => {
      const family = r.family ?? 'IPv4';
      return { mode: family === 'IPv4' ? r.mode : `${r.mode} ${family}`, family, services: r.services, p50: r.p50, rate: r.rate ?? 0 };
    });
}

export function chartSpec(report: BenchReport): TopLevelSpec {
  const e = report.env;
  const points = chartPoints(report);
  const modes = [...new Set(points.map((p) => p.mode))];
  const x = { field: 'services', type: 'quantitative' as const, title: 'services', scale: { type: 'log' as const }, axis: { tickCount: 5 } };
  const color = { field: 'mode', type: 'nominal' as const, title: 'mode', sort: modes };
  const layer = (field: 'p50' | 'rate', title: string) => ({
    width: 340,
    height: 240,
    title,
    mark: { type: 'line' as const, point: true },
    encoding: { x, y: { field, type: 'quantitative' as const, title, scale: { zero: field === 'rate' } }, color },
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'vipr bench: new TCP connections through each dataplane',
      subtitle: `${e.cpu}, ${e.cpus} CPUs, kernel ${e.kernel}; medians of ${e.rounds} rounds; service placed last; ${e.date.slice(0, 10)}`,
    },
    background: 'white',
    data: { values: points },
    hconcat: [layer('p50', 'connect+request+close p50 (µs)'), layer('rate', 'connections per second')],
  } as TopLevelSpec;
}

export async function renderChartSvg(report: BenchReport): Promise<string> {
  const vegaSpec = compile(chartSpec(report)).spec;
  const view = new View(parse(vegaSpec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/**
 * `--north-south`: packets per second delivered to the backends and node1's CPU per packet, one bar per
 * mode, for each kind of traffic.
 */
export function northSouthChartSpec(report: NorthSouthReport): TopLevelSpec {
  const e = report.env;
  const points = report.northSouth.rows.map((r) => ({
    mode: r.mode === 'xdp' || r.mode === 'xdp-redirect' ? `${r.mode} (${r.xdp})` : r.mode, traffic: r.traffic, delivered: r.deliveredPps, node: r.nodeNsPerPacket,
  }));
  const bars = (field: 'delivered' | 'node', title: string) => ({
    width: 300,
    height: 200,
    title,
    mark: { type: 'bar' as const },
    encoding: {
      y: { field: 'mode', type: 'nominal' as const, title: null, sort: null },
      x: { field, type: 'quantitative' as const, title },
      row: { field: 'traffic', type: 'nominal' as const, title: null },
    },
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'vipr bench --north-south: packets from outside to a NodePort',
      subtitle: `${e.cpu}, ${e.cpus} CPUs, kernel ${e.kernel}; medians of ${e.rounds} rounds; ${e.date.slice(0, 10)}`,
    },
    background: 'white',
    data: { values: points },
    hconcat: [bars('delivered', 'packets/s delivered to backends'), bars('node', "node1's CPU ns per delivered packet")],
  } as TopLevelSpec;
}

export async function renderNorthSouthChartSvg(report: NorthSouthReport): Promise<string> {
  const view = new View(parse(compile(northSouthChartSpec(report)).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
