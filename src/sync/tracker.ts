/*
 * Change tracking, as kube-proxy's ServiceChangeTracker / EndpointsChangeTracker: event handlers
 * only record, per object key, the state before the first pending change and the latest state;
 * a change that returns an object to where it started (add then delete, update then revert) is
 * dropped, so a sync only ever sees real differences. The sync function consumes the pending
 * changes with `take()`.
 */
import type { ClusterObjects, EndpointSliceObject, ServiceObject } from '../model/k8s.js';
import { objectKey } from '../model/k8s.js';

/** One pending change: the object as the last sync saw it and as it is now (null = absent). */
export interface Change<T> {
  previous: T | null;
  current: T | null;
}

/** Structural equality for plain data (objects, arrays, Maps, Sets, primitives). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  }
  if (a instanceof Map || b instanceof Map) {
    if (!(a instanceof Map && b instanceof Map) || a.size !== b.size) return false;
    for (const [k, v] of a) {
      if (!b.has(k) || !deepEqual(v, b.get(k))) return false;
    }
    return true;
  }
  if (a instanceof Set || b instanceof Set) {
    if (!(a instanceof Set && b instanceof Set) || a.size !== b.size) return false;
    for (const v of a) if (!b.has(v)) return false;
    return true;
  }
  if (Object.getPrototypeOf(a) !== Object.getPrototypeOf(b)) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const ka = Object.keys(ra);
  if (ka.length !== Object.keys(rb).length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(rb, k) && deepEqual(ra[k], rb[k]));
}

/** Pending changes of one kind of object, keyed `namespace/name`. */
export class ObjectChangeTracker<T> {
  private changes = new Map<string, Change<T>>();

  constructor(private readonly equal: (a: T, b: T) => boolean = deepEqual) {}

  /**
   * Records that `key` went from `previous` to `current` (null = absent). If a change for the key
   * is already pending, its original `previous` is kept; if the result equals that original, the
   * pending change disappears. Returns whether any change is pending afterwards (kube-proxy's
   * `Update` contract: "should the proxy sync?").
   */
  update(key: string, previous: T | null, current: T | null): boolean {
    const pending = this.changes.get(key);
    const original = pending ? pending.previous : previous;
    if (this.same(original, current)) {
      this.changes.delete(key);
    } else {
      this.changes.set(key, { previous: original, current });
    }
    return this.changes.size > 0;
  }

  /** Whether a change is pending for `key`. */
  has(key: string): boolean {
    return this.changes.has(key);
  }

  get size(): number {
    return this.changes.size;
  }

  /** Keys with a pending change. */
  pending(): Set<string> {
    return new Set(this.changes.keys());
  }

  /** Returns and clears the pending changes. */
  take(): Map<string, Change<T>> {
    const taken = this.changes;
    this.changes = new Map();
    return taken;
  }

  private same(a: T | null, b: T | null): boolean {
    if (a === null || b === null) return a === b;
    return this.equal(a, b);
  }
}

/** What a snapshot or a single update changed. */
export interface ClusterDiff {
  changed: boolean;
  /** `namespace/name` of every Service whose object or endpoint slices differ. */
  affectedServices: Set<string>;
}

/** Everything pending since the last `take()`. */
export interface ClusterChanges {
  services: Map<string, Change<ServiceObject>>;
  endpointSlices: Map<string, Change<EndpointSliceObject>>;
  affectedServices: Set<string>;
}

/** The Service (`namespace/name`) an endpoint slice belongs to, if any. */
function sliceService(slice: EndpointSliceObject | null): string | null {
  return slice && slice.serviceName !== null ? `${slice.namespace}/${slice.serviceName}` : null;
}

/**
 * Services and endpoint slices together: what the tracker last saw of each (its view of the
 * cluster) and the changes pending since the last sync. Sources that deliver events call
 * `setService` / `setEndpointSlice`; sources that deliver whole snapshots (manifest files) call
 * `applySnapshot`.
 */
export class ClusterChangeTracker {
  readonly services = new ObjectChangeTracker<ServiceObject>();
  readonly endpointSlices = new ObjectChangeTracker<EndpointSliceObject>();
  private seenServices = new Map<string, ServiceObject>();
  private seenSlices = new Map<string, EndpointSliceObject>();
  /** Slice keys by the Service (`namespace/name`) they belong to. */
  private slicesByService = new Map<string, Set<string>>();

