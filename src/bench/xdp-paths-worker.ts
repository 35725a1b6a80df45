/*
 * What each path of the XDP program costs, with BPF_PROG_TEST_RUN, run inside the north-south
 * lab's balancing node (its routes and neighbours are what bpf_fib_lookup sees) on the maps its
 * agent programmed. A fresh instance of the program is loaded over the pinned maps; the attached
 * one is not touched.
 *
 * Every figure is the median of `runs` calls of one run each, with a fresh copy of the frame per
 * call. `repeat` > 1 would run the program again over the frame it has just rewritten: after the
 * first run a NodePort packet is a packet from this node to a pod, another path altogether. A
 * single run's duration includes the kernel's clock reads and the call's fixed cost: measured as
 * the single-run median of a frame that is not IPv4 (parsed, counted, passed: next to nothing)
 * less its mean over `repeat` runs in one call, and subtracted from every path. Single runs are
 * cold (a syscall between two runs); for the paths that rewrite nothing (not a service, the
 * drop) the mean over `repeat` runs in one call, warm as at line rate, is reported beside them.
 * New flows come from a fresh client address and port each call; tracked ones repeat one flow.
 *
 * Every path checks it went where its name says (verdict, destination rewritten or not), so a
 * figure never belongs to a different path than the one reported.
 *
 *   node xdp-paths-worker.js REQUEST-JSON      (prints the result as one JSON line)
 */
