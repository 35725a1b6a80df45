/*
 * The cluster lab's files, checked here without a cluster:
 *   - deploy/ manifests against the Kubernetes API schemas (kubernetes-models' validators), plus
 *     the rules the API server enforces beyond the schema that matter to us (Bidirectional mount
 *     propagation only when privileged, mounts naming volumes) and the policy the issue asks for
 *     (read-only RBAC on exactly services, endpointslices, nodes; capabilities; probes);
 *   - the privileged variant, with its kustomize JSON patch applied;
 *   - the Dockerfile linted with dockerfile-utils (the linter behind the Docker language server)
 *     and hadolint's apt rules;
 *   - the Vagrantfile with `vagrant validate`, the lab's shell scripts with shellcheck, and the
 *     lab's node scripts with `node --check`.
 * Tools missing on the machine fail the test with the package to install: `make deps` installs
 * them (vagrant, shellcheck).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { validate as lintDockerfile } from 'dockerfile-utils';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';

const ROOT = process.cwd();
const DEPLOY = join(ROOT, 'deploy');

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates one object with the kubernetes-models class for its apiVersion/kind; throws when invalid. */
function validateAgainstSchema(obj: Json): void {
  const key = `${String(obj['apiVersion'])} ${String(obj['kind'])}`;
  switch (key) {
    case 'v1 ServiceAccount':
      new ServiceAccount(obj).validate();
      return;
    case 'v1 ConfigMap':
      new ConfigMap(obj).validate();
      return;
    case 'rbac.authorization.k8s.io/v1 ClusterRole':
      new ClusterRole(obj as ConstructorParameters<typeof ClusterRole>[0]).validate();
      return;
    case 'rbac.authorization.k8s.io/v1 ClusterRoleBinding':
      new ClusterRoleBinding(obj as ConstructorParameters<typeof ClusterRoleBinding>[0]).validate();
      return;
    case 'apps/v1 DaemonSet':
      new DaemonSet(obj as ConstructorParameters<typeof DaemonSet>[0]).validate();
      return;
    default:
      throw new Error(`no schema for ${key}: add it to the test`);
  }
}

function readDocs(path: string): Json[] {
  return parseAllDocuments(readFileSync(path, 'utf8')).map((d) => {
    if (d.errors.length > 0) throw new Error(`${path}: ${d.errors[0]?.message}`);
    const v: unknown = d.toJS();
    if (!isObject(v)) throw new Error(`${path}: a document is not an object`);
    return v;
  });
}

const MANIFEST_FILES = readdirSync(DEPLOY)
  .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  .sort();
const OBJECTS = MANIFEST_FILES.flatMap((f) => readDocs(join(DEPLOY, f)).map((obj) => ({ file: f, obj })));

function find(kind: string): Json {
  const hit = OBJECTS.find((o) => o.obj['kind'] === kind);
  if (!hit) throw new Error(`no ${kind} in deploy/`);
  return hit.obj;
}

/** Follows a path of keys and array indexes; throws when a step is missing. */
function at(obj: unknown, ...path: (string | number)[]): unknown {
  let cur: unknown = obj;
  for (const step of path) {
    if (typeof step === 'number' ? !Array.isArray(cur) : !isObject(cur)) {
      throw new Error(`no ${path.join('.')} (stopped at ${String(step)})`);
    }
    cur = (cur as Record<string | number, unknown>)[step];
  }
  return cur;
}

function arr(v: unknown): unknown[] {
  if (!Array.isArray(v)) throw new Error(`expected an array, got ${JSON.stringify(v)}`);
  return v;
}

function podSpec(ds: Json): Json {
  return at(ds, 'spec', 'template', 'spec') as Json;
}

function container(ds: Json): Json {
  return arr(podSpec(ds)['containers'])[0] as Json;
}

/**
 * The API server's own checks on a pod template that the OpenAPI schema cannot express, the ones
 * this DaemonSet could trip: every mount names a volume, and Bidirectional propagation only in a
 * privileged container (ValidateVolumeMounts / validateMountPropagation in
 * pkg/apis/core/validation).
 */
