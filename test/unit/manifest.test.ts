import type { ObjectDeltas } from '../../src/sources/types.js';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, truncate, unlink, writeFile, rename, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ConfigError } from '../../src/errors.js';
import type { ClusterObjects } from '../../src/model/k8s.js';
import { loadManifestDir, MAX_FILE_BYTES, ManifestProblem, ManifestSource } from '../../src/sources/manifest.js';

const silent = pino({ level: 'silent' });

function serviceYaml(name: string, clusterIP: string, port = 80): string {
  return [
    'apiVersion: v1',
    'kind: Service',
    'metadata:',
    `  name: ${name}`,
    'spec:',
    `  clusterIP: ${clusterIP}`,
    '  ports:',
    `    - port: ${port}`,
    '',
  ].join('\n');
}

function sliceYaml(service: string, ips: string[]): string {
  return [
    'apiVersion: discovery.k8s.io/v1',
    'kind: EndpointSlice',
    'metadata:',
    `  name: ${service}-abc`,
    '  labels:',
    `    kubernetes.io/service-name: ${service}`,
    'addressType: IPv4',
    'ports:',
    '  - port: 8080',
    'endpoints:',
    ...ips.map((ip) => `  - addresses: ["${ip}"]`),
    '',
  ].join('\n');
}

const docs = (...parts: string[]): string => parts.join('---\n');

/** ~700 bytes of YAML whose aliases expand to 9^14 strings (a "billion laughs"). */
function aliasBomb(): string {
  const names = 'abcdefghijklmn';
  const lines = ['apiVersion: v1', 'kind: Service', 'metadata: { name: bomb }', 'spec:', '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
  for (let i = 1; i < names.length; i++) {
    const prev = names[i - 1] ?? '';
    lines.push(`  ${names[i]}: &${names[i]} [${Array(9).fill(`*${prev}`).join(',')}]`);
  }
  return lines.join('\n') + '\n';
}

/** A `kind: List` whose only item is a List, `depth` times, around one Service. */
function deepListJson(depth: number): string {
  return '{"apiVersion":"v1","kind":"List","items":['.repeat(depth) + JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'deep' } }) + ']}'.repeat(depth);
}

/** The same in YAML flow style. */
function deepListYaml(depth: number): string {
  return '{apiVersion: v1, kind: List, items: ['.repeat(depth) + '{apiVersion: v1, kind: Service, metadata: {name: deep}}' + ']}'.repeat(depth);
}

/** One line, at most ~300 characters: what every problem line must be. */
function expectOneLine(line: string): void {
  expect(line).not.toMatch(/[\n\r\u2028\u2029]/);
  expect(line.length).toBeLessThanOrEqual(300);
}

