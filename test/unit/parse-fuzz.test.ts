/*
 * Property-based tests of the edge where outside data enters: manifest text (YAML, JSON) and raw
 * Kubernetes objects (from manifests or the API server). Whatever the input (random, truncated,
 * deeply nested, huge, hostile), the parsers return instead of throwing, and everything they say
 * about it is one line of at most ~300 characters.
 */
import fc from 'fast-check';
import { ConfigError } from '../../src/errors.js';
import { parseManifestText } from '../../src/sources/manifest.js';
import { parseEndpoints, parseEndpointSlice, parseObject, parseService } from '../../src/sources/parse.js';

const MAX_LINE = 300;

function expectOneLine(line: string): void {
  if (/[\n\r\u2028\u2029]/.test(line) || line.length > MAX_LINE) {
    throw new Error(`not one line of at most ${MAX_LINE} characters (${line.length}): ${JSON.stringify(line.slice(0, 400))}`);
  }
}

/** Parses `text` as the file `name` and checks every line it produces. */
function checkManifest(name: string, text: string): ReturnType<typeof parseManifestText> {
  const load = parseManifestText(`/manifests/${name}`, text);
  for (const problem of load.problems) expectOneLine(String(problem));
  for (const ignored of load.ignored) expectOneLine(ignored);
  return load;
}

function checkOutcome(raw: unknown): void {
  const out = parseObject(raw);
  for (const f of out.failures) expectOneLine(f.error.message);
  for (const w of out.warnings) expectOneLine(w);
  for (const i of out.ignored) expectOneLine(i);
}

/** Calls a per-kind parser as the API source does: it may throw ConfigError, and nothing else. */
function checkKindParser(parse: (raw: unknown, warn: (message: string) => void) => unknown, raw: unknown): void {
  const warnings: string[] = [];
  try {
    parse(raw, (message) => warnings.push(message));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    expectOneLine(err.message);
  }
  for (const w of warnings) expectOneLine(w);
}

const VALID_MANIFEST = [
  'apiVersion: v1',
  'kind: Service',
  'metadata:',
  '  name: web',
  '  namespace: shop',
  '  labels: {app: web}',
  'spec:',
  '  type: NodePort',
  '  clusterIP: 10.96.0.10',
  '  ports:',
  '    - {name: http, port: 80, targetPort: http, protocol: TCP}',
  '  sessionAffinity: ClientIP',
  '---',
  'apiVersion: discovery.k8s.io/v1',
  'kind: EndpointSlice',
  'metadata:',
  '  name: web-abc',
  '  namespace: shop',
  '  labels: {kubernetes.io/service-name: web}',
  'addressType: IPv4',
  'ports: [{name: http, port: 8080}]',
  'endpoints:',
  '  - addresses: ["10.244.0.1"]',
  '    conditions: {ready: true, serving: true, terminating: false}',
  '    nodeName: node-a',
  '---',
  'apiVersion: v1',
  'kind: List',
  'items:',
  '  - apiVersion: v1',
  '    kind: Endpoints',
  '    metadata: {name: legacy}',
  '    subsets: [{addresses: [{ip: 10.244.1.1}], ports: [{port: 80}]}]',
  '',
].join('\n');

const VALID_OBJECTS: Record<string, unknown>[] = [
  {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' }, annotations: { note: 'x' } },
    spec: {
      type: 'LoadBalancer',
      clusterIP: '10.96.0.10',
      clusterIPs: ['10.96.0.10'],
      ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30080, protocol: 'TCP' }],
      externalIPs: ['192.0.2.10'],
      loadBalancerSourceRanges: ['203.0.113.0/24'],
      sessionAffinity: 'ClientIP',
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: 31000,
    },
    status: { loadBalancer: { ingress: [{ ip: '198.51.100.1' }] } },
  },
  {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: 'web-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    endpoints: [
      { addresses: ['10.244.0.1'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'a', zone: 'z1', hints: { forZones: [{ name: 'z1' }] } },
    ],
  },
  {
    apiVersion: 'v1',
    kind: 'Endpoints',
    metadata: { name: 'legacy' },
    subsets: [{ addresses: [{ ip: '10.244.1.1', nodeName: 'a' }], notReadyAddresses: [{ ip: '10.244.1.2' }], ports: [{ name: 'http', port: 80 }] }],
  },
];

/** Values that have broken parsers before: wrong types, huge and multi-line strings, odd keys. */
const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.anything({ maxDepth: 3 }),
  fc.string({ unit: 'binary', maxLength: 300 }),
  fc.constantFrom(
    'a'.repeat(100_000),
    `x\n${'line\n'.repeat(1000)}`,
    '',
    'None',
    'List',
    'ServiceList',
    '__proto__',
    'constructor',
    'toString',
    '10.0.0.1',
    '10.0.0.300',
    '::1',
    '0.0.0.0',
    '10.0.0.0/8',
    -1,
    0,
    65536,
    1e308,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    null,
    true,
    [],
    {},
  ),
);

