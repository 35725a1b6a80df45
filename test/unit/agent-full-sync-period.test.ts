/*
 * The sync period counts from the end of the last full sync, as kube-proxy's lastFullSync: on a
 * node where a full sync takes longer than --sync-period (iptables-nft at 1,000 Services under
 * emulation: 44-71 s against 30 s), a change that arrives during or just after one is programmed
 * by a partial sync, not by another full one.
 */
import { Agent } from '../../src/sync/agent.js';
import type { Clock, TimerHandle } from '../../src/sync/runner.js';
import type { Dataplane, SyncResult } from '../../src/model/dataplane.js';
import type { DesiredState } from '../../src/model/types.js';
import type { EndpointSliceObject } from '../../src/model/k8s.js';
import type { Logger } from '../../src/log.js';
import { clusterObjects } from '../../src/sync/tracker.js';
import { serviceObject } from '../helpers/objects.js';

const SYNC_PERIOD_MS = 30_000;
const FULL_SYNC_MS = 45_000;
const PARTIAL_SYNC_MS = 1_000;

/** Time moves only when a sync takes it forward; timers are kept and never fire on their own. */
class SteppedClock implements Clock {
  t = 1_000_000;
  now(): number {
    return this.t;
  }
  setTimeout(): TimerHandle {
    return 0;
  }
  clearTimeout(): void {}
}

/** A dataplane whose full syncs take FULL_SYNC_MS of the clock and partial ones PARTIAL_SYNC_MS. */
class SlowFullDataplane implements Dataplane {
  readonly mode = 'slow-full';
  readonly calls: Array<{ full: boolean; startedAt: number }> = [];
  private waiters: Array<() => void> = [];
  constructor(private readonly clock: SteppedClock) {}
  async sync(state: DesiredState, full: boolean): Promise<SyncResult> {
    this.calls.push({ full, startedAt: this.clock.t });
    this.clock.t += full ? FULL_SYNC_MS : PARTIAL_SYNC_MS;
    this.waiters.splice(0).forEach((w) => w());
    return { services: state.services.length, backends: 0, writes: 0, deletes: 0, failed: [], changed: [] };
  }
  next(): Promise<void> {
    return new Promise((r) => this.waiters.push(r));
  }
  async close(): Promise<void> {}
}

function slice(name: string, ips: string[]): EndpointSliceObject {
  return {
    namespace: 'default', name: `${name}-1`, serviceName: name, addressType: 'IPv4',
    ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, nodeName: null, zone: null, zoneHints: null })),
  };
}

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined, child: () => quiet } as unknown as Logger;

test('a full sync longer than the sync period is followed by partial syncs, and the period counts from its end', async () => {
  const clock = new SteppedClock();
  const plane = new SlowFullDataplane(clock);
  const agent = new Agent({
    dataplane: plane, node: { name: 'n', zone: null, ips: [] }, minSyncPeriodMs: 0, syncPeriodMs: SYNC_PERIOD_MS, clock, log: quiet,
  });
  const a = serviceObject({ name: 'a', clusterIPs: ['10.0.0.1'] });
  const b = serviceObject({ name: 'b', clusterIPs: ['10.0.0.2'] });
  let synced = plane.next();
  agent.updateObjects(clusterObjects([a, b], [slice('a', ['10.1.0.1', '10.1.0.2']), slice('b', ['10.2.0.1'])]));
  agent.start();
  agent.sourceSynced();
  await synced;
  const firstEnd = clock.t;

  // An endpoint change right after the 45 s first sync: 45 s since it started, none since it ended.
  synced = plane.next();
  agent.applyDeltas({ services: new Map(), endpointSlices: new Map([['default/a-1', { previous: null, current: slice('a', ['10.1.0.1']) }]]) });
  await synced;
  // Another one while nothing else happened for less than the period since that full sync ended.
  clock.t = Math.max(clock.t, firstEnd + SYNC_PERIOD_MS - 5_000);
  synced = plane.next();
  agent.applyDeltas({ services: new Map(), endpointSlices: new Map([['default/b-1', { previous: null, current: slice('b', ['10.2.0.1', '10.2.0.2']) }]]) });
  await synced;
  // A full period after the full sync ended, the next sync is full again.
  clock.t = Math.max(clock.t, firstEnd + SYNC_PERIOD_MS);
  synced = plane.next();
  agent.applyDeltas({ services: new Map(), endpointSlices: new Map([['default/a-1', { previous: null, current: slice('a', ['10.1.0.3']) }]]) });
  await synced;
  await agent.stop();

  expect(plane.calls.map((c) => c.full)).toEqual([true, false, false, true]);
});
