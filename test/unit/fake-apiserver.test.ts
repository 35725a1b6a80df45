/* The fake API server on the wire, with raw HTTP: what the real client library will see. */
import { request, type IncomingMessage } from 'node:http';
import { FakeApiServer } from '../../src/lab/fake-apiserver/server.js';
import { rawEndpointSlice, rawNode, rawService } from '../fake-apiserver/fixtures.js';
import { parseFieldSelector, parseLabelSelector, SelectorError } from '../../src/lab/fake-apiserver/selectors.js';

interface JsonResponse {
  status: number;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown>;
}

function getJson(server: FakeApiServer, path: string): Promise<JsonResponse> {
  return new Promise((resolve, reject) => {
    request(`${server.url}${path}`, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(text) }));
    })
      .on('error', reject)
      .end();
  });
}

interface WatchEvent {
  type: string;
  object: { kind?: string; code?: number; reason?: string; metadata?: { name?: string; resourceVersion?: string } };
}

/** A raw watch stream: events as parsed lines, and whether/how the stream ended. */
class RawWatch {
  readonly events: WatchEvent[] = [];
  status = 0;
  headers: IncomingMessage['headers'] = {};
  ended: 'clean' | 'aborted' | null = null;
  private waiters: Array<() => void> = [];
  private readonly req;

