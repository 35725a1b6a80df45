import type { EndpointSliceObject, ServiceObject } from '../../src/model/k8s.js';
import {
  ClusterChangeTracker,
  ObjectChangeTracker,
  clusterObjects,
  deepEqual,
} from '../../src/sync/tracker.js';
import { serviceObject } from '../helpers/objects.js';

function service(name: string, port = 80, namespace = 'default'): ServiceObject {
  return serviceObject({ namespace, name, clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', protocol: 'TCP', port, targetPort: 8080, nodePort: 0 }] });
}

function slice(name: string, serviceName: string | null, ips: string[], namespace = 'default'): EndpointSliceObject {
  return {
    namespace,
    name,
    serviceName,
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: ips.map((ip) => ({
      addresses: [ip],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: 'node-a',
      zone: null,
      zoneHints: null,
    })),
  };
}

describe('deepEqual', () => {
  test('compares plain data structurally', () => {
    expect(deepEqual(service('a'), service('a'))).toBe(true);
    expect(deepEqual(service('a'), service('a', 81))).toBe(false);
    expect(deepEqual({ a: 1, b: undefined }, { a: 1 })).toBe(false);
    expect(deepEqual([1, [2, { x: null }]], [1, [2, { x: null }]])).toBe(true);
    expect(deepEqual([1, 2], [2, 1])).toBe(false);
    expect(deepEqual(new Map([['k', { v: 1 }]]), new Map([['k', { v: 1 }]]))).toBe(true);
    expect(deepEqual(new Map([['k', { v: 1 }]]), new Map([['k', { v: 2 }]]))).toBe(false);
    expect(deepEqual(null, {})).toBe(false);
    expect(deepEqual({}, [])).toBe(false);
  });
});

describe('ObjectChangeTracker', () => {
  test('records a real change and reports it pending', () => {
    const t = new ObjectChangeTracker<ServiceObject>();
    expect(t.update('default/a', null, service('a'))).toBe(true);
    expect(t.pending()).toEqual(new Set(['default/a']));
  });

  test('drops a no-op update (deep-equal previous and current)', () => {
    const t = new ObjectChangeTracker<ServiceObject>();
    expect(t.update('default/a', service('a'), service('a'))).toBe(false);
    expect(t.size).toBe(0);
    expect(t.update('default/gone', null, null)).toBe(false);
    expect(t.size).toBe(0);
  });

  test('add then delete cancels out', () => {
    const t = new ObjectChangeTracker<ServiceObject>();
    t.update('default/a', null, service('a'));
    expect(t.update('default/a', service('a'), null)).toBe(false);
    expect(t.pending()).toEqual(new Set());
  });

  test('update then revert cancels out, but other keys stay pending', () => {
    const t = new ObjectChangeTracker<ServiceObject>();
    t.update('default/b', null, service('b'));
    t.update('default/a', service('a'), service('a', 81));
    expect(t.update('default/a', service('a', 81), service('a'))).toBe(true);
    expect(t.pending()).toEqual(new Set(['default/b']));
  });

  test('keeps the original previous across several updates; take() consumes', () => {
    const t = new ObjectChangeTracker<ServiceObject>();
    t.update('default/a', service('a', 80), service('a', 81));
    t.update('default/a', service('a', 81), service('a', 82));
    const taken = t.take();
    expect(taken.get('default/a')).toEqual({ previous: service('a', 80), current: service('a', 82) });
    expect(t.size).toBe(0);
    expect(t.take().size).toBe(0);
  });
});

describe('ClusterChangeTracker', () => {
  test('snapshot diff: first snapshot adds everything, identical snapshot changes nothing', () => {
    const t = new ClusterChangeTracker();
    const snap = clusterObjects([service('a'), service('b')], [slice('a-1', 'a', ['10.0.0.1'])]);
    const first = t.applySnapshot(snap);
    expect(first.changed).toBe(true);
    expect(first.affectedServices).toEqual(new Set(['default/a', 'default/b']));
    const changes = t.take();
    expect([...changes.services.keys()].sort()).toEqual(['default/a', 'default/b']);
    expect(changes.endpointSlices.get('default/a-1')?.previous).toBeNull();

    const again = t.applySnapshot(
      clusterObjects([service('a'), service('b')], [slice('a-1', 'a', ['10.0.0.1'])]),
    );
    expect(again).toEqual({ changed: false, affectedServices: new Set() });
    expect(t.hasPending()).toBe(false);
  });

  test('snapshot diff: a slice change affects its service, a deletion is recorded', () => {
    const t = new ClusterChangeTracker();
    t.applySnapshot(
      clusterObjects([service('a'), service('b')], [slice('a-1', 'a', ['10.0.0.1']), slice('b-1', 'b', ['10.0.0.9'])]),
    );
    t.take();
    const d = t.applySnapshot(
      clusterObjects([service('a')], [slice('a-1', 'a', ['10.0.0.1', '10.0.0.2']), slice('b-1', 'b', ['10.0.0.9'])]),
    );
    expect(d.changed).toBe(true);
    expect(d.affectedServices).toEqual(new Set(['default/a', 'default/b']));
    const changes = t.take();
    expect(changes.services.get('default/b')).toEqual({ previous: service('b'), current: null });
    expect(changes.endpointSlices.get('default/a-1')?.current?.endpoints).toHaveLength(2);
    expect(changes.endpointSlices.has('default/b-1')).toBe(false);
    expect(t.current().services.has('default/b')).toBe(false);
  });

  test('a slice moving between services affects both; a slice without service affects none', () => {
    const t = new ClusterChangeTracker();
    t.setEndpointSlice('default/s', slice('s', 'a', ['10.0.0.1']));
    t.take();
    expect(t.setEndpointSlice('default/s', slice('s', 'b', ['10.0.0.1'])).affectedServices).toEqual(
      new Set(['default/a', 'default/b']),
    );
    const orphan = t.setEndpointSlice('default/o', slice('o', null, ['10.0.0.3']));
    expect(orphan.changed).toBe(true);
    expect(orphan.affectedServices).toEqual(new Set());
    expect(t.take().affectedServices).toEqual(new Set(['default/a', 'default/b']));
  });

  test('changes that cancel out before take() leave nothing pending', () => {
    const t = new ClusterChangeTracker();
    t.applySnapshot(clusterObjects([service('a')], []));
    t.take();
    t.applySnapshot(clusterObjects([service('a', 81)], []));
    expect(t.hasPending()).toBe(true);
    const back = t.applySnapshot(clusterObjects([service('a')], []));
    expect(back.changed).toBe(true); // it differed from the last snapshot...
    expect(t.hasPending()).toBe(false); // ...but not from what the last sync saw
  });

  test('current() is a copy the caller may keep', () => {
    const t = new ClusterChangeTracker();
    t.setService('default/a', service('a'));
    const snap = t.current();
    t.setService('default/a', null);
    expect(snap.services.has('default/a')).toBe(true);
    expect(t.current().services.size).toBe(0);
  });
});
