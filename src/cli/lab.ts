/*
 * `vipr lab`: a lab of network namespaces on this machine (client, one or more nodes, backend pods
 * with real servers, an external host with several nodes), with an agent running in each node's
 * namespace. See src/lab/ for how it is built.
 */
import { parseArgs } from 'node:util';
import { copyFile } from 'node:fs/promises';
// Each command loads what it uses (the lab's builder, the VM lab, the bench's reports) when it
// runs: `vipr lab exec`, run hundreds of times in loops, loads only the lab's state (hosts.ts).
import type { LabVmMode } from '../lab/vm.js';
import type { VmNorthSouthReport } from '../lab/vm-north-south.js';
import type { NorthSouthReport } from '../bench/north-south.js';
import type { LabStatus } from '../lab/lab.js';
import { ConfigError } from '../errors.js';
import { joinHostPort } from '../model/ip.js';
import { formatError } from './errors.js';
import { runInteractive } from '../lab/exec.js';
import { AgentStartError, labHostPlacement, LabExistsError, LabNotUpError } from '../lab/hosts.js';
import {
  DEFAULT_LAB_IP_FAMILY,
  DEFAULT_LAB_NAME,
  EXTERNAL_IP,
  EXTERNAL_IP6,
  LAB_IP_FAMILIES,
  labNameProblem,
  LOAD_BALANCER_CIDR,
  LOAD_BALANCER_CIDR6,
  MAX_BACKENDS,
  MAX_NODES,
  SERVICE_CIDR,
  SERVICE_CIDR6,
  UNDERLAY_CIDR,
  UNDERLAY_CIDR6,
  type LabIpFamily,
} from '../lab/topology.js';

export const summary = 'a lab of network namespaces (client, nodes, backends) to run vipr in';