/** Fails when `promise` takes longer than `ms` (a read that blocks on a FIFO never settles). */
async function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not settled within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function clusterIPs(objects: ClusterObjects): Record<string, string | null> {
  return Object.fromEntries([...objects.services].map(([k, s]) => [k, s.clusterIPs[0] ?? null]));
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'vipr-manifest-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('loadManifestDir', () => {
  it('reads multi-document YAML, Lists and JSON, skipping other files', async () => {
    await writeFile(join(dir, 'a.yaml'), docs(serviceYaml('web', '10.0.0.10'), sliceYaml('web', ['10.244.0.1', '10.244.0.2']), ''));
    await writeFile(
      join(dir, 'b.yml'),
      [
        'apiVersion: v1',
        'kind: List',
        'items:',
        '  - apiVersion: v1',
        '    kind: Service',
        '    metadata: { name: api, namespace: shop }',
        '    spec: { clusterIP: 10.0.0.20, ports: [{ port: 443 }] }',
        '  - apiVersion: apps/v1',
        '    kind: Deployment',
        '    metadata: { name: api, namespace: shop }',
        '',
      ].join('\n'),
    );
    await writeFile(
      join(dir, 'c.json'),
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Endpoints',
        metadata: { name: 'legacy' },
        subsets: [{ addresses: [{ ip: '10.244.9.1' }], ports: [{ port: 80 }] }],
      }),
    );
    await writeFile(join(dir, 'notes.txt'), 'not a manifest');
    await writeFile(join(dir, '.hidden.yaml'), 'garbage: [');

    const load = await loadManifestDir(dir);
    expect(load.problems).toEqual([]);
    expect(clusterIPs(load.objects)).toEqual({ 'default/web': '10.0.0.10', 'shop/api': '10.0.0.20' });
    expect([...load.objects.endpointSlices.keys()]).toEqual(['default/web-abc', 'default/legacy-endpoints-0']);
    expect(load.objects.endpointSlices.get('default/web-abc')?.endpoints).toHaveLength(2);
    expect(load.objects.endpointSlices.get('default/legacy-endpoints-0')?.serviceName).toBe('legacy');
    expect(load.ignored).toEqual([`${join(dir, 'b.yml')}: document 1: items[1]: apps/v1 Deployment shop/api`]);
  });

  it('reports problems as `file: document N: what is wrong` and keeps the valid documents', async () => {
    const file = join(dir, 'web.yaml');
    await writeFile(file, docs(serviceYaml('ok', '10.0.0.1'), serviceYaml('bad', '10.0.0.300'), 'key: [unclosed\n', serviceYaml('ok2', '10.0.0.2')));
    const load = await loadManifestDir(dir);
    expect(clusterIPs(load.objects)).toEqual({ 'default/ok': '10.0.0.1', 'default/ok2': '10.0.0.2' });
    const printed = load.problems.map(String);
    expect(printed).toHaveLength(2);
    expect(printed[0]).toMatch(
      new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: document 2: Service default/bad: spec.clusterIP "10.0.0.300" is not an IPv4 or IPv6 address`),
    );
    expect(printed[1]).toContain(`${file}: document 3: invalid YAML: `);
    expect(load.problems[0]).toBeInstanceOf(ManifestProblem);
    expect(load.problems[0]?.severity).toBe('error');
  });

  it('reports a dropped endpoint as a warning, keeping the slice', async () => {
    await writeFile(join(dir, 's.yaml'), sliceYaml('web', ['10.244.0.1', '10.244.0.999']));
    const load = await loadManifestDir(dir);
    expect(load.objects.endpointSlices.get('default/web-abc')?.endpoints).toHaveLength(1);
    expect(load.problems.map((p) => [p.severity, String(p)])).toEqual([
      [
        'warning',
        `${join(dir, 's.yaml')}: document 1: EndpointSlice default/web-abc: endpoints[1].addresses[0] "10.244.0.999" is not an IPv4 address; endpoint dropped`,
      ],
    ]);
  });

  it('reports a duplicate object and keeps the first definition (by file name)', async () => {
    await writeFile(join(dir, 'b.yaml'), serviceYaml('web', '10.0.0.2'));
    await writeFile(join(dir, 'a.yaml'), serviceYaml('web', '10.0.0.1'));
    const load = await loadManifestDir(dir);
    expect(clusterIPs(load.objects)).toEqual({ 'default/web': '10.0.0.1' });
    expect(load.problems.map(String)).toEqual([
      `${join(dir, 'b.yaml')}: document 1: Service default/web is already defined in ${join(dir, 'a.yaml')} document 1; this definition is ignored (remove one of them)`,
    ]);
  });

  it('throws a ConfigError for a missing directory', async () => {
    await expect(loadManifestDir(join(dir, 'nope'))).rejects.toThrow(ConfigError);
    await expect(loadManifestDir(join(dir, 'nope'))).rejects.toThrow(/does not exist; create it/);
  });

  it('costs an alias bomb or a List nested 20,000 deep only its own file, with one short line each', async () => {
    await writeFile(join(dir, 'a-web.yaml'), serviceYaml('web', '10.0.0.10'));
    await writeFile(join(dir, 'bomb.yaml'), aliasBomb());
    await writeFile(join(dir, 'deep.json'), deepListJson(20_000));
    await writeFile(join(dir, 'deep.yaml'), deepListYaml(20_000));
    await writeFile(join(dir, 'z-api.yaml'), serviceYaml('api', '10.0.0.20'));
    expect(Buffer.byteLength(aliasBomb())).toBeLessThan(800);

    const load = await loadManifestDir(dir);
    expect(clusterIPs(load.objects)).toEqual({ 'default/web': '10.0.0.10', 'default/api': '10.0.0.20' });
    const lines = load.problems.map(String);
    expect(lines.map((line) => line.slice(0, line.indexOf(': document 1: ')))).toEqual(
      ['bomb.yaml', 'deep.json', 'deep.yaml'].map((name) => join(dir, name)),
    );
    for (const line of lines) expectOneLine(line);
    expect(lines[0]).toContain('invalid YAML: ');
    expect(lines[1]).toMatch(/: nested deeper than 100 levels; a Kubernetes object is never that deep$/);
  });

  it('survives YAML nested 20,000 deep in several shapes, read one after the other', async () => {
    // The yaml library composes documents recursively; after it overflowed the stack once, the
    // next parse aborted the whole process (V8: "RegExpCompiler Allocation failed").
    await writeFile(join(dir, 'deep-1.yaml'), `${'- '.repeat(20_000)}x\n`);
    await writeFile(join(dir, 'deep-2.yaml'), '['.repeat(20_000) + ']'.repeat(20_000));
    await writeFile(join(dir, 'deep-3.yaml'), '{a: '.repeat(20_000) + 'x' + '}'.repeat(20_000));
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    const load = await loadManifestDir(dir);
    expect(clusterIPs(load.objects)).toEqual({ 'default/web': '10.0.0.10' });
    expect(load.problems.map(String)).toEqual(
      [1, 2, 3].map((n) => `${join(dir, `deep-${n}.yaml`)}: document 1: nested deeper than 100 levels; a Kubernetes object is never that deep`),
    );
  });

  it('keeps every problem on one line of at most ~300 characters, whatever the file name and content', async () => {
    const name = `bad\nname-${'x'.repeat(150)}.yaml`;
    const huge = 'a'.repeat(100_000);
    await writeFile(join(dir, name), docs(serviceYaml(huge, '10.0.0.1'), `apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ${huge}}\n`, `key: [${huge}\n`));
    const load = await loadManifestDir(dir);
    expect(load.problems).toHaveLength(2);
    expect(load.ignored).toHaveLength(1);
    for (const line of [...load.problems.map(String), ...load.ignored]) {
      expectOneLine(line);
      expect(line).not.toContain('a'.repeat(100));
      expect(line).toContain('bad\\nname-xxx');
    }
  });

  it('does not read a file larger than the manifest size limit', async () => {
    await writeFile(join(dir, 'huge.yaml'), '');
    await truncate(join(dir, 'huge.yaml'), MAX_FILE_BYTES + 1); // sparse: nothing is written
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    const load = await loadManifestDir(dir);
    expect(clusterIPs(load.objects)).toEqual({ 'default/web': '10.0.0.10' });
    expect(load.problems.map(String)).toEqual([
      `${join(dir, 'huge.yaml')}: is ${MAX_FILE_BYTES + 1} bytes, more than the ${MAX_FILE_BYTES} vipr reads from one manifest file; split it`,
    ]);
  });

  it('skips a FIFO, a device and a directory named like manifests without blocking, one line each', async () => {
    execFileSync('mkfifo', [join(dir, 'fifo.yaml')]);
    await mkdir(join(dir, 'dir.yaml'));
    await symlink('/dev/null', join(dir, 'null.yaml'));
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    const load = await within(5000, loadManifestDir(dir));
    expect(clusterIPs(load.objects)).toEqual({ 'default/web': '10.0.0.10' });
    expect(load.problems.map(String)).toEqual([
      `${join(dir, 'dir.yaml')}: is a directory, not a regular file; skipped (rename or remove it)`,
      `${join(dir, 'fifo.yaml')}: is a FIFO, not a regular file; skipped (rename or remove it)`,
      `${join(dir, 'null.yaml')}: is a character device, not a regular file; skipped (rename or remove it)`,
    ]);
  });
});

describe('ManifestSource', () => {
  let source: ManifestSource | null = null;
  /** Each onChange: its deltas, and the whole view the source holds at that moment. */
  let changes: Array<{ objects: ClusterObjects; problems: ManifestProblem[]; deltas: ObjectDeltas }> = [];
  let waiting: (() => void) | null = null;

  afterEach(() => {
    source?.stop();
    source = null;
  });

  async function startSource(): Promise<ManifestSource> {
    changes = [];
    source = new ManifestSource(dir, {
      debounceMs: 30,
      logger: silent,
      onChange: (deltas, problems) => {
        changes.push({ objects: source!.current().objects, problems, deltas });
        waiting?.();
      },
    });
    await source.start();
    return source;
  }

  /** Runs `act`, then waits for the onChange it causes. */
  async function change(act: () => Promise<void>): Promise<{ objects: ClusterObjects; problems: ManifestProblem[]; deltas: ObjectDeltas }> {
    const seen = changes.length;
    const arrived = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no onChange within 5 s')), 5000);
      waiting = () => {
        if (changes.length > seen) {
          clearTimeout(timer);
          waiting = null;
          resolve();
        }
      };
    });
    await act();
    await arrived;
    const last = changes[changes.length - 1];
    if (!last) throw new Error('no change recorded');
    return last;
  }

  it('reports the initial set, then every change', async () => {
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    const s = await startSource();
    expect(changes).toHaveLength(1);
    expect(clusterIPs(s.current().objects)).toEqual({ 'default/web': '10.0.0.10' });

    const added = await change(() => writeFile(join(dir, 'api.yaml'), serviceYaml('api', '10.0.0.20')));
    expect(clusterIPs(added.objects)).toEqual({ 'default/web': '10.0.0.10', 'default/api': '10.0.0.20' });
    // Only the changed file's objects are reported, as (previous, current).
    expect([...added.deltas.services.keys()]).toEqual(['default/api']);
    expect(added.deltas.services.get('default/api')?.previous).toBeNull();
    expect(added.deltas.endpointSlices.size).toBe(0);

    const edited = await change(() => writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.11')));
    expect(clusterIPs(edited.objects)).toEqual({ 'default/web': '10.0.0.11', 'default/api': '10.0.0.20' });
    expect([...edited.deltas.services].map(([k, c]) => [k, c.previous?.clusterIPs[0], c.current?.clusterIPs[0]])).toEqual([['default/web', '10.0.0.10', '10.0.0.11']]);
    expect(s.current().objects).toEqual(edited.objects);

    const removed = await change(() => rm(join(dir, 'api.yaml')));
    expect([...removed.deltas.services].map(([k, c]) => [k, c.current])).toEqual([['default/api', null]]);
  });

  it('an object defined in two files: the first file wins, and removing it hands the object to the second', async () => {
    await writeFile(join(dir, 'a.yaml'), serviceYaml('web', '10.0.0.10'));
    await writeFile(join(dir, 'b.yaml'), serviceYaml('web', '10.0.0.99'));
    const s = await startSource();
    expect(clusterIPs(s.current().objects)).toEqual({ 'default/web': '10.0.0.10' });
    expect(s.current().problems.map(String)).toEqual([
      `${join(dir, 'b.yaml')}: document 1: Service default/web is already defined in ${join(dir, 'a.yaml')} document 1; this definition is ignored (remove one of them)`,
    ]);
    const handed = await change(() => rm(join(dir, 'a.yaml')));
    expect([...handed.deltas.services].map(([k, c]) => [k, c.previous?.clusterIPs[0], c.current?.clusterIPs[0]])).toEqual([['default/web', '10.0.0.10', '10.0.0.99']]);
    expect(handed.problems).toEqual([]);
  });

  it('keeps the last valid version of an object whose document became invalid', async () => {
    await writeFile(join(dir, 'web.yaml'), docs(serviceYaml('web', '10.0.0.10'), sliceYaml('web', ['10.244.0.1'])));
    await startSource();

    const bad = await change(() => writeFile(join(dir, 'web.yaml'), docs(serviceYaml('web', '10.0.0.10', 70000), sliceYaml('web', ['10.244.0.1', '10.244.0.2']))));
    expect(bad.objects.services.get('default/web')?.ports[0]?.port).toBe(80);
    // The valid document of the same file still applies.
    expect(bad.objects.endpointSlices.get('default/web-abc')?.endpoints).toHaveLength(2);
    expect(bad.problems.map(String)).toEqual([
      `${join(dir, 'web.yaml')}: document 1: Service default/web: spec.ports[0].port 70000 is out of range 1-65535 (keeping its last valid version)`,
    ]);

    const fixed = await change(() => writeFile(join(dir, 'web.yaml'), docs(serviceYaml('web', '10.0.0.10', 8080), sliceYaml('web', ['10.244.0.1']))));
    expect(fixed.objects.services.get('default/web')?.ports[0]?.port).toBe(8080);
    expect(fixed.problems).toEqual([]);
  });

  it('a long problem line is cut in its message, never in what vipr did about it', async () => {
    const file = join(dir, `${'w'.repeat(150)}.yaml`);
    await writeFile(file, serviceYaml('web', '10.0.0.10'));
    await startSource();
    const bad = await change(() => writeFile(file, serviceYaml('web', 'not-an-ip')));
    const lines = bad.problems.map(String);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/"not-an-ip" is not an IPv4 or IPv6 address.*… \(keeping its last valid version\)$/);
    expect(lines[0]?.length).toBeLessThanOrEqual(300);
    expect(bad.objects.services.get('default/web')?.clusterIPs).toEqual(['10.0.0.10']);
  });

  it('keeps everything a file defined when it stops being valid YAML', async () => {
    await writeFile(join(dir, 'web.yaml'), docs(serviceYaml('web', '10.0.0.10'), serviceYaml('api', '10.0.0.20')));
    await startSource();

    const broken = await change(() => writeFile(join(dir, 'web.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: web\n'));
    expect(clusterIPs(broken.objects)).toEqual({ 'default/web': '10.0.0.10', 'default/api': '10.0.0.20' });
    expect(broken.problems).toHaveLength(1);
    expect(String(broken.problems[0])).toContain(`${join(dir, 'web.yaml')}: document 1: invalid YAML`);
  });

  it('keeps the previous version when the name itself is broken', async () => {
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    await startSource();
    const nameless = await change(() => writeFile(join(dir, 'web.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {}\nspec: {}\n'));
    expect(clusterIPs(nameless.objects)).toEqual({ 'default/web': '10.0.0.10' });
    expect(nameless.problems.map((p) => p.message)).toEqual(['Service: metadata.name is missing; give the Service a name']);
  });

  it('removes an object removed from a valid file, and everything of a deleted file', async () => {
    await writeFile(join(dir, 'web.yaml'), docs(serviceYaml('web', '10.0.0.10'), serviceYaml('api', '10.0.0.20')));
    await writeFile(join(dir, 'db.yaml'), serviceYaml('db', '10.0.0.30'));
    await startSource();

    const shrunk = await change(() => writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10')));
    expect(clusterIPs(shrunk.objects)).toEqual({ 'default/db': '10.0.0.30', 'default/web': '10.0.0.10' });

    const deleted = await change(() => unlink(join(dir, 'db.yaml')));
    expect(clusterIPs(deleted.objects)).toEqual({ 'default/web': '10.0.0.10' });
  });

  it('follows atomic saves (write to a temp name, rename over the file)', async () => {
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    await startSource();
    const saved = await change(async () => {
      await writeFile(join(dir, 'web.yaml.tmp'), serviceYaml('web', '10.0.0.12'));
      await rename(join(dir, 'web.yaml.tmp'), join(dir, 'web.yaml'));
    });
    expect(clusterIPs(saved.objects)).toEqual({ 'default/web': '10.0.0.12' });
  });

  it('lets the second definition of a duplicate take over when the first goes away', async () => {
    await writeFile(join(dir, 'a.yaml'), serviceYaml('web', '10.0.0.1'));
    await writeFile(join(dir, 'b.yaml'), serviceYaml('web', '10.0.0.2'));
    await startSource();
    expect(changes[0]?.problems).toHaveLength(1);
    const after = await change(() => unlink(join(dir, 'a.yaml')));
    expect(clusterIPs(after.objects)).toEqual({ 'default/web': '10.0.0.2' });
    expect(after.problems).toEqual([]);
  });

  it('does not report a rewrite that changes nothing', async () => {
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    await writeFile(join(dir, 'api.yaml'), serviceYaml('api', '10.0.0.20'));
    await startSource();
    // Rewrite web.yaml identically, then make a real change elsewhere: only the latter reports.
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const real = await change(() => writeFile(join(dir, 'api.yaml'), serviceYaml('api', '10.0.0.21')));
    expect(changes).toHaveLength(2);
    expect(clusterIPs(real.objects)['default/api']).toBe('10.0.0.21');
  });

  it('stops reporting after stop()', async () => {
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    const s = await startSource();
    s.stop();
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.11'));
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(changes).toHaveLength(1);
  });

  it('fails to start on a missing directory with a ConfigError, not synced', async () => {
    const s = new ManifestSource(join(dir, 'missing'), { onChange: () => undefined, logger: silent });
    await expect(s.start()).rejects.toThrow(ConfigError);
    expect(s.hasSynced()).toBe(false);
  });

  it('has synced once start() resolves, with the good files when another one is hostile', async () => {
    await writeFile(join(dir, 'a-web.yaml'), serviceYaml('web', '10.0.0.10'));
    await writeFile(join(dir, 'bomb.yaml'), aliasBomb());
    await writeFile(join(dir, 'deep.json'), deepListJson(20_000));
    await writeFile(join(dir, 'z-api.yaml'), serviceYaml('api', '10.0.0.20'));
    changes = [];
    const s = new ManifestSource(dir, {
      debounceMs: 30,
      logger: silent,
      onChange: (deltas, problems) => changes.push({ objects: s.current().objects, problems, deltas }),
    });
    source = s;
    expect(s.hasSynced()).toBe(false);
    await s.start();
    expect(s.hasSynced()).toBe(true);
    expect(changes).toHaveLength(1);
    expect(clusterIPs(changes[0]?.objects ?? s.current().objects)).toEqual({ 'default/web': '10.0.0.10', 'default/api': '10.0.0.20' });
    expect(changes[0]?.problems.map((p) => p.file)).toEqual([join(dir, 'bomb.yaml'), join(dir, 'deep.json')]);
  });

  it('keeps the last good objects of a file that turns hostile, and follows the other files meanwhile', async () => {
    await writeFile(join(dir, 'web.yaml'), docs(serviceYaml('web', '10.0.0.10'), sliceYaml('web', ['10.244.0.1'])));
    await writeFile(join(dir, 'api.yaml'), serviceYaml('api', '10.0.0.20'));
    await startSource();

    const bombed = await change(() => writeFile(join(dir, 'web.yaml'), aliasBomb()));
    expect(clusterIPs(bombed.objects)).toEqual({ 'default/web': '10.0.0.10', 'default/api': '10.0.0.20' });
    expect(bombed.objects.endpointSlices.get('default/web-abc')?.endpoints).toHaveLength(1);
    expect(bombed.problems).toHaveLength(1);
    expect(String(bombed.problems[0])).toContain(`${join(dir, 'web.yaml')}: document 1: invalid YAML: `);
    expectOneLine(String(bombed.problems[0]));

    const edited = await change(() => writeFile(join(dir, 'api.yaml'), serviceYaml('api', '10.0.0.21')));
    expect(clusterIPs(edited.objects)).toEqual({ 'default/web': '10.0.0.10', 'default/api': '10.0.0.21' });

    const deepened = await change(() => writeFile(join(dir, 'web.yaml'), deepListJson(20_000)));
    expect(clusterIPs(deepened.objects)).toEqual({ 'default/web': '10.0.0.10', 'default/api': '10.0.0.21' });
  });

  it('does not hang on a FIFO named x.yaml, and reports it', async () => {
    execFileSync('mkfifo', [join(dir, 'x.yaml')]);
    await writeFile(join(dir, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    changes = [];
    source = new ManifestSource(dir, { logger: silent, onChange: (deltas, problems) => changes.push({ objects: source!.current().objects, problems, deltas }) });
    await within(5000, source.start());
    expect(clusterIPs(source.current().objects)).toEqual({ 'default/web': '10.0.0.10' });
    expect(source.current().problems.map(String)).toEqual([
      `${join(dir, 'x.yaml')}: is a FIFO, not a regular file; skipped (rename or remove it)`,
    ]);
  });

  it("reloads a ConfigMap-mounted directory when kubelet swaps its ..data symlink", async () => {
    // kubelet's AtomicWriter layout: each key a symlink through ..data to a timestamped directory.
    const first = '..2026_11_30_01_02_03.123';
    await mkdir(join(dir, first));
    await writeFile(join(dir, first, 'web.yaml'), serviceYaml('web', '10.0.0.10'));
    await symlink(first, join(dir, '..data'));
    await symlink('..data/web.yaml', join(dir, 'web.yaml'));
    await startSource();
    expect(clusterIPs(changes[0]?.objects ?? { services: new Map(), endpointSlices: new Map() })).toEqual({ 'default/web': '10.0.0.10' });

    // An update: a new timestamped directory, a ..data_tmp symlink renamed over ..data, the old
    // directory removed. The key's own symlink never changes.
    const updated = await change(async () => {
      const second = '..2026_11_30_01_05_00.456';
      await mkdir(join(dir, second));
      await writeFile(join(dir, second, 'web.yaml'), serviceYaml('web', '10.0.0.11'));
      await symlink(second, join(dir, '..data_tmp'));
      await rename(join(dir, '..data_tmp'), join(dir, '..data'));
      await rm(join(dir, first), { recursive: true });
    });
    expect(clusterIPs(updated.objects)).toEqual({ 'default/web': '10.0.0.11' });
    expect(updated.problems).toEqual([]);
  });
});
