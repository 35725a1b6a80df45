/*
 * Which frontends get the datapath's DSR flag (SVC_F_DSR, bpf/lib/dsr.h): external IPv4 frontends
 * of Services whose lb mode (annotation vipr.io/lb-mode, else --lb-mode) is dsr, or hybrid for TCP;
 * never cluster IPs, never externalTrafficPolicy Local (no remote backends), never IPv6.
 */
import { bpfFrontends } from '../../src/bpf/reconciler/frontends.js';
import { SVC_F_DSR, SVC_F_EXTERNAL } from '../../src/bpf/layouts.js';
import { selectEndpoints } from '../../src/model/endpoints.js';
import type { DesiredState, LbMode, Protocol, ServiceEntry } from '../../src/model/types.js';
import { servicePortOf } from '../helpers/objects.js';

function entry(name: string, protocol: Protocol, lbMode: LbMode | null, more: Partial<ReturnType<typeof servicePortOf>> = {}): ServiceEntry {
  const service = servicePortOf({
    id: { namespace: 'default', name, port: '', protocol },
    type: 'LoadBalancer',
    nodePort: 30080,
    loadBalancerIPs: ['10.250.0.10'],
    ...(lbMode === null ? {} : { lbMode }),
    ...more,
  });
  const endpoints = [{ ip: '10.244.2.11', port: 80, ready: true, serving: true, terminating: false, nodeName: 'node2', zone: null, zoneHints: null, isLocal: false }];
  return { key: `default/${name}:`, service, endpoints, selection: selectEndpoints(endpoints, service, { name: 'node1', zone: null, ips: [] }) };
}

/** `vip:port` of each frontend with its DSR flag, and whether it is external. */
function dsrFlags(entries: ServiceEntry[], nodeDefault: LbMode): Record<string, [boolean, boolean]> {
  const state: DesiredState = { node: { name: 'node1', zone: null, ips: [] }, services: entries };
  const out: Record<string, [boolean, boolean]> = {};
  for (const f of bpfFrontends(state, 'random', nodeDefault).frontends) {
    out[`${f.service} ${f.key.vip}:${f.key.port}/${f.key.scope}`] = [(f.flags & SVC_F_EXTERNAL) !== 0, (f.flags & SVC_F_DSR) !== 0];
  }
  return out;
}

describe('lb mode → DSR flag', () => {
  it('dsr: the NodePort and the LoadBalancer IP, not the cluster IP', () => {
    expect(dsrFlags([entry('a', 'TCP', 'dsr')], 'snat')).toEqual({
      'default/a: 10.0.0.10:80/0': [false, false],
      'default/a: 0.0.0.0:30080/0': [true, true],
      'default/a: 10.250.0.10:80/0': [true, true],
    });
  });

  it('hybrid: TCP only; snat: none; no annotation: the node default', () => {
    const apart = (n: number): Partial<ReturnType<typeof servicePortOf>> => ({ nodePort: 30080 + n, clusterIP: `10.0.0.${10 + n}`, loadBalancerIPs: [] });
    const flags = dsrFlags([entry('t', 'TCP', 'hybrid', apart(1)), entry('u', 'UDP', 'hybrid', apart(2)), entry('s', 'TCP', 'snat', apart(3)), entry('d', 'UDP', null, apart(4))], 'dsr');
    expect(flags['default/t: 0.0.0.0:30081/0']).toEqual([true, true]);
    expect(flags['default/u: 0.0.0.0:30082/0']).toEqual([true, false]);
    expect(flags['default/s: 0.0.0.0:30083/0']).toEqual([true, false]);
    expect(flags['default/d: 0.0.0.0:30084/0']).toEqual([true, true]);
    expect(dsrFlags([entry('d', 'UDP', null)], 'snat')['default/d: 0.0.0.0:30080/0']).toEqual([true, false]);
    expect(dsrFlags([entry('d', 'UDP', null)], 'hybrid')['default/d: 0.0.0.0:30080/0']).toEqual([true, false]);
  });

  it('externalTrafficPolicy Local and IPv6 stay without', () => {
    const local = dsrFlags([entry('l', 'TCP', 'dsr', { externalTrafficPolicy: 'Local', healthCheckNodePort: 32000 })], 'dsr');
    expect(Object.values(local).some(([, dsr]) => dsr)).toBe(false);
    const v6 = dsrFlags([entry('v6', 'TCP', 'dsr', { family: 'IPv6', clusterIP: 'fd00:10:96::10', loadBalancerIPs: ['fd00:10:250::10'] })], 'dsr');
    expect(Object.values(v6).some(([, dsr]) => dsr)).toBe(false);
  });
});