async function usage(): Promise<string> {
  const [{ DEFAULT_ICOUNT_SHIFT }, { NGINX_SERVICE }] = await Promise.all([import('../lab/vm.js'), import('../lab/manifests.js')]);
  return `usage: vipr lab <command> [options]

commands:
  up      create the lab: namespaces, veths, backend servers, manifests, and an agent per node
          [--name N] [--nodes N (default 1)] [--backends N per node (default 3)]
          [--ip-family ipv4|ipv6|dual (default ${DEFAULT_LAB_IP_FAMILY})] [--manifests DIR] [--no-agent]
          [--agent-main PATH (the vipr main.js the agent runs from; default dist/src/cli/main.js)]
  down    stop the lab's processes, delete its namespaces, pin dirs and state   [--name N]
  exec    run a command in a host's namespace: vipr lab exec [--name N] HOST -- CMD [ARGS...]
          hosts: client, node, be1..beN (one node); client, node1..nodeN, ext, be1.., net
          (the underlay bridge's namespace) with --nodes
  status  hosts, addresses, nodes, services and processes   [--name N] [--json]
  restart-agent  stop an agent (SIGTERM, or SIGKILL with --kill) and start a new one; it
          takes over the pinned maps and links, so established connections survive
          [--name N] [--node NODE (default: every node's agent)]
  vm      every mode, IPVS included, measured by 'vipr bench' in a qemu VM booted with Debian's
          kernel (this machine's kernel has no IPVS): [--modes a,b] [--quick] [--services 1,1000]
          [--rounds N] [--families ipv4|ipv4,ipv6] [--json FILE] [--rebuild-base]
          [--traffic-only (the bench's: rr, crr, udp on nodes programmed once a count; for 10,000)]
          [--timeout MINUTES (the guest's limit; default 40 for --quick, more per round and at 1,000)]
          [--watch-guest (its labs' logs and processes copied out every 30 s, for a run that hangs;
          each copy stalls the one vCPU, so not for figures)]
          [--timing icount|wall (default icount: TCG counting instructions, never KVM)]
          [--icount-shift N (default ${DEFAULT_ICOUNT_SHIFT}: 1 instruction = 2^N ns)] [--accel auto|kvm|tcg (wall only)]
          [--host-json FILE | --no-host]: bpf, iptables, iptables-nft and nftables are benched on
          this machine too (or read from FILE) and their ratios to 'direct' printed beside the VM's;
          the largest difference is the error bar on IPVS's. Needs 'make lab-vm-deps'.
          --from-json VM.json [--host-json FILE]: print a saved run's tables, no VM
          --north-south [--modes xdp,tc,iptables,nftables,ipvs] [--quick] [--rounds N]: 'vipr bench
          --north-south' in the VM instead (IPVS included), node1's CPU per packet ×iptables beside
          this machine's (or --host-json FILE of 'vipr bench --north-south --json'): the largest
          difference is the error bar on IPVS's; --from-json with --north-south reprints one

One node (the default): client 172.30.0.2 -- node eth0 172.30.0.1, pods 10.244.0.11.. behind
vbe1.. on the node (agent --node-name node). With --nodes N: node<i> eth0 on the underlay
${UNDERLAY_CIDR} (.1<i>, the agent's --node-ip, --node-name node<i>), pods 10.244.<i>.11.. with
routes between nodes, backends numbered across nodes (node1 be1..beB, node2 beB+1..), the client
on node1's eth1, and host 'ext' (${EXTERNAL_IP}, role external) that routes only the underlay
and ${LOAD_BALANCER_CIDR} (LoadBalancer IPs) via node1.

--ip-family dual (the default) gives every link an IPv6 address beside the IPv4 one (ipv6: only
those): client fd00:172:30::2 -- node fd00:172:30::1, pods fd00:10:244:<node>::11.. (<node> 0 with
one node, i with --nodes), underlay ${UNDERLAY_CIDR6} (node<i> ::1<i>, ext ${EXTERNAL_IP6}),
Services in ${SERVICE_CIDR} and ${SERVICE_CIDR6} (nginx-service ${NGINX_SERVICE.clusterIP} and
${NGINX_SERVICE.clusterIP6}), LoadBalancer IPs in ${LOAD_BALANCER_CIDR6}. Every Service of the
default manifests is dual-stack, with an EndpointSlice per family.

The default lab is named '${DEFAULT_LAB_NAME}'; every namespace is named after the lab
(<name>-client, <name>-node, <name>-be1...), so labs with different names can run side by side.
State lives in /run/vipr/lab/<name>/. Must run as root.
`;
}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

function err(line: string): void {
  process.stderr.write(`vipr lab: ${line}\n`);
}

function labName(value: string | undefined): string {
  const name = value ?? DEFAULT_LAB_NAME;
  const problem = labNameProblem(name);
  if (problem) throw new ConfigError(problem);
  return name;
}

