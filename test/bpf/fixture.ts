/*
 * A loaded datapath in a private pin dir, programmed through the real reconciler from real
 * Kubernetes objects, for BPF_PROG_TEST_RUN fixtures.
 */
import { LoadedDatapath, cleanupDatapath } from '../../src/bpf/datapath.js';
import { BpfDataplane } from '../../src/sync/bpf-dataplane.js';
import { buildDesiredState } from '../../src/model/build.js';
import { parseEndpointSlice, parseService } from '../../src/sources/parse.js';
import { clusterObjects } from '../../src/sync/tracker.js';
import { progTestRun } from '../../src/bpf/libbpf.js';
import { readCounters } from '../../src/bpf/inspect.js';
import type { StatName } from '../../src/bpf/layouts.js';

export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;

export interface SvcDef {
  name: string;
  vip: string;
  port: number;
  protocol?: 'TCP' | 'UDP';
  targetPort: number;
  backends: string[];
  affinity?: number;
}

export function service(d: SvcDef): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: d.name, namespace: 'default' },
    spec: {
      type: 'ClusterIP',
      clusterIP: d.vip,
      ports: [{ protocol: d.protocol ?? 'TCP', port: d.port, targetPort: d.targetPort }],
      ...(d.affinity ? { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: d.affinity } } } : {}),
    },
  };
}

export function slice(d: SvcDef): unknown {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${d.name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': d.name } },
    addressType: 'IPv4',
    ports: [{ name: '', protocol: d.protocol ?? 'TCP', port: d.targetPort }],
    endpoints: d.backends.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: 'node' })),
  };
}

export class DatapathFixture {
  readonly dp: LoadedDatapath;
  readonly plane: BpfDataplane;

  constructor(readonly pinDir: string) {
    cleanupDatapath(pinDir);
    this.dp = LoadedDatapath.load(pinDir);
    this.plane = new BpfDataplane(this.dp.maps, null);
  }

  async program(defs: SvcDef[]): Promise<void> {
    const objects = clusterObjects(defs.map((d) => parseService(service(d))), defs.map((d) => parseEndpointSlice(slice(d))));
    const state = buildDesiredState(objects, { name: 'node', zone: null, ips: [] });
    const result = await this.plane.sync(state, false);
    if (result.failed.length > 0) throw new Error(`sync failed: ${JSON.stringify(result.failed)}`);
  }

  ingress(frame: Buffer): { verdict: number; out: Buffer } {
    const r = progTestRun(this.dp.programs.ingress, frame);
    return { verdict: r.retval, out: r.data };
  }

  egress(frame: Buffer): { verdict: number; out: Buffer } {
    const r = progTestRun(this.dp.programs.egress, frame);
    return { verdict: r.retval, out: r.data };
  }

  counter(name: StatName): number {
    return readCounters(this.dp.maps)[name].packets;
  }

  close(): void {
    this.dp.close();
    cleanupDatapath(this.pinDir);
  }
}