function podTemplateProblems(ds: Json): string[] {
  const spec = podSpec(ds);
  const volumes = new Set(arr(spec['volumes'] ?? []).map((v) => String((v as Json)['name'])));
  const problems: string[] = [];
  for (const c of arr(spec['containers'])) {
    const ctr = c as Json;
    const privileged = isObject(ctr['securityContext']) && ctr['securityContext']['privileged'] === true;
    for (const m of arr(ctr['volumeMounts'] ?? [])) {
      const mount = m as Json;
      if (!volumes.has(String(mount['name']))) problems.push(`mount ${String(mount['name'])}: no such volume`);
      if (mount['mountPropagation'] === 'Bidirectional' && !privileged) {
        problems.push(`mount ${String(mount['name'])}: Bidirectional mount propagation is available only to privileged containers`);
      }
    }
  }
  return problems;
}

/** RFC 6902 `replace`/`add` on object paths and array indexes: what the privileged overlay uses. */
function applyJsonPatch(doc: unknown, ops: unknown[]): unknown {
  const out = structuredClone(doc);
  for (const raw of ops) {
    const op = raw as { op: string; path: string; value: unknown };
    if (op.op !== 'replace' && op.op !== 'add') throw new Error(`patch op ${op.op} not supported by the test`);
    const steps = op.path.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    const last = steps.pop();
    if (last === undefined) throw new Error('empty patch path');
    const parent = at(out, ...steps.map((s) => (/^\d+$/.test(s) ? Number(s) : s))) as Record<string, unknown>;
    if (op.op === 'replace' && !(last in parent)) throw new Error(`replace of missing ${op.path}`);
    parent[last] = op.value;
  }
  return out;
}

