import { ConfigError } from '../../src/errors.js';
import {
  parseEndpoints,
  parseEndpointSlice,
  parseObject,
  parseService,
} from '../../src/sources/parse.js';

/** A minimal valid Service with `spec` fields overridden. */
function service(spec: Record<string, unknown> = {}, metadata: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'default', ...metadata },
    spec: { clusterIP: '10.0.0.10', ports: [{ port: 80 }], ...spec },
  };
}

function slice(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-abc', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: [{ addresses: ['10.244.0.1'], conditions: { ready: true } }],
    ...extra,
  };
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('parseService', () => {
  it('applies kube-proxy defaults', () => {
    const svc = parseService(service());
    expect(svc).toEqual({
      namespace: 'default',
      name: 'web',
      labels: {},
      annotations: {},
      creationTimestamp: null,
      type: 'ClusterIP',
      clusterIPs: ['10.0.0.10'],
      ipFamilies: ['IPv4'],
      ipFamilyPolicy: null,
      ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 80, nodePort: 0 }],
      externalIPs: [],
      loadBalancerIPs: [],
      loadBalancerSourceRanges: [],
      affinityTimeoutSeconds: 0,
      externalTrafficPolicy: 'Cluster',
      internalTrafficPolicy: 'Cluster',
      healthCheckNodePort: 0,
    });
  });

  it('defaults the namespace to "default"', () => {
    expect(parseService(service({}, { namespace: undefined })).namespace).toBe('default');
  });

  it('reads a LoadBalancer service completely', () => {
    const svc = parseService({
      ...service(
        {
          type: 'LoadBalancer',
          clusterIPs: ['10.0.0.10', 'fd00::10'],
          ports: [
            { name: 'http', port: 80, targetPort: 'web', nodePort: 30080 },
            { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353, nodePort: 30053 },
          ],
          externalIPs: ['192.0.2.10', '2001:db8::1'],
          loadBalancerSourceRanges: ['203.0.113.0/24', ' 198.51.100.0/25 ', '2001:db8::/32'],
          sessionAffinity: 'ClientIP',
          externalTrafficPolicy: 'Local',
          internalTrafficPolicy: 'Local',
          healthCheckNodePort: 31000,
        },
        { labels: { app: 'web' }, annotations: { 'vipr.io/scheduler': 'maglev' } },
      ),
      status: {
        loadBalancer: {
          ingress: [{ ip: '198.51.100.7' }, { ip: '198.51.100.8', ipMode: 'Proxy' }, { hostname: 'lb.example' }, { ip: '2001:db8::7' }],
        },
      },
    });
    expect(svc.type).toBe('LoadBalancer');
    expect(svc.clusterIPs).toEqual(['10.0.0.10', 'fd00::10']);
    expect(svc.ipFamilies).toEqual(['IPv4', 'IPv6']);
    expect(svc.ports).toEqual([
      { name: 'http', protocol: 'TCP', port: 80, targetPort: 'web', nodePort: 30080 },
      { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353, nodePort: 30053 },
    ]);
    // Both families, each family's entry takes its own (src/model/build.ts).
    expect(svc.externalIPs).toEqual(['192.0.2.10', '2001:db8::1']);
    expect(svc.loadBalancerIPs).toEqual(['198.51.100.7', '2001:db8::7']);
    expect(svc.loadBalancerSourceRanges).toEqual(['203.0.113.0/24', '198.51.100.0/25', '2001:db8::/32']);
    expect(svc.affinityTimeoutSeconds).toBe(10800);
    expect(svc.externalTrafficPolicy).toBe('Local');
    expect(svc.internalTrafficPolicy).toBe('Local');
    expect(svc.healthCheckNodePort).toBe(31000);
    expect(svc.labels).toEqual({ app: 'web' });
    expect(svc.annotations['vipr.io/scheduler']).toBe('maglev');
  });

  it('reads an explicit affinity timeout', () => {
    const svc = parseService(service({ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }));
    expect(svc.affinityTimeoutSeconds).toBe(60);
  });

  it('treats clusterIP None as headless and an unset cluster IP as none', () => {
    expect(parseService(service({ clusterIP: 'None' })).clusterIPs).toEqual([]);
    expect(parseService(service({ clusterIP: 'None', clusterIPs: ['None'], ipFamilies: ['IPv6'] })).ipFamilies).toEqual(['IPv6']);
    expect(parseService(service({ clusterIP: undefined })).clusterIPs).toEqual([]);
  });

  it('reads a dual-stack Service in spec order, IPv6 first', () => {
    const svc = parseService(
      service({ clusterIP: 'fd00:10:96::213', clusterIPs: ['fd00:10:96::213', '10.0.0.213'], ipFamilies: ['IPv6', 'IPv4'], ipFamilyPolicy: 'RequireDualStack' }),
    );
    expect(svc.clusterIPs).toEqual(['fd00:10:96::213', '10.0.0.213']);
    expect(svc.ipFamilies).toEqual(['IPv6', 'IPv4']);
    expect(svc.ipFamilyPolicy).toBe('RequireDualStack');
  });

  it('reads an IPv6-only Service', () => {
    const svc = parseService(service({ clusterIP: 'fd00:10:96::53', clusterIPs: ['fd00:10:96::53'], ipFamilies: ['IPv6'], ipFamilyPolicy: 'SingleStack' }));
    expect(svc.clusterIPs).toEqual(['fd00:10:96::53']);
    expect(svc.ipFamilies).toEqual(['IPv6']);
    expect(svc.ipFamilyPolicy).toBe('SingleStack');
    // Without ipFamilies (a manifest), the families are the cluster IPs'.
    expect(parseService(service({ clusterIP: 'fd00:10:96::53' })).ipFamilies).toEqual(['IPv6']);
  });

  it('writes every IPv6 address and CIDR canonically (RFC 5952), so two spellings are one frontend', () => {
    const svc = parseService({
      ...service({
        type: 'LoadBalancer',
        clusterIP: 'FD00:0010:0096:0000:0000:0000:0000:0213',
        clusterIPs: ['FD00:0010:0096:0000:0000:0000:0000:0213', '10.0.0.213'],
        externalIPs: ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
        loadBalancerSourceRanges: ['2001:DB8:0:1:0:0:0:0/64', '10.1.2.3/8', '2001:db8:0:1::/64'],
      }),
      status: { loadBalancer: { ingress: [{ ip: '2001:0db8:0000:0000:0000:0000:0000:0007' }] } },
    });
    expect(svc.clusterIPs).toEqual(['fd00:10:96::213', '10.0.0.213']);
    expect(svc.externalIPs).toEqual(['2001:db8::1']);
    expect(svc.loadBalancerIPs).toEqual(['2001:db8::7']);
    expect(svc.loadBalancerSourceRanges).toEqual(['2001:db8:0:1::/64', '10.0.0.0/8']);
  });

  it('drops special IPv6 external and load-balancer addresses with one line each', () => {
    const warnings: string[] = [];
    const svc = parseService(
      {
        ...service({ type: 'LoadBalancer', externalIPs: ['::1', 'fe80::1', '2001:db8::10', '::ffff:192.0.2.1'] }),
        status: { loadBalancer: { ingress: [{ ip: 'ff02::1' }, { ip: '::' }, { ip: '2001:db8::7' }] } },
      },
      (m) => warnings.push(m),
    );
    expect(svc.externalIPs).toEqual(['2001:db8::10']);
    expect(svc.loadBalancerIPs).toEqual(['2001:db8::7']);
    expect(warnings).toEqual([
      'Service default/web: spec.externalIPs[0] "::1" is the loopback address ::1 and cannot be a Service address; address ignored',
      'Service default/web: spec.externalIPs[1] "fe80::1" is in the link-local range fe80::/10 and cannot be a Service address; address ignored',
      'Service default/web: spec.externalIPs[3] "::ffff:192.0.2.1" is an IPv4-mapped address (::ffff:0:0/96; write the IPv4 address itself) and cannot be a Service address; address ignored',
      'Service default/web: status.loadBalancer.ingress[0].ip "ff02::1" is in the multicast range ff00::/8 and cannot be a Service address; address ignored',
      'Service default/web: status.loadBalancer.ingress[1].ip "::" is the unspecified address :: (it means every local address) and cannot be a Service address; address ignored',
    ]);
  });

  it('keeps an ExternalName service without a cluster IP', () => {
    const svc = parseService(service({ type: 'ExternalName', externalName: 'example.com', clusterIP: undefined }));
    expect(svc.type).toBe('ExternalName');
    expect(svc.clusterIPs).toEqual([]);
  });

  const invalid: Array<[string, Record<string, unknown>, string]> = [
    ['port out of range', service({ ports: [{ port: 70000 }] }), 'Service default/web: spec.ports[0].port 70000 is out of range 1-65535'],
    ['port missing', service({ ports: [{ name: 'x' }] }), 'Service default/web: spec.ports[0].port is missing; give a port number 1-65535'],
    ['port as a string', service({ ports: [{ port: '80' }] }), 'Service default/web: spec.ports[0].port must be an integer, got "80"'],
    ['bad cluster IP', service({ clusterIP: '10.0.0.300' }), 'Service default/web: spec.clusterIP "10.0.0.300" is not an IPv4 or IPv6 address'],
    ['a bad IPv6 cluster IP', service({ clusterIP: 'fd00::10::1' }), 'Service default/web: spec.clusterIP "fd00::10::1" is not an IPv4 or IPv6 address'],
    ['an IPv6 zone', service({ clusterIP: 'fd00::10%eth0' }), 'Service default/web: spec.clusterIP "fd00::10%eth0" is not an IPv4 or IPv6 address'],
    ['two cluster IPs of one family', service({ clusterIPs: ['10.0.0.10', '10.0.0.11'] }), 'Service default/web: spec.clusterIPs[1] "10.0.0.11" is a second IPv4 cluster IP; a dual-stack Service has one IPv4 and one IPv6 cluster IP'],
    ['three cluster IPs', service({ clusterIPs: ['10.0.0.10', 'fd00::10', 'fd00::11'] }), 'Service default/web: spec.clusterIPs lists 3 addresses; give at most two, one IPv4 and one IPv6'],
    ['families out of order', service({ clusterIPs: ['10.0.0.10', 'fd00::10'], ipFamilies: ['IPv6', 'IPv4'] }), 'Service default/web: spec.clusterIPs[0] "10.0.0.10" is IPv4 but spec.ipFamilies[0] is IPv6; list the families in the order of spec.clusterIPs'],
    ['a family twice', service({ ipFamilies: ['IPv4', 'IPv4'], ipFamilyPolicy: 'RequireDualStack' }), 'Service default/web: spec.ipFamilies[1] "IPv4" repeats spec.ipFamilies[0]'],
    ['an unknown family', service({ ipFamilies: ['IPv5'] }), 'Service default/web: spec.ipFamilies[0] "IPv5" is not an IP family; use IPv4 or IPv6'],
    ['an unknown family policy', service({ ipFamilyPolicy: 'DualStack' }), 'Service default/web: spec.ipFamilyPolicy "DualStack" is not an IP family policy; use SingleStack, PreferDualStack or RequireDualStack'],
    ['SingleStack with two cluster IPs', service({ clusterIPs: ['10.0.0.10', 'fd00::10'], ipFamilyPolicy: 'SingleStack' }), 'Service default/web: spec.ipFamilyPolicy is SingleStack but the Service has two cluster IPs; use PreferDualStack or RequireDualStack'],
    ['a loopback IPv6 cluster IP', service({ clusterIP: '::1' }), 'Service default/web: spec.clusterIP "::1" is the loopback address ::1; a cluster IP must come from the service CIDR'],
    ['a link-local IPv6 cluster IP', service({ clusterIPs: ['10.0.0.10', 'fe80::10'] }), 'Service default/web: spec.clusterIPs[1] "fe80::10" is in the link-local range fe80::/10; a cluster IP must come from the service CIDR'],
    ['an IPv4-mapped cluster IP', service({ clusterIP: '::ffff:10.0.0.10' }), 'Service default/web: spec.clusterIP "::ffff:10.0.0.10" is an IPv4-mapped address (::ffff:0:0/96; write the IPv4 address itself)'],
    ['a bad IPv6 source range', service({ loadBalancerSourceRanges: ['2001:db8::/129'] }), 'Service default/web: spec.loadBalancerSourceRanges[0] "2001:db8::/129" is not a CIDR'],
    ['clusterIPs disagree', service({ clusterIPs: ['10.0.0.11'] }), 'spec.clusterIPs[0] "10.0.0.11" differs from spec.clusterIP "10.0.0.10"'],
    ['bad protocol', service({ ports: [{ port: 80, protocol: 'HTTP' }] }), 'Service default/web: spec.ports[0].protocol "HTTP" is not supported; use TCP, UDP or SCTP'],
    ['nodePort out of range', service({ type: 'NodePort', ports: [{ port: 80, nodePort: 70000 }] }), 'Service default/web: spec.ports[0].nodePort 70000 is out of range 1-65535'],
    ['a cluster IP of 0.0.0.0', service({ clusterIP: '0.0.0.0' }), 'Service default/web: spec.clusterIP "0.0.0.0" is in 0.0.0.0/8 ("this network"; 0.0.0.0 means every local address); a cluster IP must come from the service CIDR'],
    ['a loopback cluster IP', service({ clusterIP: '127.0.0.1' }), 'Service default/web: spec.clusterIP "127.0.0.1" is in the loopback range 127.0.0.0/8'],
    ['a bad creation time', service({}, { creationTimestamp: 'yesterday' }), 'Service default/web: metadata.creationTimestamp "yesterday" is not an RFC 3339 time'],
    ['nodePort on ClusterIP', service({ ports: [{ port: 80, nodePort: 30080 }] }), 'spec.ports[0].nodePort may only be set when spec.type is NodePort or LoadBalancer (it is ClusterIP)'],
    ['unknown type', service({ type: 'Magic' }), 'Service default/web: spec.type "Magic" is not a Service type; use ClusterIP, NodePort, LoadBalancer or ExternalName'],
    ['bad source range', service({ loadBalancerSourceRanges: ['10.0.0.0/33'] }), 'Service default/web: spec.loadBalancerSourceRanges[0] "10.0.0.0/33" is not a CIDR; write it as address/prefix, e.g. 203.0.113.0/24'],
    ['source range without prefix', service({ loadBalancerSourceRanges: ['10.0.0.0'] }), 'spec.loadBalancerSourceRanges[0] "10.0.0.0" is not a CIDR'],
    ['bad external IP', service({ externalIPs: ['192.0.2'] }), 'Service default/web: spec.externalIPs[0] "192.0.2" is not an IPv4 or IPv6 address'],
    ['missing name', service({}, { name: undefined }), 'Service: metadata.name is missing; give the Service a name'],
    ['missing metadata', { apiVersion: 'v1', kind: 'Service', spec: {} }, 'Service: metadata is missing'],
    ['invalid name', service({}, { name: 'Web_1' }), 'Service default/Web_1: metadata.name "Web_1" is not a valid Service name'],
    ['unnamed port among several', service({ ports: [{ name: 'a', port: 80 }, { port: 81 }] }), 'spec.ports[1].name is required when a Service has more than one port'],
    ['duplicate port name', service({ ports: [{ name: 'a', port: 80 }, { name: 'a', port: 81 }] }), 'spec.ports[1].name "a" is already used by spec.ports[0]'],
    ['duplicate port', service({ ports: [{ name: 'a', port: 80 }, { name: 'b', port: 80 }] }), 'spec.ports[1] 80/TCP is already declared by spec.ports[0]'],
    ['bad target port name', service({ ports: [{ port: 80, targetPort: 'Web_Port' }] }), 'spec.ports[0].targetPort "Web_Port" is neither a port number nor a container port name'],
    ['target port out of range', service({ ports: [{ port: 80, targetPort: 0x10000 }] }), 'spec.ports[0].targetPort 65536 is out of range 1-65535'],
    ['bad session affinity', service({ sessionAffinity: 'Cookie' }), 'spec.sessionAffinity "Cookie" is not a session affinity; use None or ClientIP'],
    ['affinity timeout too long', service({ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 86401 } } }), 'spec.sessionAffinityConfig.clientIP.timeoutSeconds 86401 is out of range 1-86400'],
    ['bad traffic policy', service({ externalTrafficPolicy: 'Global' }), 'spec.externalTrafficPolicy "Global" is not a traffic policy; use Cluster or Local'],
    ['ports not a list', service({ ports: { port: 80 } }), 'spec.ports must be a list, got a mapping'],
    ['annotation not a string', service({}, { annotations: { 'vipr.io/weight': 3 } }), 'metadata.annotations["vipr.io/weight"] must be a string, got 3; quote it in YAML'],
    ['wrong kind', { ...service(), kind: 'Pod' }, 'kind is "Pod", expected Service'],
  ];
  it.each(invalid)('rejects %s', (_what, raw, message) => {
    const err = errorOf(() => parseService(raw));
    expect(err.message).toContain(message);
  });

  it('accepts any node port the API server allocated (the node\'s --nodeport-range applies later, to manifests)', () => {
    expect(parseService(service({ type: 'NodePort', ports: [{ port: 80, nodePort: 40000 }] })).ports[0]?.nodePort).toBe(40000);
  });

  it('reads the creation time, which decides frontend ownership', () => {
    expect(parseService(service({}, { creationTimestamp: '2026-11-30T01:02:03Z' })).creationTimestamp).toBe(Date.UTC(2026, 10, 30, 1, 2, 3));
    // As the client library hands it over from the API: a Date.
    expect(parseService(service({}, { creationTimestamp: new Date(Date.UTC(2026, 10, 30)) })).creationTimestamp).toBe(Date.UTC(2026, 10, 30));
  });

  it('drops special external and load-balancer addresses with one line each, keeping the rest of the Service', () => {
    const warnings: string[] = [];
    const svc = parseService(
      {
        ...service({ type: 'LoadBalancer', externalIPs: ['0.0.0.0', '169.254.169.254', '192.0.2.10', '255.255.255.255'] }),
        status: { loadBalancer: { ingress: [{ ip: '224.0.0.1' }, { ip: '127.0.0.53' }, { ip: '203.0.113.7' }] } },
      },
      (m) => warnings.push(m),
    );
    expect(svc.externalIPs).toEqual(['192.0.2.10']);
    expect(svc.loadBalancerIPs).toEqual(['203.0.113.7']);
    expect(svc.clusterIPs).toEqual(['10.0.0.10']);
    expect(warnings).toEqual([
      'Service default/web: spec.externalIPs[0] "0.0.0.0" is in 0.0.0.0/8 ("this network"; 0.0.0.0 means every local address) and cannot be a Service address; address ignored',
      'Service default/web: spec.externalIPs[1] "169.254.169.254" is in the link-local range 169.254.0.0/16 (cloud metadata services live there) and cannot be a Service address; address ignored',
      'Service default/web: spec.externalIPs[3] "255.255.255.255" is the broadcast address and cannot be a Service address; address ignored',
      'Service default/web: status.loadBalancer.ingress[0].ip "224.0.0.1" is in the multicast range 224.0.0.0/4 and cannot be a Service address; address ignored',
      'Service default/web: status.loadBalancer.ingress[1].ip "127.0.0.53" is in the loopback range 127.0.0.0/8 and cannot be a Service address; address ignored',
    ]);
    for (const w of warnings) expect(w).not.toContain('\n');
  });
});

