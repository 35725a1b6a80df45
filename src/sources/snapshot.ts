/*
 * One look at a source, for commands that read and exit (render, list): every object the
 * manifest files or the API server hold now, and the node as the API knows it.
 */
import type { ClusterObjects } from '../model/k8s.js';
import type { NodeInfo } from '../model/types.js';
import { loadManifestDir } from './manifest.js';
import { ConfigError } from '../errors.js';

export interface Snapshot {
  objects: ClusterObjects;
  /** From the Node object (--kubeconfig); null for manifest files. */
  node: NodeInfo | null;
  /** One line each: `file: document N: what is wrong`. */
  problems: string[];
}

export async function loadSnapshot(opts: { manifests?: string | undefined; kubeconfig?: string | undefined; nodeName: string }): Promise<Snapshot> {
  if (opts.manifests !== undefined && opts.kubeconfig !== undefined) {
    throw new ConfigError('give --manifests DIR or --kubeconfig FILE, not both');
  }
  if (opts.manifests !== undefined) {
    const load = await loadManifestDir(opts.manifests);
    return { objects: load.objects, node: null, problems: load.problems.map(String) };
  }
  if (opts.kubeconfig === undefined && !process.env.KUBECONFIG && !process.env.KUBERNETES_SERVICE_HOST) {
    throw new ConfigError('no source: give --manifests DIR or --kubeconfig FILE (or set $KUBECONFIG)');
  }
  // The Kubernetes client (~0.5 s to import) only for a look at the API: `vipr list` of the maps
  // and renders of manifest files start without it.
  const [{ loadKubeConfig }, { KubeSource }] = await Promise.all([import('./kubeconfig.js'), import('./kube.js')]);
  const { config } = loadKubeConfig(opts.kubeconfig === undefined ? {} : { kubeconfig: opts.kubeconfig });
  const source = new KubeSource({ kubeConfig: config, nodeName: opts.nodeName });
  try {
    await source.start();
    return { objects: source.current(), node: source.node(), problems: [] };
  } finally {
    await source.stop();
  }
}