describe('deploy/ manifests', () => {
  it.each(OBJECTS.map((o) => [`${o.file}: ${String(o.obj['kind'])}`, o.obj] as const))('%s matches the Kubernetes API schema', (_name, obj) => {
    expect(() => validateAgainstSchema(obj)).not.toThrow();
  });

  it('the schema validation rejects what the API server would (so the check above can fail)', () => {
    const ds = structuredClone(find('DaemonSet'));
    delete (at(ds, 'spec') as Json)['selector'];
    expect(() => validateAgainstSchema(ds)).toThrow(/selector/);
    const badPort = structuredClone(find('DaemonSet'));
    (at(badPort, 'spec', 'template', 'spec', 'containers', 0, 'ports', 0) as Json)['containerPort'] = 'healthz';
    expect(() => validateAgainstSchema(badPort)).toThrow();
  });

  it('kustomization.yaml lists every manifest in deploy/', () => {
    const [k] = readDocs(join(DEPLOY, 'kustomization.yaml'));
    expect([...arr(at(k, 'resources'))].sort()).toEqual(MANIFEST_FILES);
  });

  it('the ClusterRole only reads services, endpointslices and nodes', () => {
    const rules = arr(at(find('ClusterRole'), 'rules')).map((r) => r as Json);
    const granted = rules.flatMap((r) =>
      arr(r['apiGroups']).flatMap((g) => arr(r['resources']).map((res) => `${String(g)}/${String(res)}: ${arr(r['verbs']).map(String).sort().join(',')}`)),
    );
    expect(granted.sort()).toEqual(['/nodes: get,list,watch', '/services: get,list,watch', 'discovery.k8s.io/endpointslices: get,list,watch']);
  });

  it('the binding ties that role to the ServiceAccount the DaemonSet runs as', () => {
    const sa = find('ServiceAccount');
    const binding = find('ClusterRoleBinding');
    const ds = find('DaemonSet');
    expect(at(binding, 'roleRef')).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: at(find('ClusterRole'), 'metadata', 'name') });
    expect(at(binding, 'subjects')).toEqual([{ kind: 'ServiceAccount', name: at(sa, 'metadata', 'name'), namespace: 'kube-system' }]);
    expect(podSpec(ds)['serviceAccountName']).toBe(at(sa, 'metadata', 'name'));
    for (const o of [sa, ds, find('ConfigMap')]) expect(at(o, 'metadata', 'namespace')).toBe('kube-system');
  });

  it('the DaemonSet runs on every node in the host network, with the node name from the downward API', () => {
    const ds = find('DaemonSet');
    const spec = podSpec(ds);
    expect(spec['hostNetwork']).toBe(true);
    expect(spec['dnsPolicy']).toBe('ClusterFirstWithHostNet');
    expect(spec['tolerations']).toEqual([{ operator: 'Exists' }]);
    const c = container(ds);
    const env = arr(c['env']).map((e) => e as Json);
    expect(env.find((e) => e['name'] === 'NODE_NAME')?.['valueFrom']).toEqual({ fieldRef: { fieldPath: 'spec.nodeName' } });
    expect(arr(c['args'])).toEqual(expect.arrayContaining(['run', '--node-name=$(NODE_NAME)', '--healthz-bind-address=0.0.0.0:10256']));
  });

  it('the agent reaches the API server through the ConfigMap, not the Service VIP', () => {
    const data = at(find('ConfigMap'), 'data') as Json;
    const env = arr(container(find('DaemonSet'))['env']).map((e) => e as Json);
    for (const [name, key] of [
      ['KUBERNETES_SERVICE_HOST', 'k8s-service-host'],
      ['KUBERNETES_SERVICE_PORT', 'k8s-service-port'],
    ] as const) {
      const ref = at(env.find((e) => e['name'] === name), 'valueFrom', 'configMapKeyRef') as Json;
      expect(ref).toEqual({ name: at(find('ConfigMap'), 'metadata', 'name'), key });
      expect(typeof data[key]).toBe('string');
    }
    expect(data['k8s-service-host']).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(Number(data['k8s-service-port'])).toBeGreaterThan(0);
  });

  it('liveness and readiness probe /healthz on 10256', () => {
    const c = container(find('DaemonSet'));
    for (const probe of ['livenessProbe', 'readinessProbe']) {
      expect(at(c, probe, 'httpGet')).toEqual({ path: '/healthz', port: 10256 });
    }
  });

  it('the container has exactly BPF, NET_ADMIN, PERFMON, SYS_ADMIN and the mounts it needs', () => {
    const ds = find('DaemonSet');
    const c = container(ds);
    expect(at(c, 'securityContext', 'privileged')).toBe(false);
    expect(at(c, 'securityContext', 'capabilities')).toEqual({ drop: ['ALL'], add: ['BPF', 'NET_ADMIN', 'PERFMON', 'SYS_ADMIN'] });
    const mounts = new Map(arr(c['volumeMounts']).map((m) => [String((m as Json)['mountPath']), m as Json]));
    const hostPaths = new Map(arr(podSpec(ds)['volumes']).map((v) => [String((v as Json)['name']), String(at(v, 'hostPath', 'path'))]));
    for (const [path, hostPath] of [
      ['/sys/fs/bpf', '/sys/fs/bpf'],
      ['/host/proc', '/proc'],
      ['/run/vipr', '/run/vipr'],
    ] as const) {
      const m = mounts.get(path);
      expect(m).toBeDefined();
      expect(hostPaths.get(String(m?.['name']))).toBe(hostPath);
    }
    expect(mounts.get('/sys/fs/bpf')?.['mountPropagation']).toBe('HostToContainer');
    expect(podTemplateProblems(ds)).toEqual([]);
  });

  it('the API server rule on Bidirectional propagation is enforced by the check', () => {
    const ds = structuredClone(find('DaemonSet'));
    (at(ds, 'spec', 'template', 'spec', 'containers', 0, 'volumeMounts', 0) as Json)['mountPropagation'] = 'Bidirectional';
    expect(podTemplateProblems(ds)).toEqual(['mount bpffs: Bidirectional mount propagation is available only to privileged containers']);
  });

  it('the privileged overlay yields a valid privileged DaemonSet with Bidirectional /sys/fs/bpf', () => {
    const [k] = readDocs(join(DEPLOY, 'privileged', 'kustomization.yaml'));
    expect(at(k, 'resources')).toEqual(['../']);
    const patch = arr(at(k, 'patches')).map((p) => p as Json);
    expect(patch).toHaveLength(1);
    expect(at(patch[0], 'target', 'kind')).toBe('DaemonSet');
    const ops = parseAllDocuments(String(at(patch[0], 'patch')))[0]?.toJS() as unknown[];
    const ds = applyJsonPatch(find('DaemonSet'), ops) as Json;
    expect(() => validateAgainstSchema(ds)).not.toThrow();
    expect(at(container(ds), 'securityContext')).toEqual({ privileged: true });
    expect(at(container(ds), 'volumeMounts', 0)).toMatchObject({ mountPath: '/sys/fs/bpf', mountPropagation: 'Bidirectional' });
    expect(podTemplateProblems(ds)).toEqual([]);
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');

  it('passes dockerfile-utils lint with no diagnostics', () => {
    const problems = lintDockerfile(text).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
    expect(problems).toEqual([]);
  });

  it('the linter does flag a bad Dockerfile', () => {
    expect(lintDockerfile('FROM node:20\nEXPOSE http\nCMD a\nCMD b\n').length).toBeGreaterThanOrEqual(2);
  });

  it('follows hadolint DL3009/DL3015: no recommends, apt lists removed in the same layer', () => {
    const runs = text.replace(/\\\n/g, ' ').split('\n').filter((l) => /^RUN .*apt-get install/.test(l));
    expect(runs.length).toBeGreaterThan(0);
    for (const r of runs) {
      expect(r).toContain('--no-install-recommends');
      expect(r).toContain('rm -rf /var/lib/apt/lists/*');
    }
  });

  it('ships Node 20 slim, libbpf1 and every mode tool, the build, and vipr as entry point', () => {
    const stages = text.split('\n').filter((l) => l.startsWith('FROM '));
    expect(stages[stages.length - 1]).toBe('FROM node:20-bookworm-slim');
    const runtime = text.slice(text.lastIndexOf('FROM '));
    for (const pkg of ['libbpf1', 'iproute2', 'iptables', 'nftables', 'ipset', 'ipvsadm']) expect(runtime).toMatch(new RegExp(`install[^\\n]*\\b${pkg}\\b`));
    for (const path of ['./dist', './node_modules', './bpf/']) expect(runtime).toContain(path);
    expect(runtime).toContain('/usr/local/bin/vipr');
    expect(runtime).toMatch(/^ENTRYPOINT \["vipr"\]$/m);
  });

  it('.dockerignore keeps host builds and node_modules out of the context', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n');
    for (const p of ['node_modules', 'dist', '.git']) expect(ignored).toContain(p);
  });
});

