/*
 * kube-proxy's healthz rules and answers, over real HTTP on 127.0.0.1 with a clock the test moves.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ProxyHealth, parseBindAddress, startHealthServer } from '../../src/sync/health.js';
import { ConfigError } from '../../src/errors.js';

class FakeClock {
  t = Date.UTC(2024, 4, 1, 12, 0, 0);
  now(): number {
    return this.t;
  }
}

const TIMEOUT = 60_000;
const iso = (ms: number): string => new Date(ms).toISOString();

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
});

async function serve(health: ProxyHealth): Promise<string> {
  const server = await startHealthServer('127.0.0.1:0', health);
  servers.push(server);
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function get(url: string): Promise<{ status: number; body: Record<string, unknown>; type: string | null }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as Record<string, unknown>, type: res.headers.get('content-type') };
}

describe('ProxyHealth over HTTP', () => {
  test('healthy → queued → late → 503 → updated → 200', async () => {
    const clock = new FakeClock();
    const health = new ProxyHealth({ healthTimeoutMs: TIMEOUT, clock });
    const base = await serve(health);
    const start = clock.t;

    // Starting up, nothing queued: healthy; lastUpdated reads as now, as kube-proxy answers.
    let r = await get(`${base}/healthz`);
    expect(r).toEqual({ status: 200, type: 'application/json', body: { lastUpdated: iso(start), currentTime: iso(start), nodeEligible: true } });

    health.queued(clock.t);
    clock.t += TIMEOUT - 1;
    expect((await get(`${base}/healthz`)).status).toBe(200);
    expect((await get(`${base}/livez`)).status).toBe(200);

    // A later request does not move the deadline: only the oldest unsynced one counts.
    health.queued(clock.t);
    clock.t += 1;
    r = await get(`${base}/healthz`);
    expect(r.status).toBe(503);
    // Never synced: Go's zero time, as kube-proxy reports.
    expect(r.body).toEqual({ lastUpdated: '0001-01-01T00:00:00.000Z', currentTime: iso(start + TIMEOUT), nodeEligible: true });
    const live = await get(`${base}/livez`);
    expect(live.status).toBe(503);
    expect(live.body).toEqual({ lastUpdated: '0001-01-01T00:00:00.000Z', currentTime: iso(start + TIMEOUT) });

    health.updated(clock.t);
    expect((await get(`${base}/healthz`)).status).toBe(200);
    expect(health.status()).toEqual({ healthy: true, lastUpdated: start + TIMEOUT, currentTime: start + TIMEOUT, nodeEligible: true });
  });

  test('late after a successful sync: 503 reports when it last succeeded', async () => {
    const clock = new FakeClock();
    const health = new ProxyHealth({ healthTimeoutMs: TIMEOUT, clock });
    const base = await serve(health);
    health.updated(clock.t);
    const synced = clock.t;
    clock.t += 5_000;
    health.queued(clock.t);
    clock.t += TIMEOUT;
    const r = await get(`${base}/healthz`);
    expect(r.status).toBe(503);
    expect(r.body.lastUpdated).toBe(iso(synced));
    expect(health.status().healthy).toBe(false);
  });

  test('a node being deleted fails /healthz (load balancers drain it) but not /livez', async () => {
    const clock = new FakeClock();
    const health = new ProxyHealth({ healthTimeoutMs: TIMEOUT, clock });
    const base = await serve(health);
    health.syncNode({ deleting: false, taintKeys: ['ToBeDeletedByClusterAutoscaler'] });
    const r = await get(`${base}/healthz`);
    expect(r.status).toBe(503);
    expect(r.body.nodeEligible).toBe(false);
    expect((await get(`${base}/livez`)).status).toBe(200);

    health.syncNode({ deleting: false, taintKeys: ['node.kubernetes.io/unschedulable'] });
    expect((await get(`${base}/healthz`)).status).toBe(200);
    health.syncNode({ deleting: true, taintKeys: [] });
    expect((await get(`${base}/healthz`)).status).toBe(503);
  });

  test('other paths are 404', async () => {
    const base = await serve(new ProxyHealth({ healthTimeoutMs: TIMEOUT }));
    expect((await fetch(`${base}/metrics`)).status).toBe(404);
  });

  test('a bind failure is a ConfigError naming the flag and the reason', async () => {
    const first = await startHealthServer('127.0.0.1:0', new ProxyHealth({ healthTimeoutMs: TIMEOUT }));
    servers.push(first);
    const port = (first.address() as AddressInfo).port;
    const err = await startHealthServer(`127.0.0.1:${port}`, new ProxyHealth({ healthTimeoutMs: TIMEOUT })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toBe(`--healthz-bind-address 127.0.0.1:${port}: address in use`);
  });
});

describe('parseBindAddress', () => {
  test('host:port and [v6]:port', () => {
    expect(parseBindAddress('--x', '0.0.0.0:10256')).toEqual({ host: '0.0.0.0', port: 10256 });
    expect(parseBindAddress('--x', '[::1]:10249')).toEqual({ host: '::1', port: 10249 });
  });

  test.each(['127.0.0.1', '127.0.0.1:', ':10249', '127.0.0.1:70000', '::1:10249'])('rejects %s', (addr) => {
    expect(() => parseBindAddress('--metrics-bind-address', addr)).toThrow(
      new ConfigError(`--metrics-bind-address ${addr}: expected host:port (e.g. 127.0.0.1:10249 or [::1]:10249), port 0-65535`),
    );
  });
});
