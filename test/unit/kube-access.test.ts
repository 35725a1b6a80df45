/*
 * Reaching the API server as kubectl would: a plain http:// server works (kubectl proxy, a local
 * test API); what no wait can heal (a malformed kubeconfig, an unknown scheme, certificate files
 * that are missing or not PEM) fails at load as one ConfigError line; and an API that refuses
 * vipr's credentials (401) or permissions (403) is logged as an error that says what to fix.
 * Real client library, real fake API server over HTTP, real TLS parsing of generated certificates.
 */
import { oneLineConfigError } from '../helpers/errors.js';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { KubeSource, type InformerRestart } from '../../src/sources/kube.js';
import { loadKubeConfig } from '../../src/sources/kubeconfig.js';
import { rawEndpointSlice, rawNode, rawService } from '../fake-apiserver/fixtures.js';
import { kubeconfigFor } from '../../src/lab/fake-apiserver/kubeconfig.js';
import { FakeApiServer } from '../../src/lab/fake-apiserver/server.js';

const dir = mkdtempSync(join(tmpdir(), 'vipr-kube-access-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A kubeconfig as kubectl proxy users write it: http://, no insecure-skip-tls-verify. */
function plainKubeconfig(server: string, cluster: string[] = [], user = '  user: {}'): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: c',
    '  cluster:',
    `    server: ${server}`,
    ...cluster.map((l) => `    ${l}`),
    'users:',
    '- name: u',
    user,
    'contexts:',
    '- name: x',
    '  context: {cluster: c, user: u}',
    'current-context: x',
    '',
  ].join('\n');
}

function write(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}


/** A self-signed certificate and its key, made by openssl. */
function certificate(name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', `/CN=${name}`], {
    stdio: 'ignore',
  });
  return { cert, key };
}

describe('plain http:// API servers, as kubectl', () => {
  const server = new FakeApiServer();
  let source: KubeSource | null = null;

  beforeAll(async () => {
    await server.start();
    server.createOrUpdate(rawService('web', { clusterIP: '10.96.0.10' }));
    server.createOrUpdate(rawEndpointSlice('web-1', 'web', ['10.0.0.1']));
    server.createOrUpdate(rawNode('node-a', { internalIPs: ['192.168.1.10'] }));
  });
  afterAll(async () => {
    await source?.stop();
    await server.stop();
  });

  test('a kubeconfig with server http://… and no insecure-skip-tls-verify lists Services and EndpointSlices', async () => {
    const path = write('plain-http', plainKubeconfig(server.url));
    const restarts: InformerRestart[] = [];
    source = new KubeSource({
      kubeConfig: loadKubeConfig({ kubeconfig: path, env: {} }).config,
      nodeName: 'node-a',
      restartBackoff: { initial: 20, max: 40 },
      onRestart: (r) => restarts.push(r),
    });
    const started = source.start();
    const outcome = await Promise.race([started.then(() => 'listed'), sleep(3000).then(() => 'still waiting')]);
    expect({ outcome, restarts: restarts.map((r) => r.error) }).toEqual({ outcome: 'listed', restarts: [] });
    expect([...source.current().services.keys()]).toEqual(['default/web']);
    expect(source.current().endpointSlices.get('default/web-1')?.endpoints.flatMap((e) => e.addresses)).toEqual(['10.0.0.1']);
    expect(source.node().ips).toEqual(['192.168.1.10']);
  });
});

