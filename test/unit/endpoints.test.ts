import {
  isExternallyAccessible,
  selectEndpoints,
  usesClusterEndpoints,
  usesLocalEndpoints,
  zoneHintsApply,
} from '../../src/model/endpoints.js';
import type { Endpoint, NodeInfo, ServicePort } from '../../src/model/types.js';
import { servicePortOf } from '../helpers/objects.js';

const node: NodeInfo = { name: 'node-a', zone: 'zone-a', ips: ['192.168.0.10'] };

function svc(overrides: Partial<ServicePort> = {}): ServicePort {
  return servicePortOf(overrides);
}

/** An endpoint 10.0.0.<n>:80; `local` puts it on node-a. */
function ep(n: number, opts: { ready?: boolean; serving?: boolean; terminating?: boolean; local?: boolean; hints?: string[] } = {}): Endpoint {
  const ready = opts.ready ?? true;
  return {
    ip: `10.244.0.${n}`,
    port: 80,
    ready,
    serving: opts.serving ?? ready,
    terminating: opts.terminating ?? false,
    nodeName: opts.local ? 'node-a' : 'node-b',
    zone: null,
    zoneHints: opts.hints ?? null,
    isLocal: opts.local ?? false,
  };
}

const ips = (eps: Endpoint[]): string[] => eps.map((e) => e.ip.split('.')[3] ?? '');

describe('traffic policy predicates (serviceport.go)', () => {
  it('is externally accessible through a NodePort, an external IP or a load-balancer IP', () => {
    expect(isExternallyAccessible(svc())).toBe(false);
    expect(isExternallyAccessible(svc({ nodePort: 30080 }))).toBe(true);
    expect(isExternallyAccessible(svc({ externalIPs: ['192.0.2.1'] }))).toBe(true);
    expect(isExternallyAccessible(svc({ loadBalancerIPs: ['198.51.100.1'] }))).toBe(true);
  });

  it('uses Cluster endpoints unless internal traffic is Local and nothing external reaches it', () => {
    expect(usesClusterEndpoints(svc())).toBe(true);
    expect(usesClusterEndpoints(svc({ internalTrafficPolicy: 'Local' }))).toBe(false);
    expect(usesClusterEndpoints(svc({ internalTrafficPolicy: 'Local', nodePort: 30080 }))).toBe(true);
    // ETP=Local still needs the Cluster set: pod traffic to the NodePort short-circuits to it.
    expect(usesClusterEndpoints(svc({ externalTrafficPolicy: 'Local', nodePort: 30080 }))).toBe(true);
  });

  it('uses Local endpoints for ITP=Local, or ETP=Local on an externally reachable service', () => {
    expect(usesLocalEndpoints(svc())).toBe(false);
    expect(usesLocalEndpoints(svc({ internalTrafficPolicy: 'Local' }))).toBe(true);
    expect(usesLocalEndpoints(svc({ externalTrafficPolicy: 'Local' }))).toBe(false);
    expect(usesLocalEndpoints(svc({ externalTrafficPolicy: 'Local', nodePort: 30080 }))).toBe(true);
  });
});

