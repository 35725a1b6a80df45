/*
 * Addresses of both families (src/model/ip.ts): the canonical text every layer compares, which
 * must be what Go's net.IP.String() prints (RFC 5952), since kube-proxy's rules and the API
 * server's objects are written that way.
 */
import {
  canonicalIp, cidrHas, compareIps, familyOf, formatIpv6, joinHostPort, normalizeCidr, parseCidr, parseIpv6, specialIpv6,
} from '../../src/model/ip.js';

describe('canonical IPv6 text (RFC 5952, as Go prints)', () => {
  test.each([
    ['FD00:0010:0096:0000:0000:0000:0000:0213', 'fd00:10:96::213'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of two equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // one zero group is not shortened
    ['0:0:0:0:0:0:0:0', '::'],
    ['::FFFF:0a00:0001', '::ffff:10.0.0.1'], // IPv4-mapped: dotted tail (RFC 5952 section 5)
    ['fd00::0:0:1', 'fd00::1'],
  ])('%s -> %s', (input, want) => {
    expect(canonicalIp(input)).toBe(want);
    expect(formatIpv6(parseIpv6(input))).toBe(want);
  });

  test('IPv4 stays as written; anything else is refused with the text named', () => {
    expect(canonicalIp(' 10.0.0.213 ')).toBe('10.0.0.213');
    expect(() => canonicalIp('10.0.0.256')).toThrow("not an IP address: '10.0.0.256'");
    expect(() => canonicalIp('fd00::1::2')).toThrow('not an IP address');
  });

  test('a zoned address is no Service, endpoint or node address', () => {
    expect(familyOf('fe80::1%eth0')).toBeNull();
    expect(() => canonicalIp('fe80::1%eth0')).toThrow('not an IP address');
    expect(() => parseCidr('fe80::1%eth0/64')).toThrow('not a CIDR');
  });
});

describe('CIDRs of both families', () => {
  test('normalised as net.IPNet.String() prints them', () => {
    expect(normalizeCidr('fd00:10:96::213/112')).toBe('fd00:10:96::/112');
    expect(normalizeCidr('203.0.113.5/25')).toBe('203.0.113.0/25');
    expect(normalizeCidr('fd00::1')).toBe('fd00::1/128');
  });

  test('membership never crosses families', () => {
    const v6 = parseCidr('fd00:10:244::/56');
    expect(cidrHas(v6, 'fd00:10:244:1::2')).toBe(true);
    expect(cidrHas(v6, 'fd00:10:245::2')).toBe(false);
    expect(cidrHas(parseCidr('0.0.0.0/0'), 'fd00::1')).toBe(false);
    expect(cidrHas(parseCidr('::/0'), '10.0.0.1')).toBe(false);
  });

  test.each(['fd00::/129', '10.0.0.0/33', '10.0.0.0/-1', 'fd00::/64/1', 'nope/8', '10.0.0.0/8x'])('%s is refused in one line', (bad) => {
    expect(() => parseCidr(bad)).toThrow(`not a CIDR: '${bad}'`);
  });
});

test('special IPv6 addresses are named, ordinary ones are not', () => {
  expect(specialIpv6('::')).toMatch(/unspecified/);
  expect(specialIpv6('::1')).toMatch(/loopback/);
  expect(specialIpv6('fe80::1')).toMatch(/link-local/);
  expect(specialIpv6('ff02::1')).toMatch(/multicast/);
  expect(specialIpv6('::ffff:10.0.0.1')).toMatch(/IPv4-mapped/);
  expect(specialIpv6('fd00:10:96::213')).toBeNull();
});

test('host:port as ipvsadm and curl write it; IPv4 sorts before IPv6, numerically', () => {
  expect(joinHostPort('fd00:10:96::213', 80)).toBe('[fd00:10:96::213]:80');
  expect(joinHostPort('10.0.0.213', 80)).toBe('10.0.0.213:80');
  expect(['fd00::10', '10.0.0.2', 'fd00::9', '10.0.0.10'].sort(compareIps)).toEqual(['10.0.0.2', '10.0.0.10', 'fd00::9', 'fd00::10']);
});
