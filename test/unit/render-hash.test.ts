import {
  base32Std,
  nftEndpointChainNameBase,
  nftServicePortChainNameBase,
  portProtoHash,
  serviceExternalChainName,
  serviceFirewallChainName,
  servicePortChainName,
  servicePortEndpointChainName,
  servicePortLocalChainName,
} from '../../src/render/hash.js';
import { servicePortKey } from '../../src/model/types.js';

const id = (namespace: string, name: string, port: string) => ({ namespace, name, port });

describe('base32Std', () => {
  test('matches RFC 4648 test vectors (Go base32.StdEncoding)', () => {
    const enc = (s: string): string => base32Std(new TextEncoder().encode(s));
    expect(enc('')).toBe('');
    expect(enc('f')).toBe('MY======');
    expect(enc('fo')).toBe('MZXQ====');
    expect(enc('foo')).toBe('MZXW6===');
    expect(enc('foob')).toBe('MZXW6YQ=');
    expect(enc('fooba')).toBe('MZXW6YTB');
    expect(enc('foobar')).toBe('MZXW6YTBOI======');
  });
});

describe('iptables chain names (values from kube-proxy proxier_test.go)', () => {
  test.each([
    ['ns1/svc1:p80', 'tcp', 'KUBE-SVC-XPGD46QRK7WJZT7O'],
    ['ns2/svc2:p80', 'tcp', 'KUBE-SVC-GNZBNJ2PO5MGZ6GT'],
    ['ns3/svc3:p80', 'tcp', 'KUBE-SVC-X27LE4BHSL4DOUIK'],
    ['ns4/svc4:p80', 'tcp', 'KUBE-SVC-4SW47YFZTEDKD3PK'],
    ['ns5/svc5:p80', 'tcp', 'KUBE-SVC-NUKIZ6OKUXPJNT4C'],
    ['ns2/svc2:p8080', 'tcp', 'KUBE-SVC-2VJB64SDSIJUP5T6'],
    ['ns4/svc4:p8082', 'tcp', 'KUBE-SVC-EBDQOQU5SJFXRIL3'],
  ])('%s %s -> %s', (name, proto, chain) => {
    expect(servicePortChainName(name, proto)).toBe(chain);
  });

  test.each([
    ['ns1/svc1:p80', 'tcp', '10.180.0.1:80', 'KUBE-SEP-SXIVWICOYRO3J4NJ'],
    ['ns2/svc2:p80', 'tcp', '10.180.0.2:80', 'KUBE-SEP-RS4RBKLTHTF2IUXJ'],
    ['ns5/svc5:p80', 'tcp', '10.180.0.3:80', 'KUBE-SEP-I77PXRDZVX7PMWMN'],
    ['ns1/svc1:p80', 'tcp', '10.0.0.0:80', 'KUBE-SEP-DKGQUZGBKLTPAR56'],
    ['ns3/svc3:p8081', 'tcp', '203.0.113.4:8081', 'KUBE-SEP-RUVVH7YV3PHQBDOS'],
    ['ns4/svc4:p8082', 'tcp', '10.4.0.1:8082', 'KUBE-SEP-SU5STNODRYEWJAUF'],
  ])('%s %s %s -> %s', (name, proto, ep, chain) => {
    expect(servicePortEndpointChainName(name, proto, ep)).toBe(chain);
  });

  test('SVL/EXT/FW share the SVC hash', () => {
    const hash = portProtoHash('ns2/svc2:p80', 'tcp');
    expect(hash).toBe('GNZBNJ2PO5MGZ6GT');
    expect(servicePortLocalChainName('ns2/svc2:p80', 'tcp')).toBe('KUBE-SVL-GNZBNJ2PO5MGZ6GT');
    expect(serviceExternalChainName('ns2/svc2:p80', 'tcp')).toBe('KUBE-EXT-GNZBNJ2PO5MGZ6GT');
    expect(serviceFirewallChainName('ns5/svc5:p80', 'tcp')).toBe('KUBE-FW-NUKIZ6OKUXPJNT4C');
  });

  test('protocol is part of the hash', () => {
    expect(servicePortChainName('ns1/svc1:p80', 'udp')).not.toBe('KUBE-SVC-XPGD46QRK7WJZT7O');
  });

  test('unnamed ports print without the colon, as ServicePortName.String()', () => {
    expect(servicePortKey(id('ns1', 'svc1', ''))).toBe('ns1/svc1');
    expect(servicePortKey(id('ns1', 'svc1', 'p80'))).toBe('ns1/svc1:p80');
  });
});

describe('nftables chain names (values from kube-proxy nftables proxier_test.go)', () => {
  test.each([
    ['ns1', 'svc1', 'ULMVA6XW-ns1/svc1/tcp/p80'],
    ['ns2', 'svc2', '42NFTM6N-ns2/svc2/tcp/p80'],
    ['ns3', 'svc3', '4AT6LBPK-ns3/svc3/tcp/p80'],
    ['ns4', 'svc4', 'LAUZTJTB-ns4/svc4/tcp/p80'],
    ['ns5', 'svc5', 'HVFWP5L3-ns5/svc5/tcp/p80'],
  ])('%s/%s', (ns, name, base) => {
    expect(nftServicePortChainNameBase(id(ns, name, 'p80'), 'tcp')).toBe(base);
  });

  test.each([
    ['ns1', 'svc1', '10.180.0.1', '5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80'],
    ['ns4', 'svc4', '10.180.0.4', 'UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80'],
    ['ns4', 'svc4', '10.180.0.5', '5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80'],
    ['ns5', 'svc5', '10.180.0.3', 'GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80'],
  ])('%s/%s endpoint %s', (ns, name, ip, base) => {
    expect(nftEndpointChainNameBase(id(ns, name, 'p80'), 'tcp', ip, 80)).toBe(base);
  });

  test('over-long names are truncated to 240 characters with "..."', () => {
    const long = 'x'.repeat(63);
    const base = nftEndpointChainNameBase(id(long, long, long), 'sctp', '1234:5678:9abc:def0:1234:5678:9abc:def0', 65535);
    expect(base).toHaveLength(240);
    expect(base.endsWith('...')).toBe(true);
  });
});
