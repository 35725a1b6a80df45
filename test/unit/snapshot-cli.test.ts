/*
 * `vipr render` and `vipr list` against a cluster (--kubeconfig), with the real client library
 * and the fake API server on loopback: the same Services give the same output as from files.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeApiServer } from '../../src/lab/fake-apiserver/server.js';
import { kubeconfigFor } from '../../src/lab/fake-apiserver/kubeconfig.js';
import { ensureBuilt, vipr } from '../helpers/lab.js';

const api = new FakeApiServer();
const dir = mkdtempSync(join(tmpdir(), 'vipr-snap-'));
const kubeconfig = join(dir, 'kubeconfig');

beforeAll(async () => {
  await ensureBuilt();
  await api.start();
  writeFileSync(kubeconfig, kubeconfigFor(api.url));
  api.createOrUpdate({
    apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' },
    spec: { type: 'NodePort', clusterIP: '10.96.0.10', clusterIPs: ['10.96.0.10'], ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 8080, nodePort: 30080 }] },
  } as never);
  api.createOrUpdate({
    apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice',
    metadata: { name: 'web-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4', ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
    endpoints: [{ addresses: ['10.244.1.5'], conditions: { ready: true }, nodeName: 'n1' }],
  } as never);
  api.createOrUpdate({
    apiVersion: 'v1', kind: 'Node', metadata: { name: 'n1', labels: {} },
    status: { addresses: [{ type: 'InternalIP', address: '192.168.5.1' }] },
  } as never);
}, 120_000);

afterAll(async () => {
  await api.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('vipr list --kubeconfig shows what would be programmed, NodePorts on the Node object\'s address', async () => {
  const res = await vipr(['list', '-n', '--kubeconfig', kubeconfig, '--node-name', 'n1']);
  expect(res.stderr).toBe('');
  expect(res.code).toBe(0);
  expect(res.stdout).toMatch(/^TCP  10\.96\.0\.10:80 random$/m);
  expect(res.stdout).toMatch(/^TCP  192\.168\.5\.1:30080 random$/m);
  expect(res.stdout).toMatch(/-> 10\.244\.1\.5:8080 +Masq/);
});

test('vipr render --kubeconfig prints kube-proxy\'s rules for the cluster\'s Services', async () => {
  const res = await vipr(['render', '--mode', 'iptables', '--kubeconfig', kubeconfig, '--node-name', 'n1']);
  expect(res.code).toBe(0);
  expect(res.stdout).toContain('-A KUBE-SERVICES -m comment --comment "default/web:http cluster IP" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j KUBE-SVC-');
  expect(res.stdout).toContain('--to-destination 10.244.1.5:8080');
});

test('--manifests and --kubeconfig together are refused with one line', async () => {
  const res = await vipr(['list', '--kubeconfig', kubeconfig, '--manifests', dir]);
  expect(res.code).not.toBe(0);
  expect(res.stderr.trim().split('\n')).toHaveLength(1);
  expect(res.stderr).toMatch(/not both/);
});