async function up(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string' },
      nodes: { type: 'string' },
      backends: { type: 'string' },
      manifests: { type: 'string' },
      'ip-family': { type: 'string' },
      'no-agent': { type: 'boolean', default: false },
      'agent-main': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    out((await usage()).trimEnd());
    return 0;
  }
  const name = labName(values.name);
  const backends = values.backends === undefined ? 3 : Number(values.backends);
  if (!Number.isInteger(backends) || backends < 1 || backends > MAX_BACKENDS) {
    throw new ConfigError(`--backends must be an integer from 1 to ${MAX_BACKENDS}, got '${values.backends}'`);
  }
  const nodes = values.nodes === undefined ? 1 : Number(values.nodes);
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_NODES) {
    throw new ConfigError(`--nodes must be an integer from 1 to ${MAX_NODES}, got '${values.nodes}'`);
  }
  const ipFamily = values['ip-family'] ?? DEFAULT_LAB_IP_FAMILY;
  if (!(LAB_IP_FAMILIES as readonly string[]).includes(ipFamily)) {
    throw new ConfigError(`--ip-family must be one of ${LAB_IP_FAMILIES.join(', ')}, got '${ipFamily}'`);
  }
  const [{ labUp }, { NGINX_SERVICE }] = await Promise.all([import('../lab/lab.js'), import('../lab/manifests.js')]);
  const { state } = await labUp({
    name,
    backends,
    nodes,
    ipFamily: ipFamily as LabIpFamily,
    manifestsDir: values.manifests ?? null,
    agent: !values['no-agent'],
    ...(values['agent-main'] === undefined ? {} : { agentMain: values['agent-main'] }),
    onProgress: (line) => out(`- ${line}`),
  });
  const agents = state.processes.filter((p) => p.kind === 'agent');
  out(`lab '${name}' is up (${state.ipFamily}): ${state.hosts.map((h) => h.name).join(', ')}`);
  out(`  manifests: ${state.manifestsDir}`);
  if (agents.length === 0) out('  agent: not started (--no-agent)');
  else if (state.nodes.length === 1) out(`  agent: pid ${agents[0]?.pid}, log ${agents[0]?.log}`);
  else for (const a of agents) out(`  agent on ${a.host}: pid ${a.pid}, log ${a.log}`);
  const named = name === DEFAULT_LAB_NAME ? '' : ` --name ${name}`;
  const v4 = state.ipFamily !== 'ipv6';
  const v6 = state.ipFamily !== 'ipv4';
  const tries: string[] = [];
  if (v4) tries.push(`vipr lab exec${named} client -- curl -s http://${NGINX_SERVICE.clusterIP}/`);
  if (v6) tries.push(`vipr lab exec${named} client -- curl -s -g http://[${NGINX_SERVICE.clusterIP6}]/`);
  if (state.nodes.length > 1) {
    const last = state.nodes[state.nodes.length - 1];
    for (const ip of last?.nodeIps ?? []) tries.push(`vipr lab exec${named} ext -- curl -s ${ip.includes(':') ? `-g http://[${ip}]` : `http://${ip}`}:30080/`);
  }
  tries.forEach((t, i) => out(`${i === 0 ? '  try: ' : '       '}${t}`));
  return 0;
}

async function down(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { name: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
    strict: true,
  });
  if (values.help) {
    out((await usage()).trimEnd());
    return 0;
  }
  const name = labName(values.name);
  const { labDown } = await import('../lab/lab.js');
  const result = await labDown(name);
  if (result.removed.length === 0 && result.failures.length === 0) {
    out(`lab '${name}' is not up; nothing to remove`);
    return 0;
  }
  for (const line of result.removed) out(line);
  for (const line of result.failures) err(line);
  if (result.failures.length > 0) return 1;
  out(`lab '${name}' is down`);
  return 0;
}

async function restartAgent(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string' },
      node: { type: 'string' },
      kill: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    out((await usage()).trimEnd());
    return 0;
  }
  const { labRestartAgents } = await import('../lab/lab.js');
  const restarted = await labRestartAgents(labName(values.name), {
    kill: values.kill,
    ...(values.node === undefined ? {} : { node: values.node }),
  });
  const how = values.kill ? ' after SIGKILL' : '';
  if (restarted.length === 1 && values.node === undefined) out(`agent restarted (pid ${restarted[0]?.pid})${how}`);
  else for (const r of restarted) out(`agent on ${r.node} restarted (pid ${r.pid})${how}`);
  return 0;
}

