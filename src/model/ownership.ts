/*
 * One owner per frontend. A frontend is what a packet is matched on: (address, port, protocol)
 * for a cluster IP, an external IP or a load-balancer IP, of either family, and (nodePort,
 * protocol) on every node address (both families: one claim covers them). Two Services may claim the same one: a tenant's `externalIPs: [<another Service's
 * cluster IP>]` (the CVE-2020-8554 hijack), two LoadBalancers given one address, two manifests
 * with one nodePort. Exactly one claimant is programmed, chosen the same way on every node and in
 * every sync, partial or full, so that the result never depends on which object changed last:
 *   1. addresses the API server allocated (clusterIP, nodePort) beat claimed ones (externalIPs,
 *      status.loadBalancer.ingress), which any Service author can write;
 *   2. then the oldest metadata.creationTimestamp (none counts as newest);
 *   3. then namespace/name.
 * The index is incremental: replacing one Service's claims touches only the frontends it claims,
 * and says which other Services gained or lost a frontend by it, so a partial sync rebuilds them
 * too (removing the owner hands the frontend to the next claimant; removing a loser changes
 * nothing for the owner).
 */
import type { ServiceObject } from './k8s.js';
import { joinHostPort } from './ip.js';

/** Where a claim comes from: the Service field, as messages name it. */
export type ClaimField = 'clusterIP' | 'nodePort' | 'externalIPs' | 'loadBalancerIP';

const ALLOCATED: ReadonlySet<ClaimField> = new Set(['clusterIP', 'nodePort']);
/** Within one Service, a frontend claimed twice counts once, for the first field here. */
const FIELD_ORDER: readonly ClaimField[] = ['clusterIP', 'nodePort', 'externalIPs', 'loadBalancerIP'];

export interface FrontendClaim {
  /** The claiming Service, `namespace/name`. */
  service: string;
  field: ClaimField;
  /** `10.96.0.10:80/TCP`, `[fd00:10:96::10]:80/TCP`, or `nodePort 30080/TCP`. */
  frontend: string;
  allocated: boolean;
  createdAt: number | null;
}

/** A claim that lost its frontend, and the claim that owns it. */
export interface FrontendConflict {
  loser: FrontendClaim;
  owner: FrontendClaim;
}

/** `10.96.0.10:80/TCP`, `[fd00:10:96::10]:80/TCP` (the address canonical, so one spelling each). */
export function addressFrontend(address: string, port: number, protocol: string): string {
  return `${joinHostPort(address, port)}/${protocol}`;
}

export function nodePortFrontend(nodePort: number, protocol: string): string {
  return `nodePort ${nodePort}/${protocol}`;
}

/** Every frontend a (proxied) Service claims, each once. */
export function claimsOf(service: string, svc: ServiceObject): FrontendClaim[] {
  const byFrontend = new Map<string, FrontendClaim>();
  const add = (field: ClaimField, frontend: string): void => {
    if (!byFrontend.has(frontend)) {
      byFrontend.set(frontend, { service, field, frontend, allocated: ALLOCATED.has(field), createdAt: svc.creationTimestamp });
    }
  };
  for (const field of FIELD_ORDER) {
    for (const p of svc.ports) {
      if (field === 'clusterIP') for (const ip of svc.clusterIPs) add(field, addressFrontend(ip, p.port, p.protocol));
      if (field === 'nodePort' && p.nodePort > 0) add(field, nodePortFrontend(p.nodePort, p.protocol));
      if (field === 'externalIPs') for (const ip of svc.externalIPs) add(field, addressFrontend(ip, p.port, p.protocol));
      if (field === 'loadBalancerIP') for (const ip of svc.loadBalancerIPs) add(field, addressFrontend(ip, p.port, p.protocol));
    }
  }
  return [...byFrontend.values()];
}

