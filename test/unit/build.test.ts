import { fileURLToPath } from 'node:url';
import { DEFAULT_BUILD_OPTIONS, buildDesiredState, servedFamilies } from '../../src/model/build.js';
import type { ClusterObjects, EndpointSliceObject, ServiceObject, SliceEndpoint } from '../../src/model/k8s.js';
import type { NodeInfo } from '../../src/model/types.js';
import { loadManifestDir } from '../../src/sources/manifest.js';
import { serviceObject } from '../helpers/objects.js';

const node: NodeInfo = { name: 'node', zone: null, ips: ['192.168.0.10'] };

function service(overrides: Partial<ServiceObject> = {}): ServiceObject {
  return serviceObject(overrides);
}

function endpoint(ip: string, overrides: Partial<SliceEndpoint> = {}): SliceEndpoint {
  return {
    addresses: [ip],
    conditions: { ready: true, serving: true, terminating: false },
    nodeName: 'other',
    zone: null,
    zoneHints: null,
    ...overrides,
  };
}

function slice(name: string, endpoints: SliceEndpoint[], overrides: Partial<EndpointSliceObject> = {}): EndpointSliceObject {
  return {
    namespace: 'default',
    name,
    serviceName: 'web',
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints,
    ...overrides,
  };
}

function objects(services: ServiceObject[], slices: EndpointSliceObject[] = []): ClusterObjects {
  return {
    services: new Map(services.map((s) => [`${s.namespace}/${s.name}`, s])),
    endpointSlices: new Map(slices.map((s) => [`${s.namespace}/${s.name}`, s])),
  };
}

const noWarnings = (m: string): void => {
  throw new Error(`unexpected warning: ${m}`);
};