async function exec(argv: string[]): Promise<number> {
  // Everything after `--` is the command, options and all; before it, our own options and HOST.
  const sep = argv.indexOf('--');
  const own = sep === -1 ? argv : argv.slice(0, sep);
  const { values, positionals } = parseArgs({
    args: own,
    options: { name: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    out((await usage()).trimEnd());
    return 0;
  }
  const [host, ...rest] = positionals;
  const command = [...rest, ...(sep === -1 ? [] : argv.slice(sep + 1))];
  if (host === undefined || command.length === 0) {
    throw new ConfigError('usage: vipr lab exec [--name N] HOST -- CMD [ARGS...]');
  }
  const { netns, cgroup } = await labHostPlacement(labName(values.name), host);
  return runInteractive(netns, command, cgroup);
}

function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '));
}

function printStatus(s: LabStatus): void {
  out(`lab '${s.name}' (${s.ipFamily})${s.phase === 'up' ? '' : ' (incomplete: up did not finish)'}`);
  out('');
  const hostRows = [['HOST', 'ROLE', 'NETNS', 'ADDRESSES']];
  for (const h of s.hosts) {
    const addrs = h.present
      ? h.interfaces.map((i) => `${i.ifname} ${i.addresses.join(',') || '-'}`).join('; ')
      : '(namespace missing)';
    hostRows.push([h.name, h.role, h.netns, addrs]);
  }
  for (const line of table(hostRows)) out(line);
  out('');
  if (s.nodes.length > 1) {
    const nodeRows = [['NODE', 'NODE IP', 'POD CIDR', 'AGENT', 'PIN DIR']];
    for (const n of s.nodes) {
      nodeRows.push([n.name, n.nodeIps.join(',') || '-', n.podCidrs.join(','), n.agentPid === null ? n.agent : `${n.agent} (pid ${n.agentPid})`, n.pinDir]);
    }
    for (const line of table(nodeRows)) out(line);
    if (s.underlay) out(`underlay: ${s.underlay.cidrs.join(', ')}, bridge ${s.underlay.bridge} in ${s.underlay.netns} (host 'net')`);
    out('');
  }
  const svcRows = [['SERVICE', 'TYPE', 'FRONTEND', 'ENDPOINTS']];
  for (const svc of s.services) {
    for (const p of svc.ports) {
      // ClusterIP first, then what the service also answers on: LB / external IPs, NodePort.
      const clusterIPs = svc.clusterIPs.length === 0 ? [`None:${p.port}`] : svc.clusterIPs.map((ip) => joinHostPort(ip, p.port));
      const frontends = [
        ...clusterIPs.map((f) => `${f}/${p.protocol}`),
        ...[...svc.loadBalancerIPs, ...svc.externalIPs].map((ip) => joinHostPort(ip, p.port)),
        ...(p.nodePort === 0 ? [] : [`<node>:${p.nodePort}`]),
      ];
      const local = svc.externalTrafficPolicy === 'Local' && (svc.type === 'NodePort' || svc.type === 'LoadBalancer');
      svcRows.push([
        `${svc.namespace}/${svc.name}${p.name ? `:${p.name}` : ''}`,
        svc.type + (local ? ' (Local)' : ''),
        frontends.join(','),
        p.endpoints.join(' ') || '(none)',
      ]);
    }
  }
  if (svcRows.length > 1) for (const line of table(svcRows)) out(line);
  else out('no services');
  for (const problem of s.problems) out(`  manifest problem: ${problem}`);
  out('');
  const procRows = [['PROCESS', 'HOST', 'PID', 'STATE', 'LOG']];
  for (const p of s.processes) procRows.push([p.kind, p.host, String(p.pid), p.running ? 'running' : 'exited', p.log]);
  for (const line of table(procRows)) out(line);
  out('');
  out(`agent:     ${s.agent}`);
  out(`manifests: ${s.manifests}`);
  if (s.nodes.length <= 1) out(`pin dir:   ${s.pinDir}`);
  out(`state:     ${s.stateDir}`);
}

async function status(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      name: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    out((await usage()).trimEnd());
    return 0;
  }
  const { labStatus } = await import('../lab/lab.js');
  const s = await labStatus(labName(values.name));
  if (values.json) out(JSON.stringify(s, null, 2));
  else printStatus(s);
  return 0;
}

