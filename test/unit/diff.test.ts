import { buildDesiredState } from '../../src/model/build.js';
import { diffDesiredState, plainEqual } from '../../src/model/diff.js';
import type { ClusterObjects, ServiceObject } from '../../src/model/k8s.js';
import type { DesiredState, NodeInfo } from '../../src/model/types.js';
import { serviceObject } from '../helpers/objects.js';

const node: NodeInfo = { name: 'node', zone: null, ips: [] };

/** Each name gets its own cluster IP: two Services never share a frontend. */
function service(name: string, port = 80): ServiceObject {
  const octet = [...name].reduce((sum, ch) => sum + ch.charCodeAt(0), 0) % 250;
  return serviceObject({ name, clusterIPs: [`10.0.0.${octet + 1}`], ports: [{ name: 'http', protocol: 'TCP', port, targetPort: port, nodePort: 0 }] });
}

function state(services: ServiceObject[], endpointIps: Record<string, string[]> = {}): DesiredState {
  const objects: ClusterObjects = { services: new Map(), endpointSlices: new Map() };
  for (const s of services) objects.services.set(`default/${s.name}`, s);
  for (const [svc, ips] of Object.entries(endpointIps)) {
    objects.endpointSlices.set(`default/${svc}-x`, {
      namespace: 'default',
      name: `${svc}-x`,
      serviceName: svc,
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: 80 }],
      endpoints: ips.map((ip) => ({
        addresses: [ip],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: null,
        zone: null,
        zoneHints: null,
      })),
    });
  }
  return buildDesiredState(objects, node, () => undefined);
}

describe('diffDesiredState', () => {
  it('reports added, removed and changed keys, sorted', () => {
    const prev = state([service('a'), service('b'), service('c')], { b: ['10.244.0.1'] });
    const next = state([service('d'), service('b'), service('c', 8080), service('a2')], { b: ['10.244.0.1', '10.244.0.2'] });
    expect(diffDesiredState(prev, next)).toEqual({
      added: ['default/a2:http', 'default/d:http'],
      removed: ['default/a:http'],
      changed: ['default/b:http', 'default/c:http'],
    });
  });

  it('drops no-ops: an identical rebuild from fresh objects is no change', () => {
    const build = (): DesiredState => state([service('a'), service('b')], { a: ['10.244.0.2', '10.244.0.1'] });
    expect(diffDesiredState(build(), build())).toEqual({ added: [], removed: [], changed: [] });
  });

  it('sees an endpoint condition change', () => {
    const prev = state([service('a')], { a: ['10.244.0.1'] });
    const next = structuredClone(prev);
    const ep = next.services[0]?.endpoints[0];
    if (!ep) throw new Error('fixture has no endpoint');
    ep.terminating = true;
    expect(diffDesiredState(prev, next).changed).toEqual(['default/a:http']);
  });
});

describe('plainEqual', () => {
  it('compares plain data structurally', () => {
    expect(plainEqual({ a: 1, b: [1, { c: null }] }, { b: [1, { c: null }], a: 1 })).toBe(true);
    expect(plainEqual({ a: 1 }, { a: 1, b: undefined })).toBe(true);
    expect(plainEqual({ a: 1 }, { a: 2 })).toBe(false);
    expect(plainEqual({ a: 1 }, { b: 1 })).toBe(false);
    expect(plainEqual([1, 2], [2, 1])).toBe(false);
    expect(plainEqual([1], { 0: 1 })).toBe(false);
    expect(plainEqual(null, {})).toBe(false);
    expect(plainEqual(new Map([['a', { x: 1 }]]), new Map([['a', { x: 1 }]]))).toBe(true);
    expect(plainEqual(new Map([['a', 1]]), new Map([['a', 2]]))).toBe(false);
    expect(plainEqual(new Set([1]), [1])).toBe(false);
  });
});
