#!/usr/bin/env node
/*
 * vipr's command line. Each command lives in its own file under src/cli/ and exports
 * `run(argv): Promise<number>` (the exit code). Errors reach the user as one line.
 */
import { formatError } from './errors.js';

type CommandModule = { run(argv: string[]): Promise<number>; summary: string };

const COMMANDS: Record<string, () => Promise<CommandModule>> = {
  run: () => import('./run.js'),
  list: () => import('./list.js'),
  maps: () => import('./maps.js'),
  stats: () => import('./stats.js'),
  conntrack: () => import('./conntrack.js'),
  cleanup: () => import('./cleanup.js'),
  render: () => import('./render.js'),
  lab: () => import('./lab.js'),
  bench: () => import('./bench.js'),
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(await usage());
    return name ? 0 : 2;
  }
  const load = COMMANDS[name];
  if (!load) {
    process.stderr.write(`vipr: unknown command '${name}'; run 'vipr --help' for the list\n`);
    return 2;
  }
  let mod: CommandModule;
  try {
    mod = await load();
  } catch (err) {
    // The node image ships the agent only: no bench or lab code, no chart renderer.
    if ((err as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND' && (name === 'bench' || name === 'lab')) {
      process.stderr.write(`vipr: '${name}' is not part of this install (the node image ships the agent only); run it from a source checkout: make demo\n`);
      return 2;
    }
    throw err;
  }
  return mod.run(rest);
}

async function usage(): Promise<string> {
  const lines = ['usage: vipr <command> [options]', '', 'commands:'];
  for (const [name, load] of Object.entries(COMMANDS)) {
    const summary = await load().then(
      (m) => m.summary,
      () => 'not part of this install (run it from a source checkout)',
    );
    lines.push(`  ${name.padEnd(10)} ${summary}`);
  }
  lines.push('', "Run 'vipr <command> --help' for a command's options.", '');
  return lines.join('\n');
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`vipr: ${formatError(err)}\n`);
    process.exitCode = 1;
  },
);
