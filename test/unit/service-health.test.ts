/*
 * The healthCheckNodePort servers over real HTTP on loopback addresses: they listen only where
 * --nodeport-addresses lets NodePorts answer (as kube-proxy's service health server), each Service
 * owns its port, and a bad or contested port is that Service's problem alone.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { DesiredState, Endpoint, ServiceEntry } from '../../src/model/types.js';
import { ServiceHealthServers, healthCheckAddresses } from '../../src/sync/service-health.js';
import { servicePortOf } from '../helpers/objects.js';

function localEndpoint(ip: string): Endpoint {
  return { ip, port: 80, ready: true, serving: true, terminating: false, nodeName: 'node', zone: null, zoneHints: null, isLocal: true };
}

function entry(name: string, healthCheckNodePort: number, local: string[]): ServiceEntry {
  const eps = local.map(localEndpoint);
  return {
    key: `default/${name}:http`,
    service: servicePortOf({
      id: { namespace: 'default', name, port: 'http', protocol: 'TCP' },
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort,
    }),
    endpoints: eps,
    selection: { clusterEndpoints: [], localEndpoints: eps, allReachableEndpoints: eps, hasAnyEndpoints: eps.length > 0 },
  };
}

function state(...services: ServiceEntry[]): DesiredState {
  return { node: { name: 'node', zone: null, ips: [] }, services };
}

/** A port free on 127.0.0.0/8 right now. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

async function check(host: string, port: number): Promise<{ status: number; body: unknown } | 'refused'> {
  try {
    const res = await fetch(`http://${host}:${port}/`, { signal: AbortSignal.timeout(2000) });
    return { status: res.status, body: await res.json() };
  } catch {
    return 'refused';
  }
}

const opened: ServiceHealthServers[] = [];
const blockers: Server[] = [];
afterEach(async () => {
  for (const s of opened.splice(0)) s.close();
  await Promise.all(blockers.splice(0).map((b) => new Promise<void>((resolve) => b.close(() => resolve()))));
});

function servers(nodePortAddresses: string[]): ServiceHealthServers {
  const s = new ServiceHealthServers({ nodePortAddresses, localAddresses: () => ['127.0.0.1', '127.0.0.2', '10.9.9.9'] });
  opened.push(s);
  return s;
}

test('the listen addresses: every address by default, else the local addresses in --nodeport-addresses', () => {
  const local = ['127.0.0.1', '192.168.1.10', '10.0.0.5', '192.168.1.10'];
  expect(healthCheckAddresses([], local)).toEqual(['0.0.0.0']);
  expect(healthCheckAddresses(['0.0.0.0/0'], local)).toEqual(['0.0.0.0']);
  expect(healthCheckAddresses(['192.168.1.0/24'], local)).toEqual(['192.168.1.10']);
  expect(healthCheckAddresses(['192.168.1.0/24', '10.0.0.0/8'], local)).toEqual(['10.0.0.5', '192.168.1.10']);
  expect(healthCheckAddresses(['172.16.0.0/12'], local)).toEqual([]);
});

test('the listen addresses per family: IPv6 beside IPv4 when the node has it, each family narrowed only by its own CIDRs', () => {
  const local = ['127.0.0.1', '192.168.1.10', '::1', 'FD00:192:168:60:0:0:0:10', 'fd00:192:168:60::11'];
  expect(healthCheckAddresses([], local)).toEqual(['0.0.0.0', '::']);
  expect(healthCheckAddresses(['0.0.0.0/0', '::/0'], local)).toEqual(['0.0.0.0', '::']);
  expect(healthCheckAddresses(['fd00:192:168:60::/64'], local)).toEqual(['0.0.0.0', 'fd00:192:168:60::10', 'fd00:192:168:60::11']);
  expect(healthCheckAddresses(['192.168.1.0/24,fd00:192:168:60::10/128'], local)).toEqual(['192.168.1.10', 'fd00:192:168:60::10']);
  expect(healthCheckAddresses(['192.168.1.0/24', '2001:db8::/32'], local)).toEqual(['192.168.1.10']);
});

test('a dual-stack node answers the health check over IPv4 and IPv6 alike', async () => {
  const port = await freePort();
  const hc = new ServiceHealthServers({ nodePortAddresses: ['127.0.0.2/32', '::1/128'], localAddresses: () => ['127.0.0.1', '127.0.0.2', '::1'] });
  opened.push(hc);
  expect(hc.bindAddresses).toEqual(['127.0.0.2', '::1']);
  await hc.update(state(entry('lb', port, ['10.244.0.11'])));
  for (const host of ['127.0.0.2', '[::1]']) {
    expect(await check(host, port)).toMatchObject({ status: 200, body: { service: { namespace: 'default', name: 'lb' }, localEndpoints: 1 } });
  }
  expect(await check('127.0.0.1', port)).toBe('refused');
});

test('--nodeport-addresses: the server answers on the matching node address only', async () => {
  const port = await freePort();
  const hc = servers(['127.0.0.2/32']);
  expect(hc.bindAddresses).toEqual(['127.0.0.2']);
  await hc.update(state(entry('lb', port, ['10.244.0.11'])));
  expect(await check('127.0.0.2', port)).toEqual({
    status: 200,
    body: { service: { namespace: 'default', name: 'lb' }, localEndpoints: 1, serviceProxyHealthy: true },
  });
  // 127.0.0.1 is a local address outside --nodeport-addresses: nothing listens there.
  expect(await check('127.0.0.1', port)).toBe('refused');
});

test('two Services with one healthCheckNodePort: the first by name keeps it, the other alone goes without', async () => {
  const port = await freePort();
  const hc = servers(['127.0.0.0/8']);
  // b-lb has local endpoints, a-lb has none: each must report its own count, never the other's.
  await hc.update(state(entry('b-lb', port, ['10.244.0.11', '10.244.0.12']), entry('a-lb', port, [])));
  expect(await check('127.0.0.1', port)).toEqual({
    status: 503,
    body: { service: { namespace: 'default', name: 'a-lb' }, localEndpoints: 0, serviceProxyHealthy: true },
  });
  // a-lb goes away: b-lb gets the port.
  await hc.update(state(entry('b-lb', port, ['10.244.0.11', '10.244.0.12'])));
  expect(await check('127.0.0.1', port)).toEqual({
    status: 200,
    body: { service: { namespace: 'default', name: 'b-lb' }, localEndpoints: 2, serviceProxyHealthy: true },
  });
});

test('a port out of range or held by another program costs only its own Service', async () => {
  const [good, held] = [await freePort(), await freePort()];
  const blocker = createServer();
  await new Promise<void>((resolve) => blocker.listen(held, '127.0.0.1', resolve));
  blockers.push(blocker);
  const hc = servers(['127.0.0.1/32']);
  await hc.update(state(entry('bad-range', 70000, ['10.244.0.1']), entry('busy', held, ['10.244.0.2']), entry('good', good, ['10.244.0.3'])));
  expect(await check('127.0.0.1', good)).toMatchObject({ status: 200, body: { service: { name: 'good' } } });
  // Later updates keep serving the good one, and retry the busy one once it is free.
  await new Promise<void>((resolve) => blocker.close(() => resolve()));
  blockers.splice(0);
  await hc.update(state(entry('bad-range', 70000, ['10.244.0.1']), entry('busy', held, ['10.244.0.2']), entry('good', good, [])));
  expect(await check('127.0.0.1', good)).toMatchObject({ status: 503, body: { service: { name: 'good' }, localEndpoints: 0 } });
  expect(await check('127.0.0.1', held)).toMatchObject({ status: 200, body: { service: { name: 'busy' } } });
});