/** A copy of `base` with the value at a path chosen by `steps` replaced (or a field added). */
function mutate(base: unknown, steps: number[], value: unknown, addField: string | null): unknown {
  const copy = structuredClone(base) as unknown;
  let node: unknown = copy;
  for (let i = 0; i < steps.length; i++) {
    if (typeof node !== 'object' || node === null) return copy;
    const container = node as Record<string, unknown>;
    const keys = Object.keys(container);
    if (keys.length === 0) return copy;
    const key = keys[(steps[i] ?? 0) % keys.length] as string;
    const last = i === steps.length - 1;
    if (last) {
      if (addField !== null && !Array.isArray(container)) container[addField] = value;
      else container[key] = value;
      return copy;
    }
    node = container[key];
  }
  return value;
}

const FIELD_NAMES = ['apiVersion', 'kind', 'metadata', 'name', 'namespace', 'items', 'spec', 'ports', 'port', 'endpoints', 'addresses', 'subsets', 'ip', 'labels'];

const mutatedObject = fc
  .tuple(
    fc.constantFrom(...VALID_OBJECTS),
    fc.array(fc.nat(), { minLength: 1, maxLength: 6 }),
    hostileValue,
    fc.option(fc.constantFrom(...FIELD_NAMES), { nil: null }),
  )
  .map(([base, steps, value, field]) => mutate(base, steps, value, field));

describe('parseObject and the per-kind parsers on hostile objects', () => {
  it('accept the valid objects these properties start from (the control)', () => {
    const out = parseObject({ apiVersion: 'v1', kind: 'List', items: VALID_OBJECTS });
    expect(out.failures).toEqual([]);
    expect(out.sources.map((s) => s.ref)).toEqual(['Service shop/web', 'EndpointSlice shop/web-abc', 'Endpoints default/legacy']);
  });

  it('never throw on any value, and say everything on one short line', () => {
    fc.assert(
      fc.property(
        fc.anything({
          maxDepth: 5,
          withBigInt: true,
          withBoxedValues: true,
          withDate: true,
          withMap: true,
          withSet: true,
          withNullPrototype: true,
          withObjectString: true,
          withSparseArray: true,
          withTypedArray: true,
          withUnicodeString: true,
        }),
        (raw) => {
          checkOutcome(raw);
          checkOutcome({ apiVersion: 'v1', kind: 'List', items: [raw] });
          checkKindParser(parseService, raw);
          checkKindParser(parseEndpointSlice, raw);
          checkKindParser(parseEndpoints, raw);
        },
      ),
      { numRuns: 500 },
    );
  });

  it('never throw on valid objects with one field broken, added or replaced', () => {
    fc.assert(
      fc.property(mutatedObject, (raw) => {
        checkOutcome(raw);
        checkOutcome({ apiVersion: 'v1', kind: 'List', items: [raw, raw] });
        checkKindParser(parseService, raw);
        checkKindParser(parseEndpointSlice, raw);
        checkKindParser(parseEndpoints, raw);
      }),
      { numRuns: 1000 },
    );
  });

  it('never throw on Lists nested to any depth', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 30_000 }), fc.constantFrom('List', 'ServiceList', 'EndpointSliceList'), (depth, kind) => {
        let raw: unknown = VALID_OBJECTS[0];
        for (let i = 0; i < depth; i++) raw = { apiVersion: 'v1', kind, items: [raw] };
        checkOutcome(raw);
      }),
      { numRuns: 30 },
    );
  });
});

/** YAML's syntax in pieces, to put together at random. */
const YAML_PIECES = [
  '[', ']', '{', '}', ': ', '- ', '? ', ',', '&a ', '*a ', '&b ', '*b ', '!!str ', '!!map ', '!custom ', '"', "'", '\\', '#',
  '\n', '  ', '\t', '---\n', '...\n', '%YAML 1.2\n', '|', '>-', '<<: *a\n', '\u2028', '\uFEFF', '\u0000',
  'apiVersion: v1', 'kind: Service', 'kind: List', 'kind: 123', 'items:', 'metadata:', 'name: web', 'spec:', 'ports:',
  'port: 80', 'clusterIP: 10.0.0.1', 'addressType: IPv4', 'endpoints:', 'addresses: [10.244.0.1]', 'x'.repeat(2000),
];

const yamlSoup = fc.array(fc.constantFrom(...YAML_PIECES), { maxLength: 400 }).map((pieces) => pieces.join(''));