describe('selectEndpoints (topology.go CategorizeEndpoints)', () => {
  it('returns nothing for no endpoints', () => {
    expect(selectEndpoints([], svc(), node)).toEqual({
      clusterEndpoints: [],
      localEndpoints: [],
      allReachableEndpoints: [],
      hasAnyEndpoints: false,
    });
  });

  it('uses ready endpoints only when any is ready', () => {
    const eps = [ep(1), ep(2, { ready: false, serving: true, terminating: true }), ep(3, { ready: false, serving: false })];
    const sel = selectEndpoints(eps, svc(), node);
    expect(ips(sel.clusterEndpoints)).toEqual(['1']);
    expect(ips(sel.allReachableEndpoints)).toEqual(['1']);
    expect(sel.localEndpoints).toEqual([]);
    expect(sel.hasAnyEndpoints).toBe(true);
  });

  it('falls back to serving+terminating endpoints when none is ready', () => {
    const eps = [
      ep(1, { ready: false, serving: true, terminating: true }),
      ep(2, { ready: false, serving: false, terminating: true }),
      ep(3, { ready: false, serving: false, terminating: false }),
    ];
    const sel = selectEndpoints(eps, svc(), node);
    expect(ips(sel.clusterEndpoints)).toEqual(['1']);
    expect(sel.hasAnyEndpoints).toBe(true);
  });

  it('does not fall back to serving endpoints that are not terminating', () => {
    const sel = selectEndpoints([ep(1, { ready: false, serving: true, terminating: false })], svc(), node);
    expect(sel.clusterEndpoints).toEqual([]);
    expect(sel.hasAnyEndpoints).toBe(false);
  });

  it('has no endpoints when nothing is ready or serving-terminating', () => {
    const sel = selectEndpoints([ep(1, { ready: false, serving: false, terminating: true })], svc(), node);
    expect(sel.clusterEndpoints).toEqual([]);
    expect(sel.allReachableEndpoints).toEqual([]);
    expect(sel.hasAnyEndpoints).toBe(false);
  });

  describe('internalTrafficPolicy Local', () => {
    const local = svc({ internalTrafficPolicy: 'Local' });

    it('uses only this node\'s ready endpoints and no Cluster set', () => {
      const sel = selectEndpoints([ep(1, { local: true }), ep(2), ep(3, { local: true, ready: false })], local, node);
      expect(sel.clusterEndpoints).toEqual([]);
      expect(ips(sel.localEndpoints)).toEqual(['1']);
      expect(ips(sel.allReachableEndpoints)).toEqual(['1']);
      expect(sel.hasAnyEndpoints).toBe(true);
    });

    it('falls back to local serving+terminating endpoints independently of remote ready ones', () => {
      const sel = selectEndpoints([ep(1, { local: true, ready: false, serving: true, terminating: true }), ep(2)], local, node);
      expect(ips(sel.localEndpoints)).toEqual(['1']);
    });

    it('has no local endpoints but still "has endpoints" when they are all remote', () => {
      const sel = selectEndpoints([ep(2), ep(3)], local, node);
      expect(sel.localEndpoints).toEqual([]);
      expect(sel.allReachableEndpoints).toEqual([]);
      // kube-proxy: the service has endpoints somewhere, so traffic is dropped, not rejected.
      expect(sel.hasAnyEndpoints).toBe(true);
    });

    it('counts a remote serving+terminating endpoint as an endpoint anywhere', () => {
      const sel = selectEndpoints([ep(2, { ready: false, serving: true, terminating: true })], local, node);
      expect(sel.hasAnyEndpoints).toBe(true);
      expect(sel.localEndpoints).toEqual([]);
    });
  });

  describe('externalTrafficPolicy Local', () => {
    const etpLocal = svc({ type: 'NodePort', nodePort: 30080, externalTrafficPolicy: 'Local' });

    it('computes both sets; all reachable is the Cluster set when the Local one is ready-only', () => {
      const sel = selectEndpoints([ep(1, { local: true }), ep(2)], etpLocal, node);
      expect(ips(sel.clusterEndpoints)).toEqual(['1', '2']);
      expect(ips(sel.localEndpoints)).toEqual(['1']);
      expect(ips(sel.allReachableEndpoints)).toEqual(['1', '2']);
    });

    it('merges a terminating Local set into all reachable endpoints', () => {
      const eps = [ep(1, { local: true, ready: false, serving: true, terminating: true }), ep(2)];
      const sel = selectEndpoints(eps, etpLocal, node);
      expect(ips(sel.clusterEndpoints)).toEqual(['2']);
      expect(ips(sel.localEndpoints)).toEqual(['1']);
      expect(ips(sel.allReachableEndpoints)).toEqual(['1', '2']);
    });

    it('is ignored on a service nothing external reaches', () => {
      const sel = selectEndpoints([ep(1, { local: true }), ep(2)], svc({ externalTrafficPolicy: 'Local' }), node);
      expect(sel.localEndpoints).toEqual([]);
      expect(ips(sel.clusterEndpoints)).toEqual(['1', '2']);
    });
  });

  describe('topology hints', () => {
    it('prefers endpoints hinted for this node\'s zone when every ready endpoint has hints', () => {
      const eps = [ep(1, { hints: ['zone-a'] }), ep(2, { hints: ['zone-b'] }), ep(3, { hints: ['zone-a', 'zone-b'] })];
      expect(zoneHintsApply(eps, 'zone-a')).toBe(true);
      expect(ips(selectEndpoints(eps, svc(), node).clusterEndpoints)).toEqual(['1', '3']);
    });

    it('ignores hints unless every ready endpoint carries them', () => {
      const eps = [ep(1, { hints: ['zone-a'] }), ep(2)];
      expect(zoneHintsApply(eps, 'zone-a')).toBe(false);
      expect(ips(selectEndpoints(eps, svc(), node).clusterEndpoints)).toEqual(['1', '2']);
    });

    it('only looks at ready endpoints when deciding', () => {
      const eps = [ep(1, { hints: ['zone-a'] }), ep(2, { hints: ['zone-b'] }), ep(3, { ready: false })];
      expect(zoneHintsApply(eps, 'zone-a')).toBe(true);
      expect(ips(selectEndpoints(eps, svc(), node).clusterEndpoints)).toEqual(['1']);
    });

    it('ignores hints when none is for this zone', () => {
      const eps = [ep(1, { hints: ['zone-b'] }), ep(2, { hints: ['zone-c'] })];
      expect(zoneHintsApply(eps, 'zone-a')).toBe(false);
      expect(ips(selectEndpoints(eps, svc(), node).clusterEndpoints)).toEqual(['1', '2']);
    });

    it('ignores hints when the node has no zone', () => {
      const eps = [ep(1, { hints: ['zone-a'] })];
      expect(ips(selectEndpoints(eps, svc(), { ...node, zone: null }).clusterEndpoints)).toEqual(['1']);
      expect(zoneHintsApply(eps, null)).toBe(false);
    });

    it('merges local endpoints filtered out by topology into all reachable endpoints', () => {
      const eps = [ep(1, { hints: ['zone-a'] }), ep(2, { local: true, hints: ['zone-b'] })];
      const sel = selectEndpoints(eps, svc({ type: 'NodePort', nodePort: 30080, externalTrafficPolicy: 'Local' }), node);
      expect(ips(sel.clusterEndpoints)).toEqual(['1']);
      expect(ips(sel.localEndpoints)).toEqual(['2']);
      expect(ips(sel.allReachableEndpoints)).toEqual(['1', '2']);
    });

    it('does not apply to the Local set', () => {
      const eps = [ep(1, { local: true, hints: ['zone-b'] }), ep(2, { hints: ['zone-a'] })];
      const sel = selectEndpoints(eps, svc({ internalTrafficPolicy: 'Local' }), node);
      expect(ips(sel.localEndpoints)).toEqual(['1']);
    });
  });
});