async function vm(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      modes: { type: 'string' },
      quick: { type: 'boolean', default: false },
      services: { type: 'string' },
      rounds: { type: 'string' },
      'traffic-only': { type: 'boolean', default: false },
      'north-south': { type: 'boolean', default: false },
      'watch-guest': { type: 'boolean', default: false },
      accel: { type: 'string', default: 'auto' },
      timing: { type: 'string', default: 'icount' },
      'icount-shift': { type: 'string' },
      families: { type: 'string', default: 'ipv4' },
      'host-json': { type: 'string' },
      'no-host': { type: 'boolean', default: false },
      'from-json': { type: 'string' },
      json: { type: 'string' },
      'rebuild-base': { type: 'boolean', default: false },
      timeout: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    out((await usage()).trimEnd());
    return 0;
  }
  const [
    { formatComparison, labVm, labVmNorthSouth, LAB_VM_MODES, readBenchReport, reportTiming, timingLine },
    { calibrateNorthSouth, formatNorthSouthCalibration, readNorthSouthReport, VM_NORTH_SOUTH_MODES },
    { formatNorthSouth },
    { parseNorthSouthModes },
    { calibrate, formatCalibration },
  ] = await Promise.all([
    import('../lab/vm.js'),
    import('../lab/vm-north-south.js'),
    import('../bench/north-south-report.js'),
    import('./bench.js'),
    import('../lab/calibration.js'),
  ]);
  const accel = values.accel;
  if (accel !== 'auto' && accel !== 'kvm' && accel !== 'tcg') throw new ConfigError(`--accel ${accel}: expected auto, kvm or tcg`);
  const timing = values.timing;
  if (timing !== 'icount' && timing !== 'wall') throw new ConfigError(`--timing ${timing}: expected icount or wall`);
  const families = values.families;
  if (families !== 'ipv4' && families !== 'ipv4,ipv6') throw new ConfigError(`--families ${families}: expected ipv4 or ipv4,ipv6`);
  if (values['host-json'] !== undefined && values['no-host']) throw new ConfigError('--host-json and --no-host: give one of them');
  const printCalibration = (vmReport: Parameters<typeof calibrate>[0], host: Parameters<typeof calibrate>[1] | null, source: string): void => {
    out('');
    if (host) process.stdout.write(formatCalibration(calibrate(vmReport, host), source));
    else out(`calibration: none (${source})`);
  };
  const timeoutMinutes = values.timeout === undefined ? undefined : Number(values.timeout);
  if (timeoutMinutes !== undefined && !(Number.isFinite(timeoutMinutes) && timeoutMinutes > 0)) {
    throw new ConfigError(`--timeout ${values.timeout}: expected the guest's time limit in minutes, a positive number`);
  }
  const fromJson = values['from-json'];
  if (values['north-south']) {
    for (const flag of ['services', 'traffic-only'] as const) {
      if (values[flag] !== undefined && values[flag] !== false) throw new ConfigError(`--${flag} is not an option of --north-south; drop it`);
    }
    // The lab reads the reports as far as its calibration needs; the bench (which wrote them) prints them.
    const printNs = (report: VmNorthSouthReport): void => void process.stdout.write(formatNorthSouth(report as unknown as NorthSouthReport));
    const printNsCalibration = (vmReport: VmNorthSouthReport, host: VmNorthSouthReport | null, source: string): void => {
      out('');
      process.stdout.write(host ? formatNorthSouthCalibration(calibrateNorthSouth(vmReport, host), source) : `north-south calibration: none (${source})\n`);
    };
    if (fromJson !== undefined) {
      const hostJson = values['host-json'];
      const report = readNorthSouthReport(fromJson);
      printNs(report);
      printNsCalibration(report, hostJson === undefined ? null : readNorthSouthReport(hostJson), hostJson ?? 'no --host-json given');
      return 0;
    }
    const nsModes = values.modes === undefined ? [...VM_NORTH_SOUTH_MODES] : parseNorthSouthModes(values.modes);
    const result = await labVmNorthSouth(nsModes, {
      quick: values.quick,
      accel,
      timing,
      ...(values['icount-shift'] !== undefined ? { icountShift: Number(values['icount-shift']) } : {}),
      host: values['no-host'] ? 'none' : values['host-json'] !== undefined ? { json: values['host-json'] } : 'run',
      rebuildBase: values['rebuild-base'],
      ...(values.rounds ? { rounds: Number(values.rounds) } : {}),
      ...(timeoutMinutes !== undefined ? { timeoutMs: timeoutMinutes * 60_000 } : {}),
      watchGuest: values['watch-guest'],
      onLine: (l) => process.stderr.write(`${l}\n`),
    });
    out(`north-south in the VM (${timingLine(result.accel, result.icountShift)}):`);
    printNs(result.report);
    printNsCalibration(result.report, result.hostReport, result.hostSource);
    if (values.json) await copyFile(`${result.runDir}/bench.json`, values.json);
    out(`results and serial console: ${result.runDir}`);
    return result.guestExitCode === 0 ? 0 : 1;
  }
  if (fromJson !== undefined) {
    const report = readBenchReport(fromJson);
    const hostJson = values['host-json'];
    const host = hostJson === undefined ? null : readBenchReport(hostJson);
    const { accel: ranWith, icountShift } = reportTiming(report);
    process.stdout.write(formatComparison(report, ranWith, icountShift));
    printCalibration(report, host, hostJson ?? 'no --host-json given');
    return 0;
  }
  const modes = values.modes?.split(',');
  for (const m of modes ?? []) {
    if (!(LAB_VM_MODES as readonly string[]).includes(m)) throw new ConfigError(`--modes: '${m}' is not one of ${LAB_VM_MODES.join(', ')}`);
  }
  const result = await labVm({
    ...(modes ? { modes: modes as LabVmMode[] } : {}),
    quick: values.quick,
    accel,
    timing,
    families,
    ...(values['icount-shift'] !== undefined ? { icountShift: Number(values['icount-shift']) } : {}),
    host: values['no-host'] ? 'none' : values['host-json'] !== undefined ? { json: values['host-json'] } : 'run',
    rebuildBase: values['rebuild-base'],
    ...(values.services ? { services: values.services.split(',').map(Number) } : {}),
    ...(values.rounds ? { rounds: Number(values.rounds) } : {}),
    trafficOnly: values['traffic-only'],
    watchGuest: values['watch-guest'],
    ...(timeoutMinutes !== undefined ? { timeoutMs: timeoutMinutes * 60_000 } : {}),
    onLine: (l) => process.stderr.write(`${l}\n`),
  });
  process.stdout.write(formatComparison(result.report, result.accel, result.icountShift));
  printCalibration(result.report, result.hostReport, result.hostSource);
  if (result.kvmProblem) out(`(KVM not used: ${result.kvmProblem})`);
  if (values.json) await copyFile(`${result.runDir}/bench.json`, values.json);
  out(`results and serial console: ${result.runDir}`);
  return result.guestExitCode === 0 ? 0 : 1;
}

