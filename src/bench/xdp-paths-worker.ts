/*
 * What each path of the XDP program costs, with BPF_PROG_TEST_RUN, run inside the north-south
 * lab's balancing node (its routes and neighbours are what bpf_fib_lookup sees) on the maps its
 * agent programmed. Fresh instances of the programs are loaded over the pinned maps; the attached
 * one is not touched.
 *
 * Warm (as at line rate), the figure against the target: one call of `repeat` runs (new flows:
 * `newFlows / 4`, each a flow of its own) of the bench's harness (bench/xdp_paths.bpf.c), which
 * writes the frame back from a map before each run and then runs the XDP program's IPv4 code,
 * less the same number of runs of the harness alone. A plain `repeat` would run the program again
 * over the frame it has just rewritten (after one run a NodePort packet is a packet from this
 * node to a pod), timing another path altogether.
 *
 * Cold, beside it: the median of `newFlows` calls of one run each of the attached program's
 * object, a fresh copy of the frame per call, less a single run's fixed cost (a frame that is not
 * IPv4, parsed, counted and passed: its single-run median less its mean over `repeat` runs).
 * A syscall between two runs leaves the caches to everything else.
 * New flows come from a fresh client address and port each run; tracked ones repeat one flow.
 *
 * Every path checks it went where its name says (verdict, destination rewritten or not), in both
 * measurements, so a figure never belongs to a different path than the one reported.
 *
 *   node xdp-paths-worker.js REQUEST-JSON      (prints the result as one JSON line)
 */
import { z } from 'zod';
import { existsSync } from 'node:fs';
import { LoadedDatapath } from '../bpf/datapath.js';
import * as libbpf from '../bpf/libbpf.js';
import { progTestRun } from '../bpf/libbpf.js';
import { join } from 'node:path';
import { packageRoot } from '../paths.js';
import { median } from './results.js';
import { XdpPathsRequestSchema, type XdpPath, type XdpPathResult } from './north-south-plan.js';
import { ipv4Frame, parseIpv4Frame, type EthAddrs, type Ipv4Flow } from './frames.js';

const VERDICTS = ['aborted', 'drop', 'pass', 'tx', 'redirect'] as const;
type Verdict = (typeof VERDICTS)[number];

function verdictName(v: number): Verdict {
  const name = VERDICTS[v];
  if (name === undefined) throw new Error(`XDP returned ${v}, not an XDP action`);
  return name;
}

interface Measured {
  verdict: Verdict;
  /** What the program made of the first frame. */
  first: Buffer;
  /** Median single-run duration, ns. */
  ns: number;
}

/** One run per frame; every run must end in the same verdict. */
function runSingles(path: string, prog: number, frames: Buffer[]): Measured {
  const ns: number[] = [];
  let verdict: Verdict | null = null;
  let first: Buffer | null = null;
  for (const f of frames) {
    const r = progTestRun(prog, f, 1, { xdpMeta: true });
    const v = verdictName(r.retval);
    if (verdict !== null && v !== verdict) throw new Error(`${path}: XDP said ${verdict}, then ${v}`);
    verdict = v;
    first ??= r.data;
    ns.push(r.durationNs);
  }
  if (verdict === null || first === null) throw new Error(`${path}: no runs`);
  return { verdict, first, ns: median(ns) };
}

/** bench/xdp_paths.bpf.c's struct harness_frame. */
const HARNESS_FRAME_BYTES = 60;
const HARNESS_VALUE_BYTES = HARNESS_FRAME_BYTES + 8;

/** The bench's harness, loaded over the agent's pinned maps. */
class Harness {
  private constructor(
    private readonly obj: libbpf.ObjectHandle,
    private readonly frameMap: number,
    readonly restoreProg: number,
    readonly lbProg: number,
  ) {}

  static load(pinDir: string): Harness {
    const path = join(packageRoot(), 'bench', 'bin', 'xdp_paths.bpf.o');
    if (!existsSync(path)) throw new Error(`${path} is missing: run 'make build'`);
    const obj = libbpf.openObject(path, pinDir);
    try {
      libbpf.loadObject(obj, 'xdp_paths.bpf.o');
      const prog = (name: string): number => libbpf.programFd(libbpf.findProgram(obj, name), name);
      return new Harness(obj, libbpf.mapFd(libbpf.findMap(obj, 'xdp_paths_frame'), 'xdp_paths_frame'), prog('xdp_paths_restore'), prog('xdp_paths_lb'));
    } catch (err) {
      libbpf.closeObject(obj);
      throw err;
    }
  }