/** Negative when `a` owns a frontend both claim. */
export function compareClaims(a: FrontendClaim, b: FrontendClaim): number {
  if (a.allocated !== b.allocated) return a.allocated ? -1 : 1;
  const ta = a.createdAt ?? Number.POSITIVE_INFINITY;
  const tb = b.createdAt ?? Number.POSITIVE_INFINITY;
  if (ta !== tb) return ta < tb ? -1 : 1;
  return a.service < b.service ? -1 : a.service > b.service ? 1 : 0;
}

export class FrontendOwners {
  /** Claimants of each frontend, owner first. */
  private readonly groups = new Map<string, FrontendClaim[]>();
  private readonly claims = new Map<string, FrontendClaim[]>();
  private lostCount = 0;
  private readonly lostBy = new Map<string, number>();

  /**
   * Replaces the claims of `service` (`namespace/name`) with those of `svc` (null: the Service is
   * gone or not proxied). Returns the other Services whose owned frontends changed by it.
   */
  set(service: string, svc: ServiceObject | null): Set<string> {
    const before = new Map<string, string | undefined>();
    for (const c of this.claims.get(service) ?? []) {
      before.set(c.frontend, this.groups.get(c.frontend)?.[0]?.service);
      const group = (this.groups.get(c.frontend) ?? []).filter((x) => x !== c);
      if (group.length === 0) this.groups.delete(c.frontend);
      else this.groups.set(c.frontend, group);
    }
    const next = svc === null ? [] : claimsOf(service, svc);
    if (next.length === 0) this.claims.delete(service);
    else this.claims.set(service, next);
    for (const c of next) {
      if (!before.has(c.frontend)) before.set(c.frontend, this.groups.get(c.frontend)?.[0]?.service);
      const group = this.groups.get(c.frontend) ?? [];
      const at = group.findIndex((x) => compareClaims(c, x) < 0);
      if (at < 0) group.push(c);
      else group.splice(at, 0, c);
      this.groups.set(c.frontend, group);
    }
    const affected = new Set<string>();
    for (const [frontend, ownerBefore] of before) {
      const ownerAfter = this.groups.get(frontend)?.[0]?.service;
      if (ownerBefore === ownerAfter) continue;
      if (ownerBefore !== undefined && ownerBefore !== service) affected.add(ownerBefore);
      if (ownerAfter !== undefined && ownerAfter !== service) affected.add(ownerAfter);
    }
    for (const s of [service, ...affected]) this.recount(s);
    return affected;
  }

  /** Whether `service`'s claim of `frontend` through `field` is the one programmed. */
  owns(service: string, field: ClaimField, frontend: string): boolean {
    const owner = this.groups.get(frontend)?.[0];
    return owner !== undefined && owner.service === service && owner.field === field;
  }

  /** The claims of `service` that another Service owns. */
  conflicts(service: string): FrontendConflict[] {
    const out: FrontendConflict[] = [];
    for (const c of this.claims.get(service) ?? []) {
      const owner = this.groups.get(c.frontend)?.[0];
      if (owner !== undefined && owner !== c) out.push({ loser: c, owner });
    }
    return out;
  }

  /** Claims currently not programmed because another Service owns their frontend. */
  get conflictCount(): number {
    return this.lostCount;
  }

  /** Services with claims, `namespace/name`. */
  services(): IterableIterator<string> {
    return this.claims.keys();
  }

  private recount(service: string): void {
    const n = this.conflicts(service).length;
    this.lostCount += n - (this.lostBy.get(service) ?? 0);
    if (n === 0) this.lostBy.delete(service);
    else this.lostBy.set(service, n);
  }
}

/** One line for a conflict, naming both Services. */
export function describeConflict({ loser, owner }: FrontendConflict): string {
  const what = loser.field === 'nodePort' ? loser.frontend : `${loser.field} ${loser.frontend}`;
  const why =
    owner.allocated !== loser.allocated
      ? 'allocated by the API server'
      : owner.createdAt !== loser.createdAt
        ? 'created earlier'
        : 'first by namespace/name';
  return `Service ${loser.service}: ${what} is owned by Service ${owner.service} (${owner.field}, ${why}); not programmed for this Service`;
}
