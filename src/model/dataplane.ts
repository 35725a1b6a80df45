/*
 * What the agent drives: one dataplane per node (BPF maps, or kube-proxy's iptables / nftables /
 * IPVS rules), fed the complete desired state on every sync. Each dataplane writes only what
 * differs from what it knows it has written, and re-reads the kernel's state on a full sync.
 */
import type { DesiredState } from './types.js';

export interface SyncResult {
  /** Services (frontends) programmed after this sync. */
  services: number;
  /** Backends programmed after this sync. */
  backends: number;
  /** Entries or rules written and deleted by this sync. */
  writes: number;
  deletes: number;
  /** Services that could not be programmed (e.g. a full map); they keep their previous state. */
  failed: Array<{ service: string; error: string }>;
  /** Service keys whose programming changed in this sync (for network-programming latency). */
  changed: string[];
}

export interface Dataplane {
  readonly mode: string;
  /**
   * Makes the dataplane match `state`. `full` re-reads what is really installed first (after a
   * start, a failure, or periodically) instead of trusting what was last written. `changed`
   * names the Services (`namespace/name`) whose entries may differ from the last sync; the
   * others are as last synced, and a dataplane may skip them (kube-proxy's partial syncs).
   * null: any may have changed. `reread` (default: `full`) asks a dataplane that can trust what
   * it wrote (BPF maps) to re-read the kernel's state first: the agent asks on start and after a
   * failure only, so the periodic full sync costs no map walk.
   */
  sync(state: DesiredState, full: boolean, changed?: ReadonlySet<string> | null, reread?: boolean): Promise<SyncResult>;
  /** Releases handles; installed state stays so traffic keeps flowing. */
  close(): Promise<void>;
}
