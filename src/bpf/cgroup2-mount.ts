/*
 * Where cgroup v2 is mounted. A module of its own, without libbpf, so the lab's cgroups (and
 * `vipr lab exec`, which runs commands in them) do not load the FFI to find it.
 */
import { readFileSync } from 'node:fs';

/** The cgroup v2 mount point (Debian: /sys/fs/cgroup; hybrid hierarchies: .../unified), or null. */
export function cgroup2Mount(mounts = readFileSync('/proc/self/mounts', 'utf8')): string | null {
  for (const line of mounts.split('\n')) {
    const [, mnt, type] = line.split(' ');
    if (type === 'cgroup2' && mnt !== undefined) return mnt;
  }
  return null;
}