describe('parseEndpointSlice', () => {
  it('drops endpoints at special addresses (loopback, link-local, 0.0.0.0/8, multicast, broadcast) with a line each', () => {
    const warnings: string[] = [];
    const bad = ['127.0.0.1', '169.254.169.254', '0.0.0.0', '239.1.1.1', '255.255.255.255'];
    const s = parseEndpointSlice(
      slice({ endpoints: [...bad, '10.244.0.9'].map((ip) => ({ addresses: [ip], conditions: { ready: true } })) }),
      (m) => warnings.push(m),
    );
    expect(s.endpoints.map((e) => e.addresses[0])).toEqual(['10.244.0.9']);
    expect(warnings).toHaveLength(bad.length);
    expect(warnings[0]).toBe('EndpointSlice default/web-abc: endpoints[0].addresses[0] "127.0.0.1" is in the loopback range 127.0.0.0/8 and cannot be an endpoint; endpoint dropped');
  });

  it('reads conditions, topology and the service name', () => {
    const s = parseEndpointSlice(
      slice({
        endpoints: [
          {
            addresses: ['10.244.0.1'],
            conditions: { ready: false, serving: true, terminating: true },
            nodeName: 'node-a',
            zone: 'zone-a',
            hints: { forZones: [{ name: 'zone-a' }, { name: 'zone-b' }] },
          },
          { addresses: ['10.244.0.2'] },
        ],
      }),
    );
    expect(s).toEqual({
      namespace: 'default',
      name: 'web-abc',
      serviceName: 'web',
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
      endpoints: [
        {
          addresses: ['10.244.0.1'],
          conditions: { ready: false, serving: true, terminating: true },
          nodeName: 'node-a',
          zone: 'zone-a',
          zoneHints: ['zone-a', 'zone-b'],
        },
        {
          addresses: ['10.244.0.2'],
          conditions: { ready: null, serving: null, terminating: null },
          nodeName: null,
          zone: null,
          zoneHints: null,
        },
      ],
    });
  });

  it('has no service name without the label', () => {
    expect(parseEndpointSlice(slice({ metadata: { name: 'orphan' } })).serviceName).toBeNull();
  });

  it('drops a malformed endpoint with a warning and keeps the others', () => {
    const warnings: string[] = [];
    const s = parseEndpointSlice(
      slice({
        endpoints: [
          { addresses: ['10.244.0.999'] },
          { addresses: ['10.244.0.2'] },
          { addresses: [] },
          { addresses: ['10.244.0.3'], conditions: { ready: 'yes' } },
          { addresses: ['fd00::1'] },
        ],
      }),
      (m) => warnings.push(m),
    );
    expect(s.endpoints.map((e) => e.addresses[0])).toEqual(['10.244.0.2']);
    expect(warnings).toEqual([
      'EndpointSlice default/web-abc: endpoints[0].addresses[0] "10.244.0.999" is not an IPv4 address; endpoint dropped',
      'EndpointSlice default/web-abc: endpoints[2].addresses is empty; an endpoint needs one address; endpoint dropped',
      'EndpointSlice default/web-abc: endpoints[3].conditions.ready must be true or false, got "yes"; endpoint dropped',
      'EndpointSlice default/web-abc: endpoints[4].addresses[0] "fd00::1" is not an IPv4 address; endpoint dropped',
    ]);
  });

  it('keeps IPv6 slices, their addresses canonical, and drops special IPv6 endpoints with a line each', () => {
    const warnings: string[] = [];
    const s = parseEndpointSlice(
      slice({
        addressType: 'IPv6',
        endpoints: [
          { addresses: ['FD00:10:244:1:0:0:0:7'] },
          { addresses: ['fe80::7'] },
          { addresses: ['::1'] },
          { addresses: ['10.244.0.7'] },
          { addresses: ['fd00:10:244:1::8'] },
        ],
      }),
      (m) => warnings.push(m),
    );
    expect(s.addressType).toBe('IPv6');
    expect(s.endpoints.map((e) => e.addresses)).toEqual([['fd00:10:244:1::7'], ['fd00:10:244:1::8']]);
    expect(warnings).toEqual([
      'EndpointSlice default/web-abc: endpoints[1].addresses[0] "fe80::7" is in the link-local range fe80::/10 and cannot be an endpoint; endpoint dropped',
      'EndpointSlice default/web-abc: endpoints[2].addresses[0] "::1" is the loopback address ::1 and cannot be an endpoint; endpoint dropped',
      'EndpointSlice default/web-abc: endpoints[3].addresses[0] "10.244.0.7" is not an IPv6 address; endpoint dropped',
    ]);
  });

  it('ignores a port without a number, as kube-proxy does, and reads an unnamed port as ""', () => {
    const warnings: string[] = [];
    const s = parseEndpointSlice(slice({ ports: [{ name: 'all' }, { port: 53, protocol: 'UDP' }] }), (m) => warnings.push(m));
    expect(s.ports).toEqual([{ name: '', protocol: 'UDP', port: 53 }]);
    expect(warnings).toEqual(['EndpointSlice default/web-abc: ports[0].port is missing; port ignored']);
  });

  const invalid: Array<[string, Record<string, unknown>, string]> = [
    ['missing addressType', slice({ addressType: undefined }), 'EndpointSlice default/web-abc: addressType is missing; use IPv4, IPv6 or FQDN'],
    ['unknown addressType', slice({ addressType: 'IPv5' }), 'addressType "IPv5" is not an address type'],
    ['port out of range', slice({ ports: [{ port: 0x10000 }] }), 'EndpointSlice default/web-abc: ports[0].port 65536 is out of range 1-65535'],
    ['bad port protocol', slice({ ports: [{ port: 80, protocol: 'tcp' }] }), 'ports[0].protocol "tcp" is not supported; use TCP, UDP or SCTP'],
    ['endpoints not a list', slice({ endpoints: 'none' }), 'endpoints must be a list, got "none"'],
    ['missing name', slice({ metadata: {} }), 'EndpointSlice: metadata.name is missing'],
  ];
  it.each(invalid)('rejects %s', (_what, raw, message) => {
    expect(errorOf(() => parseEndpointSlice(raw)).message).toContain(message);
  });
});

