/*
 * `vipr lab`: a lab of network namespaces on this machine (client, node, backend pods with real
 * servers), with the agent running in the node's namespace. See src/lab/ for how it is built.
 */
import { parseArgs } from 'node:util';
import { ConfigError } from '../errors.js';
import { formatError } from './errors.js';
import { runInteractive } from '../lab/exec.js';
import {
  AgentStartError,
  labDown,
  labHostNetns,
  labRestartAgent,
  labStatus,
  labUp,
  LabExistsError,
  LabNotUpError,
  type LabStatus,
} from '../lab/lab.js';
import { DEFAULT_LAB_NAME, labNameProblem, MAX_BACKENDS } from '../lab/topology.js';

export const summary = 'a lab of network namespaces (client, node, backends) to run vipr in';

const USAGE = `usage: vipr lab <command> [options]

commands:
  up      create the lab: namespaces, veths, backend servers, manifests, and the agent
          [--name N] [--backends N (default 3)] [--manifests DIR] [--no-agent]
          [--agent-main PATH (the vipr main.js the agent runs from; default dist/src/cli/main.js)]
  down    stop the lab's processes, delete its namespaces, pin dir and state   [--name N]
  exec    run a command in a host's namespace: vipr lab exec [--name N] HOST -- CMD [ARGS...]
          hosts: client, node, be1..beN
  status  hosts, addresses, services and processes   [--name N] [--json]
  restart-agent  stop the agent (SIGTERM, or SIGKILL with --kill) and start a new one; it
          takes over the pinned maps and links, so established connections survive  [--name N]

The default lab is named '${DEFAULT_LAB_NAME}'; every namespace is named after the lab
(<name>-client, <name>-node, <name>-be1...), so labs with different names can run side by side.
State lives in /run/vipr/lab/<name>/. Must run as root.
`;

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
      backends: { type: 'string' },
      manifests: { type: 'string' },
      'no-agent': { type: 'boolean', default: false },
      'agent-main': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    out(USAGE.trimEnd());
    return 0;
  }
  const name = labName(values.name);
  const backends = values.backends === undefined ? 3 : Number(values.backends);
  if (!Number.isInteger(backends) || backends < 1 || backends > MAX_BACKENDS) {
    throw new ConfigError(`--backends must be an integer from 1 to ${MAX_BACKENDS}, got '${values.backends}'`);
  }
  const { state } = await labUp({
    name,
    backends,
    manifestsDir: values.manifests ?? null,
    agent: !values['no-agent'],
    ...(values['agent-main'] === undefined ? {} : { agentMain: values['agent-main'] }),
    onProgress: (line) => out(`- ${line}`),
  });
  const agent = state.processes.find((p) => p.kind === 'agent');
  out(`lab '${name}' is up: ${state.hosts.map((h) => h.name).join(', ')}`);
  out(`  manifests: ${state.manifestsDir}`);
  out(agent ? `  agent: pid ${agent.pid}, log ${agent.log}` : '  agent: not started (--no-agent)');
  out(`  try: vipr lab exec${name === DEFAULT_LAB_NAME ? '' : ` --name ${name}`} client -- curl -s http://10.0.0.213/`);
  return 0;
}

async function down(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { name: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
    strict: true,
  });
  if (values.help) {
    out(USAGE.trimEnd());
    return 0;
  }
  const name = labName(values.name);
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
      kill: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    out(USAGE.trimEnd());
    return 0;
  }
  const pid = await labRestartAgent(labName(values.name), { kill: values.kill });
  out(`agent restarted (pid ${pid})${values.kill ? ' after SIGKILL' : ''}`);
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
    out(USAGE.trimEnd());
    return 0;
  }
  const [host, ...rest] = positionals;
  const command = [...rest, ...(sep === -1 ? [] : argv.slice(sep + 1))];
  if (host === undefined || command.length === 0) {
    throw new ConfigError('usage: vipr lab exec [--name N] HOST -- CMD [ARGS...]');
  }
  const netns = await labHostNetns(labName(values.name), host);
  return runInteractive(netns, command);
}

function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '));
}

function printStatus(s: LabStatus): void {
  out(`lab '${s.name}'${s.phase === 'up' ? '' : ' (incomplete: up did not finish)'}`);
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
  const svcRows = [['SERVICE', 'TYPE', 'FRONTEND', 'ENDPOINTS']];
  for (const svc of s.services) {
    for (const p of svc.ports) {
      svcRows.push([
        `${svc.namespace}/${svc.name}${p.name ? `:${p.name}` : ''}`,
        svc.type,
        `${svc.clusterIP ?? 'None'}:${p.port}/${p.protocol}`,
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
  out(`pin dir:   ${s.pinDir}`);
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
    out(USAGE.trimEnd());
    return 0;
  }
  const s = await labStatus(labName(values.name));
  if (values.json) out(JSON.stringify(s, null, 2));
  else printStatus(s);
  return 0;
}

const SUBCOMMANDS: Record<string, (argv: string[]) => Promise<number>> = { up, down, exec, status, 'restart-agent': restartAgent };

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '-h' || sub === '--help' || sub === 'help') {
    process.stdout.write(USAGE);
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