  constructor(server: FakeApiServer, path: string) {
    this.req = request(`${server.url}${path}`, (res) => {
      this.status = res.statusCode ?? 0;
      this.headers = res.headers;
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          this.events.push(JSON.parse(buf.slice(0, nl)) as WatchEvent);
          buf = buf.slice(nl + 1);
        }
        this.notify();
      });
      res.on('end', () => {
        this.ended ??= 'clean';
        this.notify();
      });
      const abort = (): void => {
        this.ended ??= 'aborted';
        this.notify();
      };
      res.on('aborted', abort);
      res.on('error', abort);
      this.notify();
    });
    this.req.on('error', () => {
      this.ended ??= 'aborted';
      this.notify();
    });
    this.req.end();
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until `cond` holds (re-checked on every event), failing after 2 s. */
  async until(cond: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 2000;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(this.events)}`);
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
  }

  close(): void {
    this.req.destroy();
  }
}

function names(list: JsonResponse): string[] {
  return (list.body.items as Array<{ metadata: { name: string } }>).map((i) => i.metadata.name);
}

describe('fake API server', () => {
  let server: FakeApiServer;
  const watches: RawWatch[] = [];
  const watch = (path: string): RawWatch => {
    const w = new RawWatch(server, path);
    watches.push(w);
    return w;
  };

  beforeEach(async () => {
    server = new FakeApiServer();
    await server.start();
  });

  afterEach(async () => {
    for (const w of watches.splice(0)) w.close();
    await server.stop();
  });

  test('lists with kind, resourceVersion, items in both namespaced and all-namespaces paths', async () => {
    server.createOrUpdate(rawService('web'));
    server.createOrUpdate(rawService('db', { namespace: 'prod' }));
    const all = await getJson(server, '/api/v1/services');
    expect(all.status).toBe(200);
    expect(all.body.kind).toBe('ServiceList');
    expect(all.body.apiVersion).toBe('v1');
    expect((all.body.metadata as { resourceVersion: string }).resourceVersion).toBe(server.resourceVersion);
    expect(names(all)).toEqual(['web', 'db']);
    const prod = await getJson(server, '/api/v1/namespaces/prod/services');
    expect(names(prod)).toEqual(['db']);
    const one = await getJson(server, '/api/v1/namespaces/prod/services/db');
    expect(one.body.kind).toBe('Service');
    expect((one.body.metadata as { uid: string }).uid).toMatch(/^uid-/);
    const missing = await getJson(server, '/api/v1/namespaces/prod/services/nope');
    expect(missing.status).toBe(404);
    expect(missing.body).toMatchObject({ kind: 'Status', reason: 'NotFound', code: 404 });

    server.createOrUpdate(rawEndpointSlice('web-abc', 'web', ['10.0.0.1']));
    const slices = await getJson(server, '/apis/discovery.k8s.io/v1/endpointslices');
    expect(slices.body.kind).toBe('EndpointSliceList');
    expect(names(slices)).toEqual(['web-abc']);
    expect(server.listRequests('/api/v1')).toHaveLength(2);
  });

  test('honours label selectors (!key, key, key=v, key!=v) and the node field selector', async () => {
    server.createOrUpdate(rawService('plain'));
    server.createOrUpdate(rawService('headless', { labels: { 'service.kubernetes.io/headless': '' } }));
    server.createOrUpdate(rawService('other', { labels: { 'service.kubernetes.io/service-proxy-name': 'foo' } }));
    server.createOrUpdate(rawService('tiered', { labels: { tier: 'web' } }));
    const q = (sel: string) => getJson(server, `/api/v1/services?labelSelector=${encodeURIComponent(sel)}`);
    expect(names(await q('!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless'))).toEqual([
      'plain',
      'tiered',
    ]);
    expect(names(await q('service.kubernetes.io/headless'))).toEqual(['headless']);
    expect(names(await q('tier=web'))).toEqual(['tiered']);
    expect(names(await q('tier!=web'))).toEqual(['headless', 'other', 'plain']);
    expect((await q('bad key!')).status).toBe(400);

    server.createOrUpdate(rawNode('node-a'));
    server.createOrUpdate(rawNode('node-b'));
    const nodes = await getJson(server, `/api/v1/nodes?fieldSelector=${encodeURIComponent('metadata.name=node-b')}`);
    expect(nodes.body.kind).toBe('NodeList');
    expect(names(nodes)).toEqual(['node-b']);
  });

  test('watch: headers flushed at once, live events as JSON lines, selector transitions', async () => {
    const rv = server.resourceVersion;
    const w = watch(`/api/v1/services?watch=true&resourceVersion=${rv}&labelSelector=${encodeURIComponent('!service.kubernetes.io/headless')}`);
    await w.until(() => w.status === 200, 'headers');
    expect(w.headers['transfer-encoding']).toBe('chunked');
    expect(w.events).toEqual([]);

    server.createOrUpdate(rawService('web'));
    server.createOrUpdate(rawService('web', { port: 81 }));
    server.createOrUpdate(rawService('web', { port: 81, labels: { 'service.kubernetes.io/headless': '' } }));
    server.createOrUpdate(rawService('hidden', { labels: { 'service.kubernetes.io/headless': '' } }));
    server.createOrUpdate(rawService('hidden'));
    server.delete('Service', 'default', 'hidden');
    await w.until(() => w.events.length >= 5, 'five events');
    expect(w.events.map((e) => `${e.type} ${e.object.metadata?.name}`)).toEqual([
      'ADDED web',
      'MODIFIED web',
      'DELETED web', // stopped matching the selector
      'ADDED hidden', // started matching
      'DELETED hidden',
    ]);
    expect(w.events.at(-1)?.object.metadata?.resourceVersion).toBe(server.resourceVersion);
    expect(w.ended).toBeNull();
  });

  test('watch from a resourceVersion replays later events; without one, synthetic ADDED first', async () => {
    server.createOrUpdate(rawService('a'));
    const rv = server.resourceVersion;
    server.createOrUpdate(rawService('b'));
    server.delete('Service', 'default', 'a');
    server.createOrUpdate(rawEndpointSlice('b-1', 'b', ['10.0.0.2']));
    const fromRv = watch(`/api/v1/services?watch=true&resourceVersion=${rv}`);
    await fromRv.until(() => fromRv.events.length >= 2, 'replay');
    expect(fromRv.events.map((e) => `${e.type} ${e.object.metadata?.name}`)).toEqual(['ADDED b', 'DELETED a']);

    const fresh = watch('/api/v1/namespaces/default/services?watch=1');
    await fresh.until(() => fresh.events.length >= 1, 'synthetic add');
    expect(fresh.events.map((e) => `${e.type} ${e.object.metadata?.name}`)).toEqual(['ADDED b']);
  });

  test('BOOKMARK events only for watches that allow them', async () => {
    const rv = server.resourceVersion;
    const withBm = watch(`/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`);
    const without = watch(`/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion=${rv}`);
    await withBm.until(() => withBm.status === 200, 'headers');
    await without.until(() => without.status === 200, 'headers');
    server.createOrUpdate(rawService('unrelated')); // moves the resourceVersion, not seen by slice watches
    await withBm.until(() => server.activeWatches === 2, 'both registered');
    server.bookmark();
    await withBm.until(() => withBm.events.length >= 1, 'bookmark');
    expect(withBm.events[0]).toEqual({
      type: 'BOOKMARK',
      object: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: server.resourceVersion } },
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(without.events).toEqual([]);
  });

  test('after compact(), a watch from an older resourceVersion gets ERROR 410 Expired and ends', async () => {
    server.createOrUpdate(rawService('a'));
    const old = server.resourceVersion;
    server.createOrUpdate(rawService('b'));
    server.compact();
    const w = watch(`/api/v1/services?watch=true&resourceVersion=${old}`);
    await w.until(() => w.ended !== null, 'end of stream');
    expect(w.status).toBe(200);
    expect(w.events).toEqual([
      {
        type: 'ERROR',
        object: {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Failure',
          message: 'too old resource version',
          reason: 'Expired',
          code: 410,
        },
      },
    ]);
    expect(w.ended).toBe('clean');
    // From the current version a watch still works.
    const ok = watch(`/api/v1/services?watch=true&resourceVersion=${server.resourceVersion}`);
    server.createOrUpdate(rawService('c'));
    await ok.until(() => ok.events.length >= 1, 'live event');
    expect(ok.events[0]?.type).toBe('ADDED');
  });

  test('dropConnections() aborts streams; endWatches() ends them cleanly', async () => {
    const rv = server.resourceVersion;
    const a = watch(`/api/v1/services?watch=true&resourceVersion=${rv}`);
    await a.until(() => a.status === 200, 'headers');
    server.dropConnections();
    await a.until(() => a.ended !== null, 'drop');
    expect(a.ended).toBe('aborted');

    const b = watch(`/api/v1/services?watch=true&resourceVersion=${rv}`);
    await b.until(() => b.status === 200, 'headers');
    server.endWatches();
    await b.until(() => b.ended !== null, 'end');
    expect(b.ended).toBe('clean');
  });

  test('down() refuses connections on the port, up() serves again on the same one', async () => {
    const url = server.url;
    await server.down();
    await expect(getJson(server, '/api/v1/services')).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await server.up();
    expect(server.url).toBe(url);
    expect((await getJson(server, '/api/v1/services')).status).toBe(200);
  });
});

describe('selectors', () => {
  test('label selector semantics follow apimachinery', () => {
    const sel = parseLabelSelector('a=1,b!=2,!c,d,e in (x, y),f notin (z)');
    expect(sel({ a: '1', d: '', e: 'y' })).toBe(true);
    expect(sel({ a: '1', b: '2', d: '', e: 'y' })).toBe(false);
    expect(sel({ a: '1', c: 'x', d: '', e: 'y' })).toBe(false);
    expect(sel({ a: '1', e: 'y' })).toBe(false);
    expect(sel({ a: '1', d: '', e: 'q' })).toBe(false);
    expect(sel({ a: '1', d: '', e: 'x', f: 'z' })).toBe(false);
    expect(parseLabelSelector('a==1')({ a: '1' })).toBe(true);
    expect(() => parseLabelSelector('a=1,=b')).toThrow(SelectorError);
  });

  test('field selector supports metadata.name and metadata.namespace only', () => {
    expect(parseFieldSelector('metadata.name=n1')({ name: 'n1', namespace: '' })).toBe(true);
    expect(parseFieldSelector('metadata.name!=n1')({ name: 'n1', namespace: '' })).toBe(false);
    expect(() => parseFieldSelector('spec.nodeName=x')).toThrow(SelectorError);
  });
});