describe('kubeconfig errors no wait can heal: one line at load', () => {
  test.each([
    ['malformed YAML', () => write('malformed', 'clusters: [\n  - {name: c, cluster: {server: "https://x"\n'), /^cannot load kubeconfig .*malformed: /],
    ['an unknown scheme', () => write('ftp', plainKubeconfig('ftp://x')), /cluster 'c' server ftp:\/\/x: scheme 'ftp' is not supported; use https:\/\/ \(or http:\/\/ for kubectl proxy\)/],
    ['a server that is no URL', () => write('nourl', plainKubeconfig('not a url')), /cluster 'c' server 'not a url' is not a URL; expected https:\/\/HOST/],
    [
      'a missing certificate-authority file',
      () => write('noca', plainKubeconfig('https://127.0.0.1:6443', [`certificate-authority: ${join(dir, 'no-such-ca.crt')}`])),
      /certificate-authority .*no-such-ca\.crt: no such file/,
    ],
    [
      'a missing client-key file',
      () => {
        const { cert } = certificate('client-nokey');
        return write('nokey', plainKubeconfig('https://127.0.0.1:6443', [], `  user: {client-certificate: ${cert}, client-key: ${join(dir, 'gone.key')}}`));
      },
      /client-key .*gone\.key: no such file/,
    ],
    [
      'a certificate-authority file that is not PEM',
      () => write('badca', plainKubeconfig('https://127.0.0.1:6443', [`certificate-authority: ${write('garbage.crt', 'not a certificate\n')}`])),
      /TLS cannot use certificate-authority .*garbage\.crt: /,
    ],
    [
      "a client key that is not the certificate's",
      () => {
        const a = certificate('client-a');
        const b = certificate('client-b');
        return write('mismatch', plainKubeconfig('https://127.0.0.1:6443', [], `  user: {client-certificate: ${a.cert}, client-key: ${b.key}}`));
      },
      /TLS cannot use client-certificate .*client-a\.crt, client-key .*client-b\.key: /,
    ],
  ])('%s', (_what, make, pattern) => {
    const path = make();
    expect(oneLineConfigError(() => loadKubeConfig({ kubeconfig: path, env: {} }))).toMatch(pattern);
  });

  test('valid certificate files load', () => {
    const ca = certificate('ca');
    const client = certificate('client');
    const path = write('good-tls', plainKubeconfig('https://127.0.0.1:6443', [`certificate-authority: ${ca.cert}`], `  user: {client-certificate: ${client.cert}, client-key: ${client.key}}`));
    expect(loadKubeConfig({ kubeconfig: path, env: {} }).config.getCurrentCluster()?.server).toBe('https://127.0.0.1:6443');
  });
});

describe('401 and 403 from the API: errors that say what to fix', () => {
  test.each([
    [401, /credentials \(401 Unauthorized, before any RBAC check\): check the kubeconfig user or the service account token/],
    [403, /may not list\/watch services \(403\): grant its service account get, list and watch .* \(RBAC\)/],
  ] as const)('%d', async (status, hint) => {
    const server = new FakeApiServer();
    await server.start();
    server.deny(status);
    const lines: Array<{ level: number; msg: string; resource?: string }> = [];
    const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as { level: number; msg: string }) });
    const source = new KubeSource({
      kubeConfig: loadKubeConfig({ kubeconfig: write(`deny-${status}`, kubeconfigFor(server.url)), env: {} }).config,
      nodeName: 'node-a',
      restartBackoff: { initial: 20, max: 40 },
      log,
    });
    try {
      void source.start().catch(() => undefined);
      const deadline = Date.now() + 5000;
      while (!lines.some((l) => l.resource === 'services' && l.level >= 50) && Date.now() < deadline) await sleep(20);
      const services = lines.filter((l) => l.resource === 'services' && l.level >= 40);
      expect(services.length).toBeGreaterThan(0);
      const first = services[0]!;
      expect(first.level).toBe(50); // pino's error level
      expect(first.msg).toMatch(hint);

      // Access granted again: the informers recover by themselves.
      server.deny(null);
      server.createOrUpdate(rawService('web', { clusterIP: '10.96.0.10' }));
      server.createOrUpdate(rawNode('node-a', { internalIPs: ['192.168.1.10'] }));
      const until = Date.now() + 5000;
      while (!source.current().services.has('default/web') && Date.now() < until) await sleep(20);
      expect([...source.current().services.keys()]).toEqual(['default/web']);
    } finally {
      await source.stop();
      await server.stop();
    }
  });
});