  /** The frame every run starts from; with newFlowPerRun, run i adds i to its source port. */
  setFrame(frame: Buffer, newFlowPerRun: boolean): void {
    if (frame.length !== HARNESS_FRAME_BYTES) throw new Error(`harness frames are ${HARNESS_FRAME_BYTES} bytes, not ${frame.length}`);
    const value = Buffer.alloc(HARNESS_VALUE_BYTES);
    frame.copy(value, 0);
    value.writeUInt32LE(newFlowPerRun ? 1 : 0, HARNESS_FRAME_BYTES);
    libbpf.mapUpdate(this.frameMap, Buffer.alloc(4), value, 0, 'xdp_paths_frame');
  }

  close(): void {
    libbpf.closeObject(this.obj);
  }
}

/** Pads a frame to the shortest Ethernet frame, as the wire does (the harness restores that much). */
function padded(frame: Buffer): Buffer {
  return frame.length >= HARNESS_FRAME_BYTES ? frame : Buffer.concat([frame, Buffer.alloc(HARNESS_FRAME_BYTES - frame.length)]);
}

interface Warm {
  verdict: Verdict;
  /** The frame after the last run. */
  last: Buffer;
  /** Mean ns per run of the harness and the program, less the harness alone. */
  ns: number;
  /** Mean ns per run of the harness alone. */
  harnessNs: number;
  runs: number;
}

function runWarm(path: string, h: Harness, frame: Buffer, runs: number, newFlowPerRun: boolean): Warm {
  const f = padded(frame);
  h.setFrame(f, newFlowPerRun);
  const base = progTestRun(h.restoreProg, f, runs);
  if (base.retval !== 2) throw new Error(`${path}: the harness alone said ${base.retval}, expected XDP_PASS`);
  // The harness alone made no flows: the program's runs start again from the frame's own.
  h.setFrame(f, newFlowPerRun);
  const r = progTestRun(h.lbProg, f, runs, { xdpMeta: true });
  return { verdict: verdictName(r.retval), last: r.data, ns: Math.max(0, r.durationNs - base.durationNs), harnessNs: base.durationNs, runs };
}

function check(path: XdpPath, m: Measured, verdicts: readonly Verdict[], rewritten: boolean, input: Ipv4Flow): void {
  if (!verdicts.includes(m.verdict)) throw new Error(`${path}: XDP said ${m.verdict}, expected ${verdicts.join(' or ')}`);
  if (m.verdict === 'drop') return;
  const out = parseIpv4Frame(m.first);
  const changed = out.daddr !== input.daddr || out.dport !== input.dport;
  if (changed !== rewritten) throw new Error(`${path}: destination ${changed ? 'rewritten' : 'left alone'} (${out.daddr}:${out.dport}), expected otherwise`);
}

