/*
 * What every source of Kubernetes objects (manifest files, the API server) offers the agent:
 * the full current set of objects, and a callback whenever it changes.
 */
import type { ClusterObjects } from '../model/k8s.js';

export interface ClusterSource {
  /** Starts following; resolves once the first complete view is known (initial list / read). */
  start(): Promise<void>;
  /**
   * Whether that first complete view is in (kube-proxy's informer HasSynced): until then current()
   * may be missing objects, and a sync from it would delete what is programmed.
   */
  hasSynced(): boolean;
  stop(): Promise<void>;
  /** The current objects (a snapshot the caller may keep). */
  current(): ClusterObjects;
  /** Called after every change with the complete current set. */
  onChange(listener: (objects: ClusterObjects) => void): void;
}