/** Nesting `depth` deep in one of the shapes YAML and JSON allow. */
function nested(shape: string, depth: number): string {
  switch (shape) {
    case 'flow-seq':
      return '['.repeat(depth) + ']'.repeat(depth);
    case 'flow-map':
      return '{a: '.repeat(depth) + 'x' + '}'.repeat(depth);
    case 'unclosed':
      return '[{a: '.repeat(depth);
    case 'block-seq':
      return `${'- '.repeat(depth)}x\n`;
    case 'explicit-key':
      return `${'? '.repeat(depth)}x\n`;
    case 'block-map':
      return Array.from({ length: Math.min(depth, 3000) }, (_, i) => `${' '.repeat(i)}k:`).join('\n');
    case 'list':
      return '{apiVersion: v1, kind: List, items: ['.repeat(depth) + ']}'.repeat(depth);
    default:
      throw new Error(`unknown shape ${shape}`);
  }
}

/** A "billion laughs": `levels` anchors, each listing the previous one `fanOut` times. */
function aliasBomb(levels: number, fanOut: number): string {
  const lines = ['l0: &l0 lol'];
  for (let i = 1; i <= levels; i++) lines.push(`l${i}: &l${i} [${Array(fanOut).fill(`*l${i - 1}`).join(', ')}]`);
  return `${lines.join('\n')}\n`;
}

describe('parseManifestText on hostile text', () => {
  it('reads the valid manifest these properties start from (the control)', () => {
    const load = checkManifest('valid.yaml', VALID_MANIFEST);
    expect(load.problems).toEqual([]);
    expect([...load.objects.services.keys()]).toEqual(['shop/web']);
    expect([...load.objects.endpointSlices.keys()]).toEqual(['shop/web-abc', 'default/legacy-endpoints-0']);
  });

  it('never throws on random text, as YAML or JSON', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 2000 }), fc.constantFrom('x.yaml', 'x.json'), (text, name) => {
        checkManifest(name, text);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on random arrangements of YAML syntax', () => {
    fc.assert(
      fc.property(yamlSoup, (text) => {
        checkManifest('soup.yaml', text);
      }),
      { numRuns: 500 },
    );
  });

  it('never throws on a valid manifest cut short or with a byte changed', () => {
    fc.assert(
      fc.property(fc.nat(VALID_MANIFEST.length), fc.nat(VALID_MANIFEST.length), fc.string({ unit: 'binary', maxLength: 3 }), (cut, at, insert) => {
        checkManifest('cut.yaml', VALID_MANIFEST.slice(0, cut));
        checkManifest('changed.yaml', VALID_MANIFEST.slice(0, at) + insert + VALID_MANIFEST.slice(at + 1));
        checkManifest('cut.json', JSON.stringify(VALID_OBJECTS).slice(0, cut));
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on nesting of any depth and shape, and says when it is too deep', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('flow-seq', 'flow-map', 'unclosed', 'block-seq', 'explicit-key', 'block-map', 'list'),
        fc.integer({ min: 1, max: 30_000 }),
        (shape, depth) => {
          const load = checkManifest('deep.yaml', nested(shape, depth));
          if (depth > 300) expect(load.problems.length).toBeGreaterThan(0);
          const json = '{"apiVersion":"v1","kind":"List","items":['.repeat(depth) + ']}'.repeat(depth);
          checkManifest('deep.json', json);
        },
      ),
      { numRuns: 15 },
    );
  });

  it('never throws on alias bombs and alias cycles', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 12 }), (levels, fanOut) => {
        checkManifest('bomb.yaml', aliasBomb(levels, fanOut));
        checkManifest('cycle.yaml', `apiVersion: v1\nkind: List\nitems: &items [{apiVersion: v1, kind: List, items: *items}]\n`);
      }),
      { numRuns: 50 },
    );
  });

  it('never throws on huge documents, values and streams', () => {
    const huge = 'a'.repeat(1_000_000);
    checkManifest('name.yaml', `apiVersion: v1\nkind: Service\nmetadata: {name: ${huge}}\n`);
    checkManifest('kind.yaml', `apiVersion: v1\nkind: "${huge}\\n"\nmetadata: {name: x}\n`);
    checkManifest('key.yaml', `${huge}: [\n`);
    checkManifest('line.json', `{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "${huge}"}}`);
    checkManifest('garbage.json', huge);
    const many = checkManifest('many.yaml', 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n'.repeat(5000));
    expect(many.ignored).toHaveLength(5000);
    const items = Array.from({ length: 5000 }, (_, i) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: `s${i}` }, spec: { clusterIP: '10.0.0.300' } }));
    expect(checkManifest('items.json', JSON.stringify({ apiVersion: 'v1', kind: 'List', items })).problems).toHaveLength(5000);
  });
});
