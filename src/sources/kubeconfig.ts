/*
 * Where the agent finds the API server, in kubectl's / kube-proxy's order: an explicit
 * `--kubeconfig FILE`, then `$KUBECONFIG` (a path list, merged as kubectl does), then the
 * in-cluster service account when running in a Pod (KUBERNETES_SERVICE_HOST is set). Every failure
 * is one ConfigError line saying what was tried.
 *
 * What waiting cannot fix is checked here, before the agent starts anything: the server URL and
 * its scheme, and the certificate files (they must exist and hold PEM that TLS accepts). Left to
 * the client library, each of these fails every request and the informers retry forever.
 *
 * Plain `http://` servers (kubectl proxy, a local test API) work as with kubectl: client-node
 * refuses them unless the cluster has insecure-skip-tls-verify, a setting that means nothing
 * without TLS, so it is set on http clusters here.
 */
import { existsSync, readFileSync } from 'node:fs';
import { delimiter } from 'node:path';
import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import { KubeConfig, type Cluster, type User } from '@kubernetes/client-node';
import { ConfigError } from '../errors.js';

/** The service-account token path inside a Pod (client-node's SERVICEACCOUNT_TOKEN_PATH). */
const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token';

export interface KubeConfigOptions {
  /** `--kubeconfig FILE`; wins over everything else. */
  kubeconfig?: string | null;
  /** Environment to read KUBECONFIG / KUBERNETES_SERVICE_HOST from; default process.env. */
  env?: NodeJS.ProcessEnv;
  /** Prefix of the service-account files (tests point it at a fake tree); default ''. */
  serviceAccountRoot?: string;
}

export interface LoadedKubeConfig {
  config: KubeConfig;
  /** Where it came from, for logs: `--kubeconfig /x`, `$KUBECONFIG (/a:/b)`, `in-cluster`. */
  origin: string;
}

function reason(err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && (err as { code?: unknown }).code === 'ENOENT') {
    return 'no such file';
  }
  return err instanceof Error ? err.message.split('\n')[0] ?? String(err) : String(err);
}

function loadFile(path: string, what: string): KubeConfig {
  const kc = new KubeConfig();
  try {
    kc.loadFromFile(path);
  } catch (err) {
    throw new ConfigError(`cannot load ${what} ${path}: ${reason(err)}`, { cause: err });
  }
  return kc;
}

/** Fails unless the loaded config names a current cluster with a server URL. */
function checkUsable(kc: KubeConfig, origin: string): void {
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    const ctx = kc.getCurrentContext();
    throw new ConfigError(
      ctx
        ? `${origin}: current context '${ctx}' names no known cluster`
        : `${origin}: no current-context set; set one with 'kubectl config use-context'`,
    );
  }
  if (!cluster.server) throw new ConfigError(`${origin}: cluster '${cluster.name}' has no server URL`);
  let url: URL;
  try {
    url = new URL(cluster.server);
  } catch (err) {
    throw new ConfigError(
      `${origin}: cluster '${cluster.name}' server '${cluster.server}' is not a URL; expected https://HOST[:PORT] (or http:// for kubectl proxy)`,
      { cause: err },
    );
  }
  if (url.protocol === 'http:') {
    allowPlainHttp(kc, cluster);
    return;
  }
  if (url.protocol !== 'https:') {
    throw new ConfigError(
      `${origin}: cluster '${cluster.name}' server ${cluster.server}: scheme '${url.protocol.replace(/:$/, '')}' is not supported; use https:// (or http:// for kubectl proxy)`,
    );
  }
  checkTlsMaterial(cluster, kc.getCurrentUser(), origin);
}

/** kubectl talks plain HTTP to an http:// server; client-node does only with skipTLSVerify. */
function allowPlainHttp(kc: KubeConfig, cluster: Cluster): void {
  if (cluster.skipTLSVerify) return;
  kc.clusters = kc.clusters.map((c) => (c === cluster ? { ...c, skipTLSVerify: true } : c));
}

/** Reads a certificate or key file named in the kubeconfig; one line when it cannot. */
function readPem(path: string, field: string, origin: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError(`${origin}: ${field} ${path}: ${reason(err)}`, { cause: err });
  }
}

/**
 * The CA, client certificate and key must exist and be usable by TLS (PEM that parses, a key that
 * matches its certificate): client-node would otherwise read them on every request and fail each.
 */