describe('buildDesiredState', () => {
  it('builds the lab example from the fixture', async () => {
    const dir = fileURLToPath(new URL('../fixtures/manifests', import.meta.url));
    const load = await loadManifestDir(dir);
    expect(load.problems.map(String)).toEqual([]);
    const state = buildDesiredState(load.objects, node, noWarnings);
    expect(state.services.map((s) => s.key)).toEqual(['default/echo-udp', 'default/nginx-service']);
    const [udp, nginx] = state.services;
    expect(nginx?.service).toMatchObject({ clusterIP: '10.0.0.213', port: 80, targetPort: 80, id: { protocol: 'TCP', port: '' } });
    expect(nginx?.endpoints.map((e) => `${e.ip}:${e.port}`)).toEqual(['10.244.0.11:80', '10.244.0.12:80', '10.244.0.13:80']);
    expect(nginx?.endpoints.every((e) => e.isLocal && e.ready)).toBe(true);
    expect(nginx?.selection.clusterEndpoints).toHaveLength(3);
    expect(udp?.service).toMatchObject({ clusterIP: '10.0.0.53', port: 53, targetPort: 5353, id: { protocol: 'UDP' } });
    expect(udp?.endpoints.map((e) => `${e.ip}:${e.port}`)).toEqual(['10.244.0.11:5353', '10.244.0.12:5353', '10.244.0.13:5353']);
  });

  it('makes one entry per port with the service fields', () => {
    const svc = service({
      type: 'LoadBalancer',
      ports: [
        { name: 'http', protocol: 'TCP', port: 80, targetPort: 'web', nodePort: 30080 },
        { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353, nodePort: 30053 },
      ],
      externalIPs: ['192.0.2.1'],
      loadBalancerIPs: ['198.51.100.1'],
      loadBalancerSourceRanges: ['203.0.113.0/24'],
      affinityTimeoutSeconds: 600,
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 31000,
    });
    const state = buildDesiredState(objects([svc]), node, noWarnings);
    expect(state.services.map((s) => s.key)).toEqual(['default/web:dns', 'default/web:http']);
    expect(state.services[1]?.service).toEqual({
      id: { namespace: 'default', name: 'web', port: 'http', protocol: 'TCP' },
      family: 'IPv4',
      type: 'LoadBalancer',
      clusterIP: '10.0.0.10',
      port: 80,
      targetPort: 'web',
      nodePort: 30080,
      externalIPs: ['192.0.2.1'],
      loadBalancerIPs: ['198.51.100.1'],
      loadBalancerSourceRanges: ['203.0.113.0/24'],
      affinityTimeoutSeconds: 600,
      externalTrafficPolicy: 'Local',
      internalTrafficPolicy: 'Cluster',
      healthCheckNodePort: 31000,
      scheduler: null,
    });
    expect(state.node).toEqual(node);
  });

  it('applies externalTrafficPolicy Local only where external traffic exists (kube-proxy ExternalPolicyLocal)', () => {
    const state = buildDesiredState(objects([service({ externalTrafficPolicy: 'Local', healthCheckNodePort: 31000 })]), node, noWarnings);
    expect(state.services[0]?.service.externalTrafficPolicy).toBe('Cluster');
    expect(state.services[0]?.service.healthCheckNodePort).toBe(0);
  });

  it('skips headless, ExternalName and label-excluded services', () => {
    const state = buildDesiredState(
      objects([
        service({ name: 'headless', clusterIPs: [] }),
        service({ name: 'external', type: 'ExternalName', clusterIPs: [] }),
        service({ name: 'other-proxy', labels: { 'service.kubernetes.io/service-proxy-name': 'foo' } }),
        service({ name: 'headless-label', labels: { 'service.kubernetes.io/headless': '' } }),
        service({ name: 'kept' }),
      ]),
      node,
      noWarnings,
    );
    expect(state.services.map((s) => s.key)).toEqual(['default/kept:http']);
  });

  it('matches slice ports by name and protocol, and only slices of the entry family labelled for the service', () => {
    const state = buildDesiredState(
      objects(
        [service()],
        [
          slice('web-a', [endpoint('10.244.0.1')]),
          slice('web-udp', [endpoint('10.244.0.2')], { ports: [{ name: 'http', protocol: 'UDP', port: 8080 }] }),
          slice('web-other-name', [endpoint('10.244.0.3')], { ports: [{ name: 'metrics', protocol: 'TCP', port: 8080 }] }),
          slice('web-v6', [endpoint('fd00::4')], { addressType: 'IPv6' }),
          slice('api-a', [endpoint('10.244.0.5')], { serviceName: 'api' }),
          slice('unlabelled', [endpoint('10.244.0.6')], { serviceName: null }),
          slice('other-ns', [endpoint('10.244.0.7')], { namespace: 'shop' }),
        ],
      ),
      node,
      noWarnings,
    );
    expect(state.services[0]?.endpoints.map((e) => e.ip)).toEqual(['10.244.0.1']);
  });

  it('uses the slice port number, conditions defaults and the first address', () => {
    const state = buildDesiredState(
      objects(
        [service()],
        [
          slice('web-a', [
            endpoint('10.244.0.1', {
              addresses: ['10.244.0.1', '10.244.0.99'],
              conditions: { ready: null, serving: null, terminating: null },
              zone: 'zone-a',
              zoneHints: ['zone-a'],
            }),
            endpoint('10.244.0.2', { conditions: { ready: false, serving: null, terminating: null } }),
          ]),
        ],
      ),
      node,
      noWarnings,
    );
    expect(state.services[0]?.endpoints).toEqual([
      { ip: '10.244.0.1', port: 8080, ready: true, serving: true, terminating: false, nodeName: 'other', zone: 'zone-a', zoneHints: ['zone-a'], isLocal: false },
      { ip: '10.244.0.2', port: 8080, ready: false, serving: false, terminating: false, nodeName: 'other', zone: null, zoneHints: null, isLocal: false },
    ]);
  });

  it('sorts endpoints by IP numerically, then port', () => {
    const state = buildDesiredState(
      objects(
        [service()],
        [
          slice('web-a', [endpoint('10.244.0.10'), endpoint('10.244.0.9')]),
          slice('web-b', [endpoint('10.244.0.9'), endpoint('9.0.0.1')], { ports: [{ name: 'http', protocol: 'TCP', port: 80 }] }),
        ],
      ),
      node,
      noWarnings,
    );
    expect(state.services[0]?.endpoints.map((e) => `${e.ip}:${e.port}`)).toEqual([
      '9.0.0.1:80',
      '10.244.0.9:80',
      '10.244.0.9:8080',
      '10.244.0.10:8080',
    ]);
  });

  it('lets the non-terminating copy win when an address is in two slices', () => {
    const terminating = endpoint('10.244.0.1', { conditions: { ready: false, serving: true, terminating: true } });
    const live = endpoint('10.244.0.1');
    for (const [first, second] of [[terminating, live], [live, terminating]] as const) {
      const state = buildDesiredState(objects([service()], [slice('web-a', [first]), slice('web-b', [second])]), node, noWarnings);
      expect(state.services[0]?.endpoints).toHaveLength(1);
      expect(state.services[0]?.endpoints[0]).toMatchObject({ ready: true, terminating: false });
    }
  });

  it('prefers the local copy between two equally live duplicates', () => {
    const state = buildDesiredState(
      objects([service()], [slice('web-a', [endpoint('10.244.0.1')]), slice('web-b', [endpoint('10.244.0.1', { nodeName: 'node' })])]),
      node,
      noWarnings,
    );
    expect(state.services[0]?.endpoints[0]?.isLocal).toBe(true);
  });

  it('marks endpoints on this node as local and selects by traffic policy', () => {
    const state = buildDesiredState(
      objects([service({ internalTrafficPolicy: 'Local' })], [slice('web-a', [endpoint('10.244.0.1', { nodeName: 'node' }), endpoint('10.244.0.2')])]),
      node,
      noWarnings,
    );
    const entry = state.services[0];
    expect(entry?.endpoints.map((e) => e.isLocal)).toEqual([true, false]);
    expect(entry?.selection.localEndpoints.map((e) => e.ip)).toEqual(['10.244.0.1']);
    expect(entry?.selection.clusterEndpoints).toEqual([]);
  });

  it('reads the scheduler annotation, and warns and falls back on an invalid one', () => {
    const warnings: string[] = [];
    const state = buildDesiredState(
      objects([
        service({ name: 'a', clusterIPs: ['10.0.0.1'], annotations: { 'vipr.io/scheduler': 'maglev' } }),
        service({ name: 'b', clusterIPs: ['10.0.0.2'], annotations: { 'vipr.io/scheduler': 'wrr' } }),
      ]),
      node,
      (m) => warnings.push(m),
    );
    expect(state.services.map((s) => s.service.scheduler)).toEqual(['maglev', null]);
    expect(warnings).toEqual([
      'Service default/b: annotation vipr.io/scheduler "wrr" is not a scheduler; use one of random, rr, sh, maglev, lc (using the node default meanwhile)',
    ]);
  });

  it('reads the lb-mode annotation, and warns and falls back to the node default on an invalid one', () => {
    const warnings: string[] = [];
    const state = buildDesiredState(
      objects([
        service({ name: 'a', clusterIPs: ['10.0.0.1'], annotations: { 'vipr.io/lb-mode': 'hybrid' } }),
        service({ name: 'b', clusterIPs: ['10.0.0.2'], annotations: { 'vipr.io/lb-mode': 'DSR' } }),
        service({ name: 'c', clusterIPs: ['10.0.0.3'] }),
      ]),
      node,
      (m) => warnings.push(m),
    );
    expect(state.services.map((s) => s.service.lbMode ?? null)).toEqual(['hybrid', null, null]);
    expect(warnings).toEqual([
      'Service default/b: annotation vipr.io/lb-mode "DSR" is not an lb mode; use one of snat, dsr, hybrid (using the node\'s --lb-mode meanwhile)',
    ]);
  });

  it('says that a dsr or hybrid annotation leaves a dual-stack Service\'s IPv6 frontends on SNAT', () => {
    const warnings: string[] = [];
    const dual: Partial<ServiceObject> = { type: 'NodePort', ipFamilies: ['IPv4', 'IPv6'], ipFamilyPolicy: 'PreferDualStack' };
    buildDesiredState(
      objects([
        service({ name: 'a', clusterIPs: ['10.0.0.1', 'fd00:10:96::1'], annotations: { 'vipr.io/lb-mode': 'dsr' }, ...dual }),
        service({ name: 'b', clusterIPs: ['10.0.0.2', 'fd00:10:96::2'], annotations: { 'vipr.io/lb-mode': 'snat' }, ...dual }),
        service({ name: 'c', clusterIPs: ['10.0.0.3'], annotations: { 'vipr.io/lb-mode': 'dsr' }, type: 'NodePort' }),
      ]),
      { ...node, ips: ['192.168.0.10', 'fd00:192:168::10'] },
      (m) => warnings.push(m),
    );
    expect(warnings).toEqual([
      'Service default/a: annotation vipr.io/lb-mode "dsr" applies to its IPv4 frontends only; the IPv6 ones use SNAT (vipr carries the frontend in an IPv4 option)',
    ]);
  });

  it('sorts entries by key regardless of input order', () => {
    const state = buildDesiredState(
      objects([
        service({ namespace: 'z', name: 'a', clusterIPs: ['10.0.0.1'] }),
        service({ namespace: 'a', name: 'z', clusterIPs: ['10.0.0.2'] }),
        service({ namespace: 'a', name: 'b', clusterIPs: ['10.0.0.3'] }),
      ]),
      node,
      noWarnings,
    );
    expect(state.services.map((s) => s.key)).toEqual(['a/b:http', 'a/z:http', 'z/a:http']);
  });
});