import { z } from 'zod';
import { LoadedDatapath } from '../bpf/datapath.js';
import { progTestRun } from '../bpf/libbpf.js';
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
    const r = progTestRun(prog, f, 1);
    const v = verdictName(r.retval);
    if (verdict !== null && v !== verdict) throw new Error(`${path}: XDP said ${verdict}, then ${v}`);
    verdict = v;
    first ??= r.data;
    ns.push(r.durationNs);
  }
  if (verdict === null || first === null) throw new Error(`${path}: no runs`);
  return { verdict, first, ns: median(ns) };
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
  try {
    const prog = dp.xdpProgram();
    const eth: EthAddrs = { src: req.clientMac, dst: req.nodeMac };
    const runs = req.newFlows;
    const client = (i: number): { saddr: string; sport: number } => ({
      // Addresses the flood never uses, so every "new" flow is one the maps have not seen.
      saddr: `${req.newFlowPrefix}.${200 + Math.floor(i / 60_000)}`,
      sport: 1024 + (i % 60_000),
    });
    const same = (f: Ipv4Flow, e: EthAddrs = eth): Buffer[] => Array.from({ length: runs }, () => ipv4Frame(e, f));
    const measured: Array<{ path: XdpPath; m: Measured }> = [];

    // A single run's fixed cost: an ARP-typed frame, which the program only counts and passes.
    const notIpv4 = Buffer.concat([ipv4Frame(eth, { proto: 'udp', saddr: '0.0.0.0', sport: 1, daddr: '0.0.0.0', dport: 1 }).subarray(0, 12), Buffer.from([0x08, 0x06]), Buffer.alloc(46)]);
    const notIpv4Single = runSingles('a non-IPv4 frame', prog, Array.from({ length: runs }, () => Buffer.from(notIpv4)));
    if (notIpv4Single.verdict !== 'pass') throw new Error(`a non-IPv4 frame: XDP said ${notIpv4Single.verdict}, expected pass`);
    const overhead = Math.max(0, notIpv4Single.ns - progTestRun(prog, notIpv4, req.repeat).durationNs);
    const warm = new Map<XdpPath, number>();

    // Not a service: a SYN to the node's SSH port.
    const notService: Ipv4Flow = { proto: 'tcp', syn: true, saddr: `${req.newFlowPrefix}.199`, sport: 40000, daddr: req.nodeIp, dport: 22 };
    const ns = runSingles('not_service', prog, same(notService));
    check('not_service', ns, ['pass'], false, notService);
    measured.push({ path: 'not_service', m: ns });
    warm.set('not_service', progTestRun(prog, ipv4Frame(eth, notService), req.repeat).durationNs);

    // NodePort, new flows to a local backend (externalTrafficPolicy Local): DNAT, passed to the stack.
    const localFlows = Array.from({ length: runs }, (_, i): Ipv4Flow => ({ proto: 'tcp', syn: true, ...client(i), daddr: req.nodeIp, dport: req.tcpNodePort }));
    const newLocal = runSingles('nodeport_new_local', prog, localFlows.map((f) => ipv4Frame(eth, f)));
    check('nodeport_new_local', newLocal, ['pass'], true, localFlows[0] as Ipv4Flow);
    measured.push({ path: 'nodeport_new_local', m: newLocal });

    // The first of those flows' next packet (an ACK), again and again: DNAT from conntrack.
    const trackedLocal: Ipv4Flow = { ...(localFlows[0] as Ipv4Flow), syn: false };
    const tl = runSingles('nodeport_tracked_local', prog, same(trackedLocal));
    check('nodeport_tracked_local', tl, ['pass'], true, trackedLocal);
    measured.push({ path: 'nodeport_tracked_local', m: tl });

    // NodePort, new flows to another node's backend: DNAT + SNAT, FIB lookup, sent back out.
    // From the external host's own address (its reply must find a neighbour to go out to), on
    // UDP ports the flood does not use.
    const remoteFlows = Array.from({ length: runs }, (_, i): Ipv4Flow => ({
      proto: 'udp', saddr: req.clientIp, sport: 20_000 + (i % 40_000), daddr: req.nodeIp, dport: req.udpNodePort,
    }));
    const newRemote = runSingles('nodeport_new_remote', prog, remoteFlows.map((f) => ipv4Frame(eth, f)));
    check('nodeport_new_remote', newRemote, ['tx', 'redirect'], true, remoteFlows[0] as Ipv4Flow);
    measured.push({ path: 'nodeport_new_remote', m: newRemote });

    const firstRemote = remoteFlows[0] as Ipv4Flow;
    const tr = runSingles('nodeport_tracked_remote', prog, same(firstRemote));
    check('nodeport_tracked_remote', tr, ['tx', 'redirect'], true, firstRemote);
    measured.push({ path: 'nodeport_tracked_remote', m: tr });

    // The backend's reply to that flow, back at this node: reverse NAT, sent out to the client.
    const fwd = parseIpv4Frame(newRemote.first);
    const reply: Ipv4Flow = { proto: 'udp', saddr: fwd.daddr, sport: fwd.dport, daddr: fwd.saddr, dport: fwd.sport };
    const rv = runSingles('reply_rev_nat', prog, same(reply, { src: req.peerMac, dst: req.nodeMac }));
    check('reply_rev_nat', rv, ['tx', 'redirect'], true, reply);
    const back = parseIpv4Frame(rv.first);
    if (back.daddr !== firstRemote.saddr || back.dport !== firstRemote.sport || back.saddr !== req.nodeIp || back.sport !== req.udpNodePort) {
      throw new Error(`reply_rev_nat: the reply left as ${back.saddr}:${back.sport} -> ${back.daddr}:${back.dport}, not from the NodePort to the client`);
    }
    measured.push({ path: 'reply_rev_nat', m: rv });

    // Drop: a LoadBalancer IP whose loadBalancerSourceRanges refuse the client.
    const refused: Ipv4Flow = { proto: 'tcp', syn: true, saddr: `${req.newFlowPrefix}.198`, sport: 40001, daddr: req.refusedLbIp, dport: req.refusedLbPort };
    const dr = runSingles('drop_source_range', prog, same(refused));
    check('drop_source_range', dr, ['drop'], false, refused);
    measured.push({ path: 'drop_source_range', m: dr });
    warm.set('drop_source_range', progTestRun(prog, ipv4Frame(eth, refused), req.repeat).durationNs);

    const round1 = (v: number): number => Math.round(v * 10) / 10;
    const results: XdpPathResult[] = measured.map(({ path, m }) => ({
      path, ns: round1(Math.max(0, m.ns - overhead)), singleRunNs: round1(m.ns), verdict: m.verdict, runs,
      ...(warm.has(path) ? { warmNs: round1(warm.get(path) as number) } : {}),
    }));
    process.stdout.write(`${JSON.stringify({ overheadNs: round1(overhead), paths: results })}\n`);
  } finally {
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