  /** Records the current state of one Service (null = deleted); returns what that changed. */
  setService(key: string, current: ServiceObject | null): ClusterDiff {
    const previous = this.seenServices.get(key) ?? null;
    if (current) this.seenServices.set(key, current);
    else this.seenServices.delete(key);
    if (previous === null ? current === null : current !== null && deepEqual(previous, current)) {
      return { changed: false, affectedServices: new Set() };
    }
    this.services.update(key, previous, current);
    return { changed: true, affectedServices: new Set([key]) };
  }

  /** Records the current state of one endpoint slice (null = deleted); returns what that changed. */
  setEndpointSlice(key: string, current: EndpointSliceObject | null): ClusterDiff {
    const previous = this.seenSlices.get(key) ?? null;
    if (current) this.seenSlices.set(key, current);
    else this.seenSlices.delete(key);
    const before = sliceService(previous);
    const after = sliceService(current);
    if (before !== after) {
      if (before !== null) {
        const set = this.slicesByService.get(before);
        set?.delete(key);
        if (set?.size === 0) this.slicesByService.delete(before);
      }
      if (after !== null) this.slicesByService.set(after, (this.slicesByService.get(after) ?? new Set()).add(key));
    }
    if (previous === null ? current === null : current !== null && deepEqual(previous, current)) {
      return { changed: false, affectedServices: new Set() };
    }
    this.endpointSlices.update(key, previous, current);
    const affected = new Set<string>();
    for (const svc of [sliceService(previous), sliceService(current)]) if (svc) affected.add(svc);
    return { changed: true, affectedServices: affected };
  }

  /** Diffs a complete snapshot against what was last seen and records the differences. */
  applySnapshot(objects: ClusterObjects): ClusterDiff {
    const affected = new Set<string>();
    let changed = false;
    const merge = (d: ClusterDiff): void => {
      changed ||= d.changed;
      for (const s of d.affectedServices) affected.add(s);
    };
    for (const key of [...this.seenServices.keys()]) {
      if (!objects.services.has(key)) merge(this.setService(key, null));
    }
    for (const [key, svc] of objects.services) merge(this.setService(key, svc));
    for (const key of [...this.seenSlices.keys()]) {
      if (!objects.endpointSlices.has(key)) merge(this.setEndpointSlice(key, null));
    }
    for (const [key, slice] of objects.endpointSlices) merge(this.setEndpointSlice(key, slice));
    return { changed, affectedServices: affected };
  }

  /** Whether any change is pending. */
  hasPending(): boolean {
    return this.services.size > 0 || this.endpointSlices.size > 0;
  }

  /** Returns and clears the pending changes, with the Services they affect. */
  take(): ClusterChanges {
    const services = this.services.take();
    const endpointSlices = this.endpointSlices.take();
    const affectedServices = new Set(services.keys());
    for (const change of endpointSlices.values()) {
      for (const svc of [sliceService(change.previous), sliceService(change.current)]) {
        if (svc) affectedServices.add(svc);
      }
    }
    return { services, endpointSlices, affectedServices };
  }

  /** The tracker's view of the cluster: a copy the caller may keep. */
  current(): ClusterObjects {
    return { services: new Map(this.seenServices), endpointSlices: new Map(this.seenSlices) };
  }

  /** The same view, live: to read now, never to keep or change (no copy of the cluster per sync). */
  view(): { services: ReadonlyMap<string, ServiceObject>; endpointSlices: ReadonlyMap<string, EndpointSliceObject> } {
    return { services: this.seenServices, endpointSlices: this.seenSlices };
  }

  /** The endpoint slices of one Service (`namespace/name`), in slice-name order. */
  slicesOf(service: string): EndpointSliceObject[] {
    const keys = this.slicesByService.get(service);
    if (keys === undefined) return [];
    const out: EndpointSliceObject[] = [];
    for (const k of keys) {
      const slice = this.seenSlices.get(k);
      if (slice) out.push(slice);
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
}

/** Builds a ClusterObjects from lists, keyed `namespace/name`. */
export function clusterObjects(
  services: Iterable<ServiceObject>,
  endpointSlices: Iterable<EndpointSliceObject>,
): ClusterObjects {
  const out: ClusterObjects = { services: new Map(), endpointSlices: new Map() };
  for (const s of services) out.services.set(objectKey(s), s);
  for (const e of endpointSlices) out.endpointSlices.set(objectKey(e), e);
  return out;
}
