/* Writes a kubeconfig pointing at a fake API server: plain http, no credentials. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The kubeconfig text for `server` (e.g. `http://127.0.0.1:PORT`). */
export function kubeconfigFor(server: string): string {
  // client-node refuses http:// unless insecure-skip-tls-verify is set.
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: fake',
    '  cluster:',
    `    server: ${server}`,
    '    insecure-skip-tls-verify: true',
    'users:',
    '- name: anonymous',
    '  user: {}',
    'contexts:',
    '- name: fake',
    '  context:',
    '    cluster: fake',
    '    user: anonymous',
    'current-context: fake',
    '',
  ].join('\n');
}

/** Writes the kubeconfig for `server` into a fresh temporary directory; returns its path. */
export function writeKubeconfig(server: string, dir = mkdtempSync(join(tmpdir(), 'vipr-kubeconfig-'))): string {
  const path = join(dir, 'kubeconfig');
  writeFileSync(path, kubeconfigFor(server));
  return path;
}