describe('dual-stack and IPv6 Services', () => {
  const dualNode: NodeInfo = { name: 'node', zone: null, ips: ['192.168.0.10', 'fd00:192:168:60::10'] };
  const dual = service({
    name: 'web',
    type: 'LoadBalancer',
    clusterIPs: ['10.0.0.213', 'fd00:10:96::213'],
    ipFamilies: ['IPv4', 'IPv6'],
    ipFamilyPolicy: 'RequireDualStack',
    ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }],
    externalIPs: ['192.0.2.10', '2001:db8::10'],
    loadBalancerIPs: ['198.51.100.7', '2001:db8::7'],
    loadBalancerSourceRanges: ['203.0.113.0/24', '2001:db8:1::/48'],
  });
  const v4Slice = slice('web-v4', [endpoint('10.244.1.2'), endpoint('10.244.1.1', { nodeName: 'node' })]);
  const v6Slice = slice('web-v6', [endpoint('fd00:10:244:1::2'), endpoint('fd00:10:244:1::1', { nodeName: 'node' })], { addressType: 'IPv6' });
  const fqdnSlice = slice('web-fqdn', [endpoint('web.example')], { addressType: 'FQDN' });

  it('gives a dual-stack Service one entry per family, each with only its own addresses and endpoints', () => {
    const state = buildDesiredState(objects([dual], [v6Slice, v4Slice, fqdnSlice]), dualNode, noWarnings);
    expect(state.services.map((s) => s.key)).toEqual(['default/web:http', 'default/web:http IPv6']);
    const [v4, v6] = state.services;
    expect(v4?.service).toMatchObject({
      family: 'IPv4',
      clusterIP: '10.0.0.213',
      nodePort: 30080,
      externalIPs: ['192.0.2.10'],
      loadBalancerIPs: ['198.51.100.7'],
      loadBalancerSourceRanges: ['203.0.113.0/24'],
    });
    expect(v6?.service).toMatchObject({
      family: 'IPv6',
      clusterIP: 'fd00:10:96::213',
      nodePort: 30080,
      externalIPs: ['2001:db8::10'],
      loadBalancerIPs: ['2001:db8::7'],
      loadBalancerSourceRanges: ['2001:db8:1::/48'],
    });
    // Both entries carry the Service's id: renderers name kube-proxy's chains from it.
    expect(v6?.service.id).toEqual(v4?.service.id);
    expect(v4?.endpoints.map((e) => e.ip)).toEqual(['10.244.1.1', '10.244.1.2']);
    expect(v6?.endpoints.map((e) => e.ip)).toEqual(['fd00:10:244:1::1', 'fd00:10:244:1::2']);
    expect(v6?.endpoints.map((e) => e.isLocal)).toEqual([true, false]);
    expect(v6?.selection.clusterEndpoints.map((e) => e.ip)).toEqual(['fd00:10:244:1::1', 'fd00:10:244:1::2']);
  });

  it('builds an IPv6-only Service from its IPv6 slices, IPv6 first in spec order or not', () => {
    const v6only = service({ name: 'web', clusterIPs: ['fd00:10:96::53'], ipFamilies: ['IPv6'], externalIPs: ['2001:db8::53'] });
    const state = buildDesiredState(objects([v6only], [v4Slice, v6Slice]), dualNode, noWarnings);
    expect(state.services.map((s) => [s.key, s.service.family, s.service.clusterIP, s.service.externalIPs])).toEqual([
      ['default/web:http IPv6', 'IPv6', 'fd00:10:96::53', ['2001:db8::53']],
    ]);
    expect(state.services[0]?.endpoints.map((e) => `${e.ip} ${e.port}`)).toEqual(['fd00:10:244:1::1 8080', 'fd00:10:244:1::2 8080']);
    const v6first = service({ name: 'web', clusterIPs: ['fd00:10:96::213', '10.0.0.213'], ipFamilies: ['IPv6', 'IPv4'] });
    const both = buildDesiredState(objects([v6first], [v4Slice, v6Slice]), dualNode, noWarnings);
    expect(both.services.map((s) => [s.key, s.service.clusterIP])).toEqual([
      ['default/web:http', '10.0.0.213'],
      ['default/web:http IPv6', 'fd00:10:96::213'],
    ]);
  });

  it('skips the family a node does not serve with one line per family, not per Service', () => {
    const warnings: string[] = [];
    const v6only = service({ name: 'v6only', clusterIPs: ['fd00:10:96::53'], ipFamilies: ['IPv6'] });
    const ipv4Node = { ...DEFAULT_BUILD_OPTIONS, families: ['IPv4'] as const };
    const state = buildDesiredState(objects([dual, v6only], [v4Slice, v6Slice]), node, (m) => warnings.push(m), ipv4Node);
    expect(state.services.map((s) => [s.key, s.service.externalIPs, s.service.loadBalancerIPs, s.service.loadBalancerSourceRanges])).toEqual([
      ['default/web:http', ['192.0.2.10'], ['198.51.100.7'], ['203.0.113.0/24']],
    ]);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/^IPv6: this node has no IPv6 node IP \(give one with --node-ip\), so IPv6 Service addresses are not programmed/);
  });

  it('serves the families the node has an IP of (--node-ip), both when none is known', () => {
    expect(servedFamilies(['192.168.0.10'])).toEqual(['IPv4']);
    expect(servedFamilies(['fd00:192:168:60::10'])).toEqual(['IPv6']);
    expect(servedFamilies(['fd00:192:168:60::10', '192.168.0.10'])).toEqual(['IPv4', 'IPv6']);
    expect(servedFamilies([])).toEqual(['IPv4', 'IPv6']);
  });

  it('drops addresses of a family the Service has no cluster IP of (kube-proxy\'s proxier of that family never sees them)', () => {
    const v4only = service({ name: 'web', clusterIPs: ['10.0.0.10'], externalIPs: ['192.0.2.10', '2001:db8::10'], loadBalancerSourceRanges: ['2001:db8::/32'] });
    const state = buildDesiredState(objects([v4only], [v4Slice, v6Slice]), dualNode, noWarnings);
    expect(state.services.map((s) => [s.key, s.service.externalIPs, s.service.loadBalancerSourceRanges])).toEqual([['default/web:http', ['192.0.2.10'], []]]);
  });
});
