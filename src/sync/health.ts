/*
 * kube-proxy's health endpoint (pkg/proxy/healthcheck/proxy_health.go), answered the same way so
 * the same probes and load-balancer health checks work against vipr:
 *   - the agent reports `queued` when a change needs a sync and `updated` when a sync succeeded;
 *   - it is healthy unless a sync has been queued and none succeeded for `healthTimeoutMs` since
 *     the oldest unsynced request (kube-proxy passes 2 × --sync-period);
 *   - /healthz also turns 503 while the node is being deleted or is tainted for deletion by the
 *     cluster autoscaler, so load balancers drain it; /livez ignores the node.
 * The body is kube-proxy's JSON; when healthy, `lastUpdated` is the current time, as kube-proxy
 * answers for compatibility with its older releases. Times are RFC 3339 (kube-proxy prints Go's
 * time.Time form; clients read the status code).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { ConfigError } from '../errors.js';
import { componentLogger } from '../log.js';

const log = componentLogger('health');

/** The taint the cluster autoscaler puts on a node it is about to delete. */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

/** Go's zero time.Time, which kube-proxy reports as lastUpdated before any successful sync. */
const ZERO_TIME = '0001-01-01T00:00:00.000Z';

export interface HealthClock {
  now(): number;
}

export interface ProxyHealthStatus {
  /** The proxier's own health (what /livez answers). */
  healthy: boolean;
  /** When a sync last succeeded (ms since the epoch); null before the first. */
  lastUpdated: number | null;
  currentTime: number;
  /** False while the node is being deleted (what /healthz adds to `healthy`). */
  nodeEligible: boolean;
}

export class ProxyHealth {
  private readonly healthTimeoutMs: number;
  private readonly clock: HealthClock;
  private lastUpdated: number | null = null;
  /** The oldest sync request not yet followed by a successful sync. */
  private oldestPendingQueued: number | null = null;
  /** Eligible while starting, until a node event says otherwise (as kube-proxy). */
  private eligible = true;

  constructor(opts: { healthTimeoutMs: number; clock?: HealthClock }) {
    this.healthTimeoutMs = opts.healthTimeoutMs;
    this.clock = opts.clock ?? { now: () => Date.now() };
  }

  /** A change was seen that needs a sync; only the oldest unsynced request counts. */
  queued(now: number = this.clock.now()): void {
    this.oldestPendingQueued ??= now;
  }

  /** A sync succeeded: everything queued before it is programmed. */
  updated(now: number = this.clock.now()): void {
    this.oldestPendingQueued = null;
    this.lastUpdated = now;
  }

  /** kube-proxy's SyncNode: a node being deleted, or tainted for deletion, is not eligible. */
  syncNode(node: { deleting: boolean; taintKeys: readonly string[] }): void {
    this.eligible = !node.deleting && !node.taintKeys.includes(TO_BE_DELETED_TAINT);
  }

  status(): ProxyHealthStatus {
    const currentTime = this.clock.now();
    const late = this.oldestPendingQueued !== null && currentTime - this.oldestPendingQueued >= this.healthTimeoutMs;
    return { healthy: !late, lastUpdated: this.lastUpdated, currentTime, nodeEligible: this.eligible };
  }
}

/** What /healthz or /livez answers: status code and kube-proxy's JSON body. */
export function healthResponse(health: ProxyHealth, path: '/healthz' | '/livez'): { code: number; body: string } {
  const s = health.status();
  const healthy = path === '/healthz' ? s.healthy && s.nodeEligible : s.healthy;
  const currentTime = new Date(s.currentTime).toISOString();
  const lastUpdated = healthy ? currentTime : s.lastUpdated === null ? ZERO_TIME : new Date(s.lastUpdated).toISOString();
  const body: Record<string, string | boolean> = { lastUpdated, currentTime };
  if (path === '/healthz') body.nodeEligible = s.nodeEligible;
  return { code: healthy ? 200 : 503, body: JSON.stringify(body) };
}

/** Splits `host:port` (or `[v6]:port`) as kube-proxy's bind-address flags take it. */
export function parseBindAddress(flag: string, bindAddress: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(bindAddress);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new ConfigError(`${flag} ${bindAddress}: expected host:port (e.g. 127.0.0.1:10249 or [::1]:10249), port 0-65535`);
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

const LISTEN_ERRORS: Record<string, string> = {
  EADDRINUSE: 'address in use',
  EADDRNOTAVAIL: 'address not available on this host',
  EACCES: 'permission denied',
  ENOTFOUND: 'unknown host',
  EAI_AGAIN: 'cannot resolve host',
};

/**
 * Starts an HTTP server on `bindAddress`; a failure to bind becomes a ConfigError naming the
 * flag and the reason (`--metrics-bind-address 127.0.0.1:10249: address in use`).
 */
export async function listenOn(
  flag: string,
  bindAddress: string,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<Server> {
  const { host, port } = parseBindAddress(flag, bindAddress);
  const server = createServer(handler);
  return await new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const reason = (err.code && LISTEN_ERRORS[err.code]) ?? err.code ?? err.message;
      reject(new ConfigError(`${flag} ${bindAddress}: ${reason}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      server.on('error', (err) => log.error({ err, bindAddress }, 'HTTP server error'));
      resolve(server);
    });
  });
}

/** Serves /healthz and /livez on `bindAddress` (kube-proxy's --healthz-bind-address, default 0.0.0.0:10256). */
export function startHealthServer(bindAddress: string, health: ProxyHealth): Promise<Server> {
  return listenOn('--healthz-bind-address', bindAddress, (req, res) => {
    const path = new URL(req.url ?? '/', 'http://health').pathname;
    if (path !== '/healthz' && path !== '/livez') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff' });
      res.end('404 page not found\n');
      return;
    }
    const { code, body } = healthResponse(health, path);
    res.writeHead(code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
}
