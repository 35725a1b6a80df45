/*
 * kube-proxy's service health check servers (pkg/proxy/healthcheck/service_health.go): for
 * every LoadBalancer Service with externalTrafficPolicy Local, an HTTP server on its
 * healthCheckNodePort tells the cloud load balancer whether this node has local endpoints:
 * 200 with the count when it has, 503 when it has none, so the load balancer only sends
 * traffic to nodes that can serve it without a second hop.
 *
 * As kube-proxy, per family: the servers listen on 0.0.0.0 (and on :: when the node has IPv6)
 * unless --nodeport-addresses narrows that family's NodePorts to some CIDRs; then on each local
 * address of the family in them (looked up once, when the agent starts), and on none of the
 * family when no address matches. A family --nodeport-addresses names no CIDR of is not narrowed. One Service owns one port: a port out of range, taken by another
 * Service (the first by namespace/name keeps it) or by another program is that Service's problem
 * alone, logged once as one line until it changes; every other Service keeps its server.
 */
import { createServer, type Server } from 'node:http';
import { networkInterfaces } from 'node:os';
import type { DesiredState } from '../model/types.js';
import { IP_FAMILIES, canonicalIp, cidrHas, familyOf, parseCidr, type IpFamily } from '../model/ip.js';
import { componentLogger } from '../log.js';

const log = componentLogger('service-health');

const ALL_ADDRESSES: Record<IpFamily, string> = { IPv4: '0.0.0.0', IPv6: '::' };

export interface ServiceHealthOptions {
  /** kube-proxy's --nodeport-addresses (CIDRs of both families); none of a family, or its /0, = every address of it. */
  nodePortAddresses?: string[];
  /** The proxy's own health: kube-proxy answers 503 when it is unhealthy. */
  proxyHealthy?: () => boolean;
  /** This node's addresses of both families; default: every interface's, from the kernel. */
  localAddresses?: () => string[];
}

interface Served {
  namespace: string;
  name: string;
  localEndpoints: number;
}

interface Instance {
  port: number;
  served: Served;
  servers: Server[];
}

function interfaceAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    // A link-local IPv6 address needs its interface to bind (fe80::1%eth0): not a node address.
    .filter((a) => a.family === 'IPv4' || (a.family === 'IPv6' && (a.scopeid ?? 0) === 0))
    .map((a) => a.address);
}

/**
 * Where the health check servers listen: kube-proxy's nodeIPs for its service health servers, one
 * family after the other (IPv4 first). The IPv6 unspecified address only when the node has IPv6.
 */
