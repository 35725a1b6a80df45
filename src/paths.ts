/* Where vipr finds its own files and keeps its state. */
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | null = null;

/** The directory holding vipr's package.json (the repo, or the installed package). */
export function packageRoot(): string {
  if (root !== null) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'bpf'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the vipr package root (package.json next to bpf/)');
    dir = up;
  }
  root = dir;
  return root;
}

/** The compiled TC datapath object. */
export function tcObjectPath(): string {
  return join(packageRoot(), 'bpf', 'tc_lb.bpf.o');
}

/** The compiled XDP datapath object (same maps, pinned by name). */
export function xdpObjectPath(): string {
  return join(packageRoot(), 'bpf', 'xdp_lb.bpf.o');
}

export const DEFAULT_PIN_DIR = '/sys/fs/bpf/vipr';
export const STATE_DIR = '/run/vipr';

/** Where the agent records svc_id → `namespace/name:port` for the CLI (maps carry no names). */
export function serviceNamesPath(pinDir: string): string {
  return join(STATE_DIR, `${basename(pinDir)}.services.json`);
}

/** The counter of frames XDP_REDIRECT could not deliver (src/bpf/xdp-pods.ts). */
export function xdpDropsObjectPath(): string {
  return join(packageRoot(), 'bpf', 'xdp_drops.bpf.o');
}

/** The conntrack GC iterators (same maps, pinned by name). */
export function ctGcObjectPath(): string {
  return join(packageRoot(), 'bpf', 'ct_gc.bpf.o');
}