describe('parseEndpoints (legacy v1 Endpoints)', () => {
  const endpoints = {
    apiVersion: 'v1',
    kind: 'Endpoints',
    metadata: { name: 'web', namespace: 'shop' },
    subsets: [
      {
        addresses: [{ ip: '10.244.0.1', nodeName: 'node-a' }, { ip: 'fd00::1' }, { ip: 'bogus' }],
        notReadyAddresses: [{ ip: '10.244.0.2' }],
        ports: [{ name: 'http', port: 8080 }, { name: 'dns', port: 5353, protocol: 'UDP' }],
      },
      { addresses: [{ ip: '10.244.1.1' }], ports: [{ name: 'metrics', port: 9090 }] },
    ],
  };

  it('makes one slice per subset and family, ready and not-ready addresses, ports by name', () => {
    const warnings: string[] = [];
    const slices = parseEndpoints(endpoints, (m) => warnings.push(m));
    expect(slices).toEqual([
      {
        namespace: 'shop',
        name: 'web-endpoints-0',
        serviceName: 'web',
        addressType: 'IPv4',
        ports: [
          { name: 'http', protocol: 'TCP', port: 8080 },
          { name: 'dns', protocol: 'UDP', port: 5353 },
        ],
        endpoints: [
          { addresses: ['10.244.0.1'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node-a', zone: null, zoneHints: null },
          { addresses: ['10.244.0.2'], conditions: { ready: false, serving: false, terminating: false }, nodeName: null, zone: null, zoneHints: null },
        ],
      },
      {
        namespace: 'shop',
        name: 'web-endpoints-0-ipv6',
        serviceName: 'web',
        addressType: 'IPv6',
        ports: [
          { name: 'http', protocol: 'TCP', port: 8080 },
          { name: 'dns', protocol: 'UDP', port: 5353 },
        ],
        endpoints: [
          { addresses: ['fd00::1'], conditions: { ready: true, serving: true, terminating: false }, nodeName: null, zone: null, zoneHints: null },
        ],
      },
      {
        namespace: 'shop',
        name: 'web-endpoints-1',
        serviceName: 'web',
        addressType: 'IPv4',
        ports: [{ name: 'metrics', protocol: 'TCP', port: 9090 }],
        endpoints: [
          { addresses: ['10.244.1.1'], conditions: { ready: true, serving: true, terminating: false }, nodeName: null, zone: null, zoneHints: null },
        ],
      },
    ]);
    expect(warnings).toEqual(["Endpoints shop/web: subsets[0].addresses[2].ip \"bogus\" is not an IPv4 or IPv6 address; give the pod's address; address dropped"]);
  });

  it('rejects a port out of range', () => {
    const bad = { ...endpoints, subsets: [{ addresses: [{ ip: '10.0.0.1' }], ports: [{ port: 99999 }] }] };
    expect(errorOf(() => parseEndpoints(bad)).message).toBe('Endpoints shop/web: subsets[0].ports[0].port 99999 is out of range 1-65535');
  });
});

describe('parseObject', () => {
  it('dispatches by apiVersion and kind', () => {
    const out = parseObject(service());
    expect(out.failures).toEqual([]);
    expect(out.sources).toHaveLength(1);
    expect(out.sources[0]?.ref).toBe('Service default/web');
    expect(out.sources[0]?.items[0]?.kind).toBe('Service');
  });

  it('walks Lists and typed lists recursively, items of a typed list without kind', () => {
    const out = parseObject({
      apiVersion: 'v1',
      kind: 'List',
      items: [
        service(),
        { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'web', namespace: 'default' } },
        {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSliceList',
          items: [{ ...slice(), apiVersion: undefined, kind: undefined }],
        },
        { apiVersion: 'v1', kind: 'Endpoints', metadata: { name: 'legacy' }, subsets: [{ addresses: [{ ip: '10.0.0.1' }], ports: [{ port: 80 }] }] },
      ],
    });
    expect(out.failures).toEqual([]);
    expect(out.sources.map((s) => [s.ref, s.path, s.items.map((i) => i.kind)])).toEqual([
      ['Service default/web', 'items[0]', ['Service']],
      ['EndpointSlice default/web-abc', 'items[2].items[0]', ['EndpointSlice']],
      ['Endpoints default/legacy', 'items[3]', ['EndpointSlice']],
    ]);
    expect(out.ignored).toEqual(['items[1]: apps/v1 Deployment default/web']);
  });

  it('reports a bad List item as a failure with its identity and keeps the good ones', () => {
    const out = parseObject({ apiVersion: 'v1', kind: 'List', items: [service({ clusterIP: 'nope' }), service({}, { name: 'ok' })] });
    expect(out.sources.map((s) => s.ref)).toEqual(['Service default/ok']);
    expect(out.failures).toHaveLength(1);
    expect(out.failures[0]?.ref).toBe('Service default/web');
    expect(out.failures[0]?.error.message).toBe(
      'items[0]: Service default/web: spec.clusterIP "nope" is not an IPv4 or IPv6 address; use an address like 10.96.0.10 or fd00:10:96::10, "None" for a headless Service, or leave it out to have one allocated',
    );
  });

  it('ignores other kinds and other API versions, not as errors', () => {
    expect(parseObject({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } }).ignored).toEqual(['v1 ConfigMap default/x']);
    const beta = parseObject({ ...slice(), apiVersion: 'discovery.k8s.io/v1beta1' });
    expect(beta.ignored).toEqual(['discovery.k8s.io/v1beta1 EndpointSlice default/web-abc']);
    expect(beta.failures).toEqual([]);
  });

  it('fails on something that is not an object or lacks kind', () => {
    expect(parseObject('hello').failures[0]?.error.message).toContain('not a Kubernetes object');
    const noKind = parseObject({ apiVersion: 'v1', metadata: { name: 'x' } });
    expect(noKind.failures[0]?.error.message).toContain('kind is missing');
    expect(noKind.failures[0]?.ref).toBeNull();
  });

  it('yields nothing for an empty document', () => {
    expect(parseObject(null)).toEqual({ sources: [], failures: [], warnings: [], ignored: [] });
  });

  it('collects dropped-endpoint warnings with the item path', () => {
    const out = parseObject({ apiVersion: 'v1', kind: 'List', items: [slice({ endpoints: [{ addresses: ['x'] }] })] });
    expect(out.warnings).toEqual([
      'items[0]: EndpointSlice default/web-abc: endpoints[0].addresses[0] "x" is not an IPv4 address; endpoint dropped',
    ]);
  });
});

