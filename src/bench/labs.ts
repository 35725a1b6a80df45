/*
 * The bench's labs: one `vipr lab` per mode (`<prefix>-bpf`, `<prefix>-ipt`, ...), so every
 * dataplane runs on a node namespace no other mode ever touched (a legacy nat table or an nft
 * ruleset left registered by one mode would tax the next one's packets), plus one for the
 * `direct` floor whose node has nothing loaded at all. Each backend runs the echo responder
 * pinned to the bench CPU; the client may reuse TIME_WAIT ports, so tens of thousands of short
 * connections per run never run out of source ports.
 */
import { join } from 'node:path';
import { labDown, labUp } from '../lab/lab.js';
import { run } from '../lab/exec.js';
import { listNetns } from '../lab/network.js';
import { readLabState } from '../lab/state.js';
import { addressOfFamily, labNetnsPattern, planLab, type LabPlan } from '../lab/topology.js';
import type { IpFamily } from '../model/ip.js';
import { startInNetns, stopProcesses, type StartedProcess } from '../lab/processes.js';
import type { LabState } from '../lab/state.js';
import { benchBinary } from '../lab/traffic-programs.js';
import { labNameFor, RESPONDER_TCP_PORT, RESPONDER_UDP_PORT, type BenchFamilies, type BenchMode } from './plan.js';

export interface BenchLab {
  mode: BenchMode;
  name: string;
  plan: LabPlan;
  state: LabState;
  responders: StartedProcess[];
}

/** Whether anything of lab `name` exists (a state file or namespaces). */
export async function labExists(name: string): Promise<boolean> {
  if ((await readLabState(name)).kind !== 'missing') return true;
  const pattern = labNetnsPattern(name);
  return (await listNetns()).some((ns) => pattern.test(ns));
}

/**
 * Brings up the lab of `mode`. A lab of the same name is the bench's own, left by an interrupted
 * run: it is removed first.
 */
export async function benchLabUp(prefix: string, mode: BenchMode, backends: number, cpu: number, families: BenchFamilies): Promise<BenchLab> {
  const name = labNameFor(prefix, mode);
  if (await labExists(name)) await labDown(name);
  // IPv4 alone: the lab as it was before IPv6; with IPv6 the dual-stack lab.
  const ipFamily = families.length === 1 ? 'ipv4' : 'dual';
  const plan = planLab({ name, backends, ipFamily });
  const { state } = await labUp({ name, backends, ipFamily, manifestsDir: null, agent: false });
  const lab: BenchLab = { mode, name, plan, state, responders: [] };
  // tcp_tw_reuse and the port range are IPv4's and IPv6's alike (net.ipv4.* names notwithstanding).
  await run('sysctl', ['-q', '-w', 'net.ipv4.tcp_tw_reuse=1', 'net.ipv4.ip_local_port_range=1024 65535'], { netns: plan.client.netns });
  for (const be of plan.nodes[0]?.backends ?? []) {
    const p = await startInNetns({
      netns: be.netns,
      argv: ['taskset', '-c', String(cpu), benchBinary('responder'), '--tcp', String(RESPONDER_TCP_PORT), '--udp', String(RESPONDER_UDP_PORT)],
      log: join(state.stateDir, `${be.name}-responder.log`),
      ready: (text) => text.includes('responder: listening'),
      timeoutMs: 10_000,
    });
    lab.responders.push(p);
  }
  return lab;
}

/** Stops the responders and removes the lab; returns what could not be removed. */
export async function benchLabDown(name: string, responders: StartedProcess[]): Promise<string[]> {
  await stopProcesses(responders, 2000);
  const res = await labDown(name);
  return res.failures;
}

export function nodeNetns(lab: BenchLab): string {
  const node = lab.plan.nodes[0];
  if (!node) throw new Error('bench lab has no node');
  return node.netns;
}

/** The backends' addresses of `family` ([] when the lab has none of that family). */
export function backendIps(lab: BenchLab, family: IpFamily = 'IPv4'): string[] {
  return (lab.plan.nodes[0]?.backends ?? []).flatMap((b) => {
    const ip = addressOfFamily(b.ips, family);
    return ip === null ? [] : [ip];
  });
}