export function healthCheckAddresses(nodePortAddresses: string[], localAddresses: string[]): string[] {
  const cidrs = nodePortAddresses.flatMap((c) => c.split(',')).map((c) => c.trim()).filter((c) => c !== '').map(parseCidr);
  const out: string[] = [];
  for (const family of IP_FAMILIES) {
    const local = localAddresses.filter((ip) => familyOf(ip) === family).map(canonicalIp);
    if (family === 'IPv6' && local.length === 0) continue;
    const mine = cidrs.filter((c) => c.family === family);
    if (mine.length === 0 || mine.some((c) => c.prefix === 0)) {
      out.push(ALL_ADDRESSES[family]);
      continue;
    }
    out.push(...[...new Set(local.filter((ip) => mine.some((c) => cidrHas(c, ip))))].sort());
  }
  return out;
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // "::" only for IPv6: 0.0.0.0 holds the port for IPv4 beside it.
    server.listen({ port, host, ipv6Only: host === ALL_ADDRESSES.IPv6 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export class ServiceHealthServers {
  /** By Service (`namespace/name`). */
  private readonly instances = new Map<string, Instance>();
  /** Why a Service has no server, as last logged (logged again only when it changes). */
  private readonly problems = new Map<string, string>();
  private readonly addresses: string[];
  private readonly proxyHealthy: () => boolean;
  private queue: Promise<void> = Promise.resolve();

  constructor(options: ServiceHealthOptions = {}) {
    this.proxyHealthy = options.proxyHealthy ?? (() => true);
    const cidrs = options.nodePortAddresses ?? [];
    this.addresses = healthCheckAddresses(cidrs, (options.localAddresses ?? interfaceAddresses)());
    if (this.addresses.length === 0) {
      log.warn({ nodePortAddresses: cidrs }, 'no local address is in --nodeport-addresses: health check node ports are not opened');
    }
  }

  /** The addresses every health check server listens on. */
  get bindAddresses(): string[] {
    return [...this.addresses];
  }

  /** Opens, updates and closes servers to match the desired state, one update at a time. */
  update(state: DesiredState): Promise<void> {
    const next = this.queue.then(() => this.apply(state));
    this.queue = next.catch((err: unknown) => log.error({ err }, 'health check servers update failed'));
    return next;
  }

  private async apply(state: DesiredState): Promise<void> {
    const want = new Map<string, { port: number; served: Served }>();
    for (const e of state.services) {
      const port = e.service.healthCheckNodePort;
      if (port === 0) continue;
      const key = `${e.service.id.namespace}/${e.service.id.name}`;
      const cur = want.get(key) ?? { port, served: { namespace: e.service.id.namespace, name: e.service.id.name, localEndpoints: 0 } };
      // Ports of one Service share the check: count each local, ready endpoint address once.
      const ready = new Set(e.selection.localEndpoints.filter((ep) => ep.ready).map((ep) => ep.ip));
      cur.served.localEndpoints = Math.max(cur.served.localEndpoints, ready.size);
      want.set(key, cur);
    }

    for (const [key, inst] of this.instances) {
      if (want.get(key)?.port !== inst.port) {
        this.closeInstance(inst);
        this.instances.delete(key);
      }
    }
    for (const key of this.problems.keys()) if (!want.has(key)) this.problems.delete(key);

    // The first Service by namespace/name keeps a contested port, whoever asked first.
    const owner = new Map<number, string>();
    for (const key of [...want.keys()].sort()) {
      const { port } = want.get(key) as { port: number };
      if (!owner.has(port)) owner.set(port, key);
    }
    for (const key of [...want.keys()].sort()) {
      const { port, served } = want.get(key) as { port: number; served: Served };
      const inst = this.instances.get(key);
      if (inst) {
        inst.served = served;
        continue;
      }
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        this.problem(key, port, `healthCheckNodePort ${port} is out of range 1-65535`);
        continue;
      }
      const holder = owner.get(port);
      if (holder !== key) {
        this.problem(key, port, `healthCheckNodePort ${port} is also Service ${holder}'s; give each Service its own port`);
        continue;
      }
      const error = await this.open(key, port, served);
      if (error !== null) this.problem(key, port, `cannot listen on the health check node port ${port}: ${error}`);
      else this.problems.delete(key);
    }
  }

  close(): void {
    for (const inst of this.instances.values()) this.closeInstance(inst);
    this.instances.clear();
  }

  /** Listens on every address, or on none: a half-open check would mislead the load balancer. */
  private async open(key: string, port: number, served: Served): Promise<string | null> {
    const inst: Instance = { port, served, servers: [] };
    for (const host of this.addresses) {
      const server = createServer((_req, res) => {
        const healthy = this.proxyHealthy();
        const { namespace, name, localEndpoints } = inst.served;
        res.setHeader('Content-Type', 'application/json');
        res.setHeader('X-Content-Type-Options', 'nosniff');
        res.setHeader('X-Load-Balancing-Endpoint-Weight', String(localEndpoints));
        res.statusCode = localEndpoints > 0 && healthy ? 200 : 503;
        res.end(JSON.stringify({ service: { namespace, name }, localEndpoints, serviceProxyHealthy: healthy }));
      });
      try {
        await listen(server, port, host);
        inst.servers.push(server);
      } catch (err) {
        this.closeInstance(inst);
        return `${host}: ${(err as Error).message}`;
      }
    }
    this.instances.set(key, inst);
    log.info({ svc: key, port, addresses: this.addresses }, 'health check node port open');
    return null;
  }

  private closeInstance(inst: Instance): void {
    for (const s of inst.servers) s.close();
    inst.servers = [];
  }

  private problem(key: string, port: number, message: string): void {
    if (this.problems.get(key) === message) return;
    this.problems.set(key, message);
    log.error({ svc: key, port }, `Service ${key}: ${message}`);
  }
}
