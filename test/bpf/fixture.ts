/*
 * A loaded datapath in a private pin dir, programmed through the real reconciler from real
 * Kubernetes objects, for BPF_PROG_TEST_RUN fixtures.
 */
import { LoadedDatapath, cleanupDatapath } from '../../src/bpf/datapath.js';
import { BpfDataplane, type BpfDataplaneOptions } from '../../src/bpf/reconciler/reconciler.js';
import { buildDesiredState } from '../../src/model/build.js';
import { parseEndpointSlice, parseService } from '../../src/sources/parse.js';
import { clusterObjects } from '../../src/sync/tracker.js';
import { progTestRun } from '../../src/bpf/libbpf.js';
import { readCounters } from '../../src/bpf/inspect.js';
import { CT_ROLES, type StatName } from '../../src/bpf/layouts.js';
import type { CtSizes } from '../../src/bpf/conntrack.js';

export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;
export const XDP_DROP = 1;
export const XDP_PASS = 2;
export const XDP_TX = 3;
export const XDP_REDIRECT = 4;

export const NODE = 'node1';
export const NODE_IP = '192.168.60.11';

export interface SvcDef {
  name: string;
  vip: string;
  port: number;
  protocol?: 'TCP' | 'UDP';
  targetPort: number;
  /** Endpoint IPs; on this node unless listed in `remote`. */
  backends: string[];
  remote?: string[];
  affinity?: number;
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer';
  nodePort?: number;
  loadBalancerIPs?: string[];
  externalIPs?: string[];
  sourceRanges?: string[];
  externalTrafficPolicy?: 'Cluster' | 'Local';
  scheduler?: string;
  /** More annotations (vipr.io/lb-mode ...). */
  annotations?: Record<string, string>;
}

export function service(d: SvcDef): unknown {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: d.name, namespace: 'default', annotations: { ...(d.scheduler ? { 'vipr.io/scheduler': d.scheduler } : {}), ...d.annotations } },
    spec: {
      type: d.type ?? 'ClusterIP',
      clusterIP: d.vip,
      ports: [{ protocol: d.protocol ?? 'TCP', port: d.port, targetPort: d.targetPort, ...(d.nodePort ? { nodePort: d.nodePort } : {}) }],
      ...(d.affinity ? { sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: d.affinity } } } : {}),
      ...(d.externalIPs ? { externalIPs: d.externalIPs } : {}),
      ...(d.sourceRanges ? { loadBalancerSourceRanges: d.sourceRanges } : {}),
      ...(d.externalTrafficPolicy ? { externalTrafficPolicy: d.externalTrafficPolicy } : {}),
      ...(d.externalTrafficPolicy === 'Local' && d.type === 'LoadBalancer' ? { healthCheckNodePort: 32000 } : {}),
    },
    ...(d.loadBalancerIPs ? { status: { loadBalancer: { ingress: d.loadBalancerIPs.map((ip) => ({ ip })) } } } : {}),
  };
}

export function slice(d: SvcDef): unknown {
  const all = [...d.backends, ...(d.remote ?? [])];
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${d.name}-1`, namespace: 'default', labels: { 'kubernetes.io/service-name': d.name } },
    addressType: d.vip.includes(':') ? 'IPv6' : 'IPv4',
    ports: [{ name: '', protocol: d.protocol ?? 'TCP', port: d.targetPort }],
    endpoints: all.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: d.remote?.includes(ip) ? 'node2' : NODE })),
  };
}

export class DatapathFixture {
  readonly dp: LoadedDatapath;
  readonly plane: BpfDataplane;

  constructor(readonly pinDir: string, opts: Partial<BpfDataplaneOptions> = {}, ctSizes?: CtSizes) {
    cleanupDatapath(pinDir);
    // A load that throws (a verifier rejection) must not leave its pin dir behind: no close() comes.
    let dp: LoadedDatapath | null = null;
    try {
      dp = LoadedDatapath.load(pinDir, undefined, ctSizes ? { ctSizes } : {});
      // The IPv6 programs the entry points tail-call, put in as the agent does before attaching.
      dp.installIpv6Programs();
    } catch (err) {
      dp?.close();
      cleanupDatapath(pinDir);
      throw err;
    }
    this.dp = dp;
    this.plane = new BpfDataplane(this.dp.maps, null, opts);
  }

  async program(defs: SvcDef[], nodeIps: string[] = [NODE_IP]): Promise<void> {
    const objects = clusterObjects(defs.map((d) => parseService(service(d))), defs.map((d) => parseEndpointSlice(slice(d))));
    const state = buildDesiredState(objects, { name: NODE, zone: null, ips: nodeIps });
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

  /** `meta`: what XDP left in front of the frame for TC (struct vipr_xdp_meta), or empty. */
  xdp(frame: Buffer): { verdict: number; out: Buffer; meta: Buffer } {
    const r = progTestRun(this.dp.xdpProgram(), frame, 1, { xdpMeta: true });
    return { verdict: r.retval, out: r.data, meta: r.meta };
  }

  counter(name: StatName): number {
    return readCounters(this.dp.maps)[name].packets;
  }

  /** Forgets every tracked flow and affinity (as `vipr conntrack flush`). */
  flushFlows(): void {
    for (const role of CT_ROLES) for (const k of this.dp.maps[role].keys()) this.dp.maps[role].delete(k);
    for (const k of this.dp.maps.affinity.keys()) this.dp.maps.affinity.delete(k);
    for (const k of this.dp.maps.xdpFlows.keys()) this.dp.maps.xdpFlows.delete(k);
    for (const k of this.dp.maps.xdpFlows6.keys()) this.dp.maps.xdpFlows6.delete(k);
  }

  close(): void {
    this.dp.close();
    cleanupDatapath(this.pinDir);
  }
}