describe('hostile input', () => {
  /** Every message a user sees from the parser: one line of at most ~300 characters. */
  function expectOneLine(message: string | undefined): void {
    expect(message).toBeDefined();
    expect(message).not.toMatch(/[\n\r\u2028\u2029]/);
    expect(message?.length ?? 0).toBeLessThanOrEqual(300);
  }

  it('says the kind and apiVersion must be strings when they are not', () => {
    const kind = parseObject({ apiVersion: 'v1', kind: 123, metadata: { name: 'x' } });
    expect(kind.failures.map((f) => f.error.message)).toEqual(['kind must be a string, got 123; write the kind by name, e.g. "kind: Service"']);
    const apiVersion = parseObject({ apiVersion: 1, kind: 'Service', metadata: { name: 'x' } });
    expect(apiVersion.failures.map((f) => f.error.message)).toEqual([
      'apiVersion must be a string, got 1; write it as text, e.g. "apiVersion: v1"',
    ]);
    expect(apiVersion.failures[0]?.ref).toBe('Service default/x');
  });

  it('quotes only a short excerpt of a huge or multi-line value', () => {
    const huge = 'a'.repeat(100_000);
    const messages = [
      errorOf(() => parseService(service({}, { name: huge }))).message,
      errorOf(() => parseService(service({ clusterIP: `10.0.0.1\n${huge}` }))).message,
      errorOf(() => parseService(service({}, { labels: { [huge]: 1 } }))).message,
      errorOf(() => parseService({ ...service(), kind: `Service\nkind: ${huge}` })).message,
      ...parseObject({ apiVersion: `apps/v1\n${huge}`, kind: huge, metadata: { name: huge, namespace: huge } }).ignored,
      ...parseObject({ apiVersion: 'v1', kind: `${huge}List`, items: 5 }).ignored,
    ];
    expect(messages).toHaveLength(6);
    for (const message of messages) {
      expectOneLine(message);
      expect(message).not.toContain('a'.repeat(100));
    }
    expect(messages[0]).toMatch(/^Service default\/a+… \(100000 characters\): metadata\.name "a+"… \(100000 characters\) is not a valid Service name/);
  });

  it('reports Lists nested too deeply instead of recursing without bound', () => {
    let deep: unknown = service();
    for (let i = 0; i < 20_000; i++) deep = { apiVersion: 'v1', kind: 'List', items: [deep] };
    const out = parseObject(deep);
    expect(out.sources).toEqual([]);
    expect(out.failures).toHaveLength(1);
    expectOneLine(out.failures[0]?.error.message);
    expect(out.failures[0]?.error.message).toMatch(/Lists nested more than 10 deep; flatten them into one List$/);
  });
});
