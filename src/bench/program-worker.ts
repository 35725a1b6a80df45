/*
 * Times the control plane of one dataplane, inside a bench lab's node namespace (the rule tools
 * act on the namespace they run in, so the bench starts this script there with `nsenter --net=`):
 *   1. removes whatever the mode had installed, so the node starts from nothing;
 *   2. sync_all: one full sync of the N Services, from nothing, through the mode's own Dataplane
 *      (BpfDataplane on freshly loaded maps; the iptables / nftables / IPVS dataplanes);
 *   3. sync_one: one Service's endpoints changed (a backend removed) and synced on top of N, then
 *      changed back, `repeats` times each way;
 *   4. for the iptables modes, reads KUBE-SERVICES back to report where the measured Services'
 *      rules really sit.
 * The node is left programmed with the N Services as given (the agent then takes over).
 *
 *   node program-worker.js REQUEST.json      (writes the result to request.resultFile)
 */
import { writeFileSync } from 'node:fs';
import { loadManifestDir } from '../sources/manifest.js';
import { buildDesiredState } from '../model/build.js';
import type { ClusterObjects } from '../model/k8s.js';
import type { DesiredState, NodeInfo } from '../model/types.js';
import type { Dataplane } from '../model/dataplane.js';
import { cleanupMode, createFallbackDataplane } from '../modes/index.js';
import { renderOptionsFromCli } from '../modes/cli.js';
import { IptablesTools } from '../modes/tools.js';
import { readJsonFile } from '../json-file.js';
import { PROGRAM_REQUEST, type ProgramRequest, type ProgramResult } from './program-records.js';

function elapsedMs(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** The objects with one backend fewer in `service`'s slices. */
function withOneBackendLess(objects: ClusterObjects, service: string): ClusterObjects {
  const slices = new Map(objects.endpointSlices);
  let changed = false;
  for (const [key, slice] of objects.endpointSlices) {
    if (`${slice.namespace}/${slice.serviceName ?? ''}` !== service || slice.endpoints.length === 0) continue;
    slices.set(key, { ...slice, endpoints: slice.endpoints.slice(0, -1) });
    changed = true;
  }
  if (!changed) throw new Error(`no endpoints to change for ${service}`);
  return { services: objects.services, endpointSlices: slices };
}

/** Time spent inside the methods of a set of map objects, summed. */
class MapClock {
  private ns = 0n;

  /** The same maps, each method call timed. */
  wrap<T extends object>(maps: T): T {
    const wrapped: Record<string, unknown> = {};
    for (const [role, map] of Object.entries(maps) as Array<[string, object]>) {
      wrapped[role] = new Proxy(map, {
        get: (target, prop) => {
          const v: unknown = Reflect.get(target, prop, target);
          if (typeof v !== 'function') return v;
          return (...args: unknown[]): unknown => {
            const start = process.hrtime.bigint();
            try {
              return (v as (...a: unknown[]) => unknown).apply(target, args);
            } finally {
              this.ns += process.hrtime.bigint() - start;
            }
          };
        },
      });
    }
    return wrapped as T;
  }

  /** Milliseconds since the last take. */
  take(): number {
    const ms = Number(this.ns) / 1e6;
    this.ns = 0n;
    return ms;
  }
}

async function openDataplane(req: ProgramRequest, clock: MapClock): Promise<{ dataplane: Dataplane; close: () => void }> {
  if (req.mode === 'bpf' || req.mode === 'bpf-tc') {
    const { LoadedDatapath } = await import('../bpf/datapath.js');
    const { BpfDataplane } = await import('../bpf/reconciler/reconciler.js');
    const loaded = LoadedDatapath.load(req.pinDir);
    return { dataplane: new BpfDataplane(clock.wrap(loaded.maps), req.pinDir), close: () => loaded.close() };
  }
  const render = renderOptionsFromCli({});
  const dataplane =
    req.mode === 'iptables' || req.mode === 'iptables-nft'
      ? await createFallbackDataplane('iptables', { render, iptablesBackend: req.mode === 'iptables' ? 'legacy' : 'nft' })
      : await createFallbackDataplane(req.mode, { render, iptablesBackend: 'auto' });
  return { dataplane, close: () => undefined };
}

/** Where each measured VIP's TCP rule sits among the service rules of KUBE-SERVICES. */
async function kubeServicesPositions(req: ProgramRequest): Promise<ProgramResult['positions']> {
  if (req.mode !== 'iptables' && req.mode !== 'iptables-nft') return null;
  const save = await new IptablesTools(req.mode === 'iptables' ? 'legacy' : 'nft').save('nat');
  const rules = save.split('\n').filter((l) => l.startsWith('-A KUBE-SERVICES ') && / -d \S+\/32 /.test(l));
  const out: Record<string, { position: number; of: number }> = {};
  for (const [placement, vip] of Object.entries(req.measuredVips)) {
    const i = rules.findIndex((l) => l.includes(` -d ${vip}/32 `) && / -p tcp /.test(l));
    if (i >= 0) out[placement] = { position: i + 1, of: rules.length };
  }
  return out;
}

async function main(requestFile: string): Promise<void> {
  const req = readJsonFile(requestFile, PROGRAM_REQUEST);
  await cleanupMode(req.mode === 'iptables-nft' ? 'iptables' : req.mode === 'bpf-tc' ? 'bpf' : req.mode, { pinDir: req.pinDir });
  const load = await loadManifestDir(req.manifestsDir);
  if (load.problems.length > 0) throw new Error(`bench manifests have problems: ${String(load.problems[0])}`);
  const node: NodeInfo = { name: req.nodeName, zone: null, ips: [] };
  const state: DesiredState = buildDesiredState(load.objects, node);
  const changed: DesiredState = buildDesiredState(withOneBackendLess(load.objects, req.changeService), node);

  const clock = new MapClock();
  const { dataplane, close } = await openDataplane(req, clock);
  const bpf = req.mode === 'bpf' || req.mode === 'bpf-tc';
  try {
    clock.take();
    let start = process.hrtime.bigint();
    const first = await dataplane.sync(state, true);
    const syncAllMs = elapsedMs(start);
    const mapAllMs = clock.take();
    const mapOneMs: number[] = [];
    if (first.failed.length > 0) throw new Error(`sync failed for ${first.failed.length} services: ${first.failed[0]?.error}`);
    const syncOneMs: number[] = [];
    for (let i = 0; i < req.repeats; i++) {
      for (const next of [changed, state]) {
        start = process.hrtime.bigint();
        // As the agent does: the change trackers name the one Service that changed.
        const res = await dataplane.sync(next, false, new Set([req.changeService]));
        syncOneMs.push(elapsedMs(start));
        mapOneMs.push(clock.take());
        if (res.failed.length > 0) throw new Error(`sync of one change failed: ${res.failed[0]?.error}`);
      }
    }
    const result: ProgramResult = {
      services: first.services,
      syncAllMs,
      syncOneMs,
      mapAllMs: bpf ? mapAllMs : null,
      mapOneMs: bpf ? mapOneMs : null,
      positions: await kubeServicesPositions(req),
    };
    writeFileSync(req.resultFile, JSON.stringify(result));
  } finally {
    await dataplane.close();
    close();
  }
}

const requestFile = process.argv[2];
if (requestFile === undefined) {
  process.stderr.write('usage: program-worker.js REQUEST.json\n');
  process.exitCode = 2;
} else {
  main(requestFile).catch((err: unknown) => {
    process.stderr.write(`program-worker: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