function checkTlsMaterial(cluster: Cluster, user: User | null, origin: string): void {
  const files: Array<{ field: string; path: string | undefined; role: 'ca' | 'cert' | 'key' }> = [
    { field: 'certificate-authority', path: cluster.caFile, role: 'ca' },
    { field: 'client-certificate', path: user?.certFile, role: 'cert' },
    { field: 'client-key', path: user?.keyFile, role: 'key' },
  ];
  const material: { ca?: Buffer; cert?: Buffer; key?: Buffer } = {};
  for (const f of files) if (f.path) material[f.role] = readPem(f.path, f.field, origin);
  if (!material.ca && cluster.caData) material.ca = Buffer.from(cluster.caData, 'base64');
  if (!material.cert && user?.certData) material.cert = Buffer.from(user.certData, 'base64');
  if (!material.key && user?.keyData) material.key = Buffer.from(user.keyData, 'base64');
  if (!material.ca && !material.cert && !material.key) return;
  try {
    // TLS skips a CA bundle it cannot parse without a word; X509Certificate does not.
    if (material.ca) new X509Certificate(material.ca);
    createSecureContext(material);
  } catch (err) {
    const named = files.filter((f) => f.path).map((f) => `${f.field} ${f.path}`);
    const what = named.length > 0 ? named.join(', ') : 'certificate data';
    throw new ConfigError(`${origin}: cluster '${cluster.name}': TLS cannot use ${what}: ${reason(err)}`, { cause: err });
  }
}

/** Builds the KubeConfig the agent talks to the API server with. Throws ConfigError. */
export function loadKubeConfig(options: KubeConfigOptions = {}): LoadedKubeConfig {
  const env = options.env ?? process.env;

  if (options.kubeconfig) {
    const origin = `--kubeconfig ${options.kubeconfig}`;
    const kc = loadFile(options.kubeconfig, 'kubeconfig');
    checkUsable(kc, origin);
    return { config: kc, origin };
  }

  const list = (env.KUBECONFIG ?? '').split(delimiter).filter((p) => p !== '');
  if (list.length > 0) {
    const origin = `$KUBECONFIG (${list.join(delimiter)})`;
    const [first, ...rest] = list as [string, ...string[]];
    const kc = loadFile(first, 'kubeconfig from $KUBECONFIG');
    for (const path of rest) mergeInto(kc, loadFile(path, 'kubeconfig from $KUBECONFIG'));
    checkUsable(kc, origin);
    return { config: kc, origin };
  }

  if (env.KUBERNETES_SERVICE_HOST) {
    const root = options.serviceAccountRoot ?? '';
    const token = `${root}${SERVICE_ACCOUNT_TOKEN}`;
    if (!env.KUBERNETES_SERVICE_PORT) {
      throw new ConfigError('in-cluster config: KUBERNETES_SERVICE_HOST is set but KUBERNETES_SERVICE_PORT is not');
    }
    if (!existsSync(token)) {
      throw new ConfigError(
        `in-cluster config: no service-account token at ${token}; mount one (automountServiceAccountToken) or pass --kubeconfig`,
      );
    }
    const kc = new KubeConfig();
    // client-node reads the host and port from process.env itself.
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = env.KUBERNETES_SERVICE_HOST;
    process.env.KUBERNETES_SERVICE_PORT = env.KUBERNETES_SERVICE_PORT;
    try {
      kc.loadFromCluster(root);
    } finally {
      restoreEnv('KUBERNETES_SERVICE_HOST', saved.host);
      restoreEnv('KUBERNETES_SERVICE_PORT', saved.port);
    }
    const origin = 'in-cluster service account';
    checkUsable(kc, origin);
    return { config: kc, origin };
  }

  throw new ConfigError(
    'no Kubernetes API configuration found: pass --kubeconfig FILE, set $KUBECONFIG, or run in a Pod with a service account',
  );
}

/**
 * kubectl's merge of a $KUBECONFIG list: for each name the first file that defines it wins, and
 * the first current-context set wins (client-node's mergeConfig throws on duplicates instead).
 */
function mergeInto(kc: KubeConfig, later: KubeConfig): void {
  for (const c of later.getClusters()) if (!kc.getCluster(c.name)) kc.addCluster(c);
  for (const u of later.getUsers()) if (!kc.getUser(u.name)) kc.addUser(u);
  for (const x of later.getContexts()) if (!kc.getContextObject(x.name)) kc.addContext(x);
  if (!kc.getCurrentContext() && later.getCurrentContext()) kc.setCurrentContext(later.getCurrentContext());
}

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
