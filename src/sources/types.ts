/*
 * What every source of Kubernetes objects (manifest files, the API server) offers the agent: its
 * first complete view, then deltas. A delta names only the objects that changed, each with what
 * it was before and what it is now (kube-proxy's ServiceChangeTracker.Update(previous, current)),
 * so nothing downstream compares or copies the whole cluster per event.
 */
import type { ClusterObjects, EndpointSliceObject, ServiceObject } from '../model/k8s.js';
import type { Change } from '../sync/tracker.js';

/** The objects that changed in one burst, keyed `namespace/name` (current null = deleted). */
export interface ObjectDeltas {
  services: ReadonlyMap<string, Change<ServiceObject>>;
  endpointSlices: ReadonlyMap<string, Change<EndpointSliceObject>>;
}

export interface ClusterSource {
  /** Starts following; resolves once the first complete view is known (initial list / read). */
  start(): Promise<void>;
  /**
   * Whether that first complete view is in (kube-proxy's informer HasSynced): until then current()
   * may be missing objects, and a sync from it would delete what is programmed.
   */
  hasSynced(): boolean;
  stop(): Promise<void>;
  /** The current objects (a snapshot the caller may keep): the first view, and for one-shot reads. */
  current(): ClusterObjects;
  /** Called after start() with each burst of changes. */
  onChange(listener: (deltas: ObjectDeltas) => void): void;
}