const SUBCOMMANDS: Record<string, (argv: string[]) => Promise<number>> = { up, down, exec, status, 'restart-agent': restartAgent, vm };

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '-h' || sub === '--help' || sub === 'help') {
    process.stdout.write(await usage());
    return sub === undefined ? 2 : 0;
  }
  const handler = SUBCOMMANDS[sub];
  if (!handler) {
    err(`unknown command '${sub}'; run 'vipr lab --help'`);
    return 2;
  }
  // Before the root check, so anyone can read the usage; after `--` it belongs to exec's command.
  const sep = rest.indexOf('--');
  const own = sep === -1 ? rest : rest.slice(0, sep);
  if (own.includes('--help') || own.includes('-h')) return handler(['--help']);
  // `vipr lab status | head`: a closed pipe ends the output, not the process with a stack trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    err('must run as root (it creates network namespaces and starts processes in them)');
    return 1;
  }
  try {
    return await handler(rest);
  } catch (e) {
    if (e instanceof LabExistsError || e instanceof LabNotUpError || e instanceof AgentStartError || e instanceof ConfigError) {
      err(e.message);
      return 1;
    }
    if (e instanceof TypeError && 'code' in e && String(e.code).startsWith('ERR_PARSE_ARGS')) {
      err(`${formatError(e)}; run 'vipr lab --help'`);
      return 2;
    }
    err(formatError(e));
    return 1;
  }
}
