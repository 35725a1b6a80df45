/*
 * kube-proxy's service health check servers (pkg/proxy/healthcheck/service_health.go): for
 * every LoadBalancer Service with externalTrafficPolicy Local, an HTTP server on its
 * healthCheckNodePort tells the cloud load balancer whether this node has local endpoints:
 * 200 with the count when it has, 503 when it has none, so the load balancer only sends
 * traffic to nodes that can serve it without a second hop.
 */
import { createServer, type Server } from 'node:http';
import type { DesiredState } from '../model/types.js';
import { componentLogger } from '../log.js';

const log = componentLogger('service-health');

interface Served {
  namespace: string;
  name: string;
  localEndpoints: number;
}

export class ServiceHealthServers {
  private readonly servers = new Map<number, { server: Server; served: Served }>();

  constructor(
    private readonly bindHost = '0.0.0.0',
    /** The proxy's own health: kube-proxy answers 503 when it is unhealthy. */
    private readonly proxyHealthy: () => boolean = () => true,
  ) {}

  /** Opens, updates and closes servers to match the desired state. */
  async update(state: DesiredState): Promise<void> {
    const want = new Map<number, Served>();
    for (const e of state.services) {
      const port = e.service.healthCheckNodePort;
      if (port === 0) continue;
      const cur = want.get(port) ?? { namespace: e.service.id.namespace, name: e.service.id.name, localEndpoints: 0 };
      // Ports of one Service share the check: count each local, ready endpoint address once.
      const ready = new Set(e.selection.localEndpoints.filter((ep) => ep.ready).map((ep) => ep.ip));
      cur.localEndpoints = Math.max(cur.localEndpoints, ready.size);
      want.set(port, cur);
    }
    for (const [port, s] of this.servers) {
      if (!want.has(port)) {
        s.server.close();
        this.servers.delete(port);
      }
    }
    for (const [port, served] of want) {
      const cur = this.servers.get(port);
      if (cur) {
        cur.served = served;
        continue;
      }
      const entry = { server: createServer(), served };
      entry.server.on('request', (_req, res) => {
        const healthy = this.proxyHealthy();
        const { namespace, name, localEndpoints } = entry.served;
        res.setHeader('Content-Type', 'application/json');
        res.setHeader('X-Content-Type-Options', 'nosniff');
        res.setHeader('X-Load-Balancing-Endpoint-Weight', String(localEndpoints));
        res.statusCode = localEndpoints > 0 && healthy ? 200 : 503;
        res.end(JSON.stringify({ service: { namespace, name }, localEndpoints, serviceProxyHealthy: healthy }));
      });
      try {
        await new Promise<void>((resolve, reject) => {
          entry.server.once('error', reject);
          entry.server.listen(port, this.bindHost, () => resolve());
        });
        this.servers.set(port, entry);
      } catch (err) {
        log.error({ err: (err as Error).message, port, svc: `${served.namespace}/${served.name}` }, 'cannot open the health check node port');
      }
    }
  }

  close(): void {
    for (const s of this.servers.values()) s.server.close();
    this.servers.clear();
  }
}