function tool(name: string, pkg: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  if (found.status !== 0) throw new Error(`${name} not found: apt-get install ${pkg} (make deps installs it)`);
  return found.stdout.trim();
}

function filesUnder(dir: string, pred: (f: string) => boolean): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    if (e === '.vagrant' || e === 'node_modules') continue;
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...filesUnder(p, pred));
    else if (pred(p)) out.push(p);
  }
  return out.sort();
}

describe('lab scripts', () => {
  const shellScripts = [
    ...filesUnder(join(ROOT, 'vagrant'), (f) => f.endsWith('.sh')),
    join(ROOT, 'scripts', 'lab-vm.sh'),
    ...filesUnder(join(ROOT, 'scripts', 'lab-vm'), (f) => f.endsWith('.sh')),
  ];

  it('finds the scripts it checks', () => {
    expect(shellScripts.map((f) => relative(ROOT, f))).toEqual(
      expect.arrayContaining(['vagrant/bench.sh', 'vagrant/provision/common.sh', 'vagrant/kind/deploy.sh', 'scripts/lab-vm.sh', 'scripts/lab-vm/guest-run.sh']),
    );
  });

  it('shell scripts pass shellcheck', () => {
    const shellcheck = tool('shellcheck', 'shellcheck');
    const r = spawnSync(shellcheck, ['--format=gcc', ...shellScripts], { encoding: 'utf8' });
    expect(r.stdout.split('\n').filter(Boolean)).toEqual([]);
    expect(r.status).toBe(0);
  });

  it('node scripts parse', () => {
    for (const f of filesUnder(join(ROOT, 'scripts', 'lab-vm'), (p) => p.endsWith('.mjs'))) {
      expect(() => execFileSync(process.execPath, ['--check', f], { stdio: 'pipe' })).not.toThrow();
    }
  });

  it(
    'the Vagrantfile passes vagrant validate (provider options ignored: no provider plugin here)',
    () => {
      const vagrant = tool('vagrant', 'vagrant');
      for (const mode of ['bpf', 'ipvs']) {
        const r = spawnSync(vagrant, ['validate', '--ignore-provider'], {
          cwd: join(ROOT, 'vagrant'),
          encoding: 'utf8',
          env: { ...process.env, VIPR_MODE: mode, VAGRANT_CHECKPOINT_DISABLE: '1' },
          timeout: 120_000,
        });
        expect(`${r.stdout}${r.stderr}`).toContain('Vagrantfile validated successfully');
        expect(r.status).toBe(0);
      }
      const bad = spawnSync(vagrant, ['validate', '--ignore-provider'], {
        cwd: join(ROOT, 'vagrant'),
        encoding: 'utf8',
        env: { ...process.env, VIPR_MODE: 'userspace', VAGRANT_CHECKPOINT_DISABLE: '1' },
        timeout: 120_000,
      });
      expect(bad.status).not.toBe(0);
      expect(`${bad.stdout}${bad.stderr}`).toContain("VIPR_MODE must be 'bpf' or 'ipvs'");
    },
    300_000,
  );
});