function main(raw: string): void {
  const req = XdpPathsRequestSchema.parse(JSON.parse(raw));
  const dp = LoadedDatapath.load(req.pinDir);
  const harness = Harness.load(req.pinDir);
  try {
    const prog = dp.xdpProgram();
    const eth: EthAddrs = { src: req.clientMac, dst: req.nodeMac };
    const runs = req.newFlows;
    // New flows timed warm, a flow each: a quarter of the cold ones (remote ones take a SNAT port each).
    const warmNewFlows = Math.max(1, Math.floor(req.newFlows / 4));
    const client = (i: number): { saddr: string; sport: number } => ({
      // Addresses the flood never uses, so every "new" flow is one the maps have not seen.
      saddr: `${req.newFlowPrefix}.${200 + Math.floor(i / 60_000)}`,
      sport: 1024 + (i % 60_000),
    });
    const same = (f: Ipv4Flow, e: EthAddrs = eth): Buffer[] => Array.from({ length: runs }, () => ipv4Frame(e, f));
    const measured: Array<{ path: XdpPath; m: Measured; w: Warm }> = [];
    const warm = (path: XdpPath, f: Ipv4Flow, verdicts: readonly Verdict[], rewritten: boolean, e: EthAddrs = eth): Warm => {
      const w = runWarm(path, harness, ipv4Frame(e, f), req.repeat, false);
      check(path, { verdict: w.verdict, first: w.last, ns: w.ns }, verdicts, rewritten, f);
      return w;
    };
    const warmNew = (path: XdpPath, f: Ipv4Flow, verdicts: readonly Verdict[]): Warm => {
      const w = runWarm(path, harness, ipv4Frame(eth, f), warmNewFlows, true);
      check(path, { verdict: w.verdict, first: w.last, ns: w.ns }, verdicts, true, f);
      return w;
    };

    // A single run's fixed cost: an ARP-typed frame, which the program only counts and passes.
    const notIpv4 = Buffer.concat([ipv4Frame(eth, { proto: 'udp', saddr: '0.0.0.0', sport: 1, daddr: '0.0.0.0', dport: 1 }).subarray(0, 12), Buffer.from([0x08, 0x06]), Buffer.alloc(46)]);
    const notIpv4Single = runSingles('a non-IPv4 frame', prog, Array.from({ length: runs }, () => Buffer.from(notIpv4)));
    if (notIpv4Single.verdict !== 'pass') throw new Error(`a non-IPv4 frame: XDP said ${notIpv4Single.verdict}, expected pass`);
    const overhead = Math.max(0, notIpv4Single.ns - progTestRun(prog, notIpv4, req.repeat).durationNs);

    // Not a service: a SYN to the node's SSH port.
    const notService: Ipv4Flow = { proto: 'tcp', syn: true, saddr: `${req.newFlowPrefix}.199`, sport: 40000, daddr: req.nodeIp, dport: 22 };
    const ns = runSingles('not_service', prog, same(notService));
    check('not_service', ns, ['pass'], false, notService);
    measured.push({ path: 'not_service', m: ns, w: warm('not_service', notService, ['pass'], false) });

    // NodePort, new flows to a local backend (externalTrafficPolicy Local): DNAT, passed to the stack.
    const localFlows = Array.from({ length: runs }, (_, i): Ipv4Flow => ({ proto: 'tcp', syn: true, ...client(i), daddr: req.nodeIp, dport: req.tcpNodePort }));
    const newLocal = runSingles('nodeport_new_local', prog, localFlows.map((f) => ipv4Frame(eth, f)));
    check('nodeport_new_local', newLocal, ['pass'], true, localFlows[0] as Ipv4Flow);
    // Warm: from an address past every cold one.
    const warmLocal: Ipv4Flow = { proto: 'tcp', syn: true, saddr: `${req.newFlowPrefix}.220`, sport: 1024, daddr: req.nodeIp, dport: req.tcpNodePort };
    measured.push({ path: 'nodeport_new_local', m: newLocal, w: warmNew('nodeport_new_local', warmLocal, ['pass']) });

    // The first of those flows, established: the backend's SYN-ACK leaves through the TC egress
    // program (reverse NAT, the flow marked answered), the client's ACK completes the handshake.
    // Then its next packet (an ACK), again and again: DNAT from conntrack.
    const dnat = parseIpv4Frame(newLocal.first);
    const synAck: Ipv4Flow = { proto: 'tcp', tcpFlags: 0x12, saddr: dnat.daddr, sport: dnat.dport, daddr: dnat.saddr, dport: dnat.sport };
    const answered = parseIpv4Frame(progTestRun(dp.programs.egress, ipv4Frame({ src: req.nodeMac, dst: req.clientMac }, synAck)).data);
    if (answered.saddr !== req.nodeIp || answered.sport !== req.tcpNodePort) {
      throw new Error(`nodeport_tracked_local: the backend's SYN-ACK left as ${answered.saddr}:${answered.sport}, not from the NodePort`);
    }
    const trackedLocal: Ipv4Flow = { ...(localFlows[0] as Ipv4Flow), syn: false };
    progTestRun(prog, ipv4Frame(eth, trackedLocal));
    const tl = runSingles('nodeport_tracked_local', prog, same(trackedLocal));
    check('nodeport_tracked_local', tl, ['pass'], true, trackedLocal);
    measured.push({ path: 'nodeport_tracked_local', m: tl, w: warm('nodeport_tracked_local', trackedLocal, ['pass'], true) });

    // NodePort, new flows to another node's backend: DNAT + SNAT, FIB lookup, sent back out.
    // From the external host's own address (its reply must find a neighbour to go out to), on
    // UDP ports the flood does not use.
    const remoteFlows = Array.from({ length: runs }, (_, i): Ipv4Flow => ({
      proto: 'udp', saddr: req.clientIp, sport: 20_000 + (i % 40_000), daddr: req.nodeIp, dport: req.udpNodePort,
    }));
    const newRemote = runSingles('nodeport_new_remote', prog, remoteFlows.map((f) => ipv4Frame(eth, f)));
    check('nodeport_new_remote', newRemote, ['tx', 'redirect'], true, remoteFlows[0] as Ipv4Flow);
    // Warm: ports above every cold one (20,000 + newFlows), still from the external host.
    const warmRemote: Ipv4Flow = { proto: 'udp', saddr: req.clientIp, sport: 20_000 + runs, daddr: req.nodeIp, dport: req.udpNodePort };
    measured.push({ path: 'nodeport_new_remote', m: newRemote, w: warmNew('nodeport_new_remote', warmRemote, ['tx', 'redirect']) });

    const firstRemote = remoteFlows[0] as Ipv4Flow;
    const tr = runSingles('nodeport_tracked_remote', prog, same(firstRemote));
    check('nodeport_tracked_remote', tr, ['tx', 'redirect'], true, firstRemote);
    measured.push({ path: 'nodeport_tracked_remote', m: tr, w: warm('nodeport_tracked_remote', firstRemote, ['tx', 'redirect'], true) });

    // The backend's reply to that flow, back at this node: reverse NAT, sent out to the client.
    const fwd = parseIpv4Frame(newRemote.first);
    const reply: Ipv4Flow = { proto: 'udp', saddr: fwd.daddr, sport: fwd.dport, daddr: fwd.saddr, dport: fwd.sport };
    const peer = { src: req.peerMac, dst: req.nodeMac };
    const rv = runSingles('reply_rev_nat', prog, same(reply, peer));
    check('reply_rev_nat', rv, ['tx', 'redirect'], true, reply);
    const rvWarm = warm('reply_rev_nat', reply, ['tx', 'redirect'], true, peer);
    for (const [how, frame] of [['cold', rv.first], ['warm', rvWarm.last]] as const) {
      const back = parseIpv4Frame(frame);
      if (back.daddr !== firstRemote.saddr || back.dport !== firstRemote.sport || back.saddr !== req.nodeIp || back.sport !== req.udpNodePort) {
        throw new Error(`reply_rev_nat (${how}): the reply left as ${back.saddr}:${back.sport} -> ${back.daddr}:${back.dport}, not from the NodePort to the client`);
      }
    }
    measured.push({ path: 'reply_rev_nat', m: rv, w: rvWarm });

    // Drop: a LoadBalancer IP whose loadBalancerSourceRanges refuse the client.
    const refused: Ipv4Flow = { proto: 'tcp', syn: true, saddr: `${req.newFlowPrefix}.198`, sport: 40001, daddr: req.refusedLbIp, dport: req.refusedLbPort };
    const dr = runSingles('drop_source_range', prog, same(refused));
    check('drop_source_range', dr, ['drop'], false, refused);
    measured.push({ path: 'drop_source_range', m: dr, w: warm('drop_source_range', refused, ['drop'], false) });

    const round1 = (v: number): number => Math.round(v * 10) / 10;
    const results: XdpPathResult[] = measured.map(({ path, m, w }) => ({
      path, ns: round1(w.ns), warmRuns: w.runs, harnessNs: round1(w.harnessNs),
      coldNs: round1(Math.max(0, m.ns - overhead)), singleRunNs: round1(m.ns), verdict: m.verdict, runs,
    }));
    process.stdout.write(`${JSON.stringify({ overheadNs: round1(overhead), paths: results })}\n`);
  } finally {
    harness.close();
    dp.close();
  }
}

const arg = process.argv[2];
if (arg === undefined) {
  process.stderr.write('usage: xdp-paths-worker.js REQUEST-JSON\n');
  process.exitCode = 2;
} else {
  try {
    main(arg);
  } catch (err) {
    process.stderr.write(`xdp-paths-worker: ${err instanceof z.ZodError ? `bad request: ${err.issues[0]?.message}` : err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  }
}
