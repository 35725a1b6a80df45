/*
 * The shape of the code, checked: layers import only downward (sources → sync → model →
 * dataplanes; lab and bench on top), and the agent (`vipr run`) never loads the lab, the bench or
 * the chart renderer, so its memory and its image hold neither. Static imports only: the CLI
 * loads each command with a dynamic import, which is what keeps them apart.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { REPO_ROOT } from '../helpers/lab.js';

const SRC = join(REPO_ROOT, 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith('.ts') ? [path] : [];
  });
}

/**
 * The static imports of a file: relative ones resolved to .ts paths, bare ones as written.
 * `import type` counts as a dependency of the code's shape, not of what runs.
 */
function importsOf(file: string, withTypes: boolean): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^(?:import|export)\s[^;]*?\sfrom\s+'([^']+)'/gms)) {
    const spec = m[1] as string;
    if (!withTypes && /^(?:import|export)\s+type\s/.test(m[0])) continue;
    out.push(spec.startsWith('.') ? resolve(dirname(file), spec.replace(/\.js$/, '.ts')) : spec);
  }
  return out;
}

const layer = (file: string): string => relative(SRC, file).split('/')[0] ?? '';

test('no layer imports from a layer above it', () => {
  const above: Record<string, string[]> = {
    bpf: ['sync', 'sources', 'cli', 'lab', 'bench'],
    model: ['sync', 'sources', 'cli', 'lab', 'bench', 'bpf', 'modes', 'render'],
    render: ['sync', 'sources', 'cli', 'lab', 'bench', 'bpf', 'modes'],
    modes: ['sync', 'sources', 'cli', 'lab', 'bench'],
    lab: ['bench', 'cli'],
  };
  const violations: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const banned = above[layer(file)] ?? [];
    for (const target of importsOf(file, true)) {
      if (target.startsWith(SRC) && banned.includes(layer(target))) violations.push(`${relative(SRC, file)} → ${relative(SRC, target)}`);
    }
  }
  expect(violations).toEqual([]);
});

test('the agent (vipr run) loads neither the lab, the bench nor the chart renderer', () => {
  const seen = new Set<string>();
  const bare = new Set<string>();
  const walk = (file: string): void => {
    if (seen.has(file)) return;
    seen.add(file);
    for (const target of importsOf(file, false)) {
      if (target.startsWith('/')) walk(target);
      else bare.add(target);
    }
  };
  walk(join(SRC, 'cli', 'run.ts'));
  const reached = [...seen].map((f) => relative(SRC, f));
  expect(reached.filter((f) => f.startsWith('lab/') || f.startsWith('bench/'))).toEqual([]);
  expect([...bare].filter((b) => b.startsWith('vega'))).toEqual([]);
  // The walk did see the agent's real dependencies (a walk that found nothing proves nothing).
  expect(reached).toContain('sync/agent.ts');
  expect(bare.has('koffi')).toBe(true);
});
