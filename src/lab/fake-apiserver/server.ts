/*
 * A small fake Kubernetes API server speaking the real wire protocol over plain HTTP, so tests
 * can run the real @kubernetes/client-node informers against it:
 *   - GET lists of services, endpointslices (namespaced and all-namespaces) and nodes, with
 *     `metadata.resourceVersion`, `labelSelector` and `fieldSelector`; GET of single objects;
 *   - `?watch=true`: a chunked stream of `{"type":...,"object":...}` lines, headers flushed at
 *     once; from a resourceVersion it replays later events first, like the watch cache; objects
 *     that stop (start) matching a selector arrive as DELETED (ADDED), as the cacher does;
 *   - BOOKMARK events for watches that allow them; an ERROR event carrying a 410 Expired Status
 *     for a resourceVersion older than the last `compact()`;
 *   - faults: `dropConnections()`, `endWatches()`, `down()` / `up()` on the same port.
 * One global resourceVersion counter across kinds, as etcd's revision.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { parseFieldSelector, parseLabelSelector, SelectorError, type Labels } from './selectors.js';

export type Kind = 'Service' | 'EndpointSlice' | 'Node';

/** A Kubernetes object as JSON. Only metadata is looked into. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Labels;
    resourceVersion?: string;
    uid?: string;
    creationTimestamp?: string;
    [field: string]: unknown;
  };
  [field: string]: unknown;
}

interface Resource {
  kind: Kind;
  listKind: string;
  apiVersion: string;
  /** URL prefix of the API group version. */
  prefix: string;
  plural: string;
  namespaced: boolean;
}

const RESOURCES: Resource[] = [
  { kind: 'Service', listKind: 'ServiceList', apiVersion: 'v1', prefix: '/api/v1', plural: 'services', namespaced: true },
  {
    kind: 'EndpointSlice',
    listKind: 'EndpointSliceList',
    apiVersion: 'discovery.k8s.io/v1',
    prefix: '/apis/discovery.k8s.io/v1',
    plural: 'endpointslices',
    namespaced: true,
  },
  { kind: 'Node', listKind: 'NodeList', apiVersion: 'v1', prefix: '/api/v1', plural: 'nodes', namespaced: false },
];

function resourceOf(kind: string): Resource {
  const r = RESOURCES.find((x) => x.kind === kind);
  if (!r) throw new Error(`fake apiserver: unsupported kind '${kind}'`);
  return r;
}

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface StoredEvent {
  rv: number;
  kind: Kind;
  type: EventType;
  object: KubeObject;
  /** The object before this event, for selector transitions; null on creation. */
  previous: KubeObject | null;
}

interface Watcher {
  kind: Kind;
  namespace: string | null;
  matches: (o: KubeObject) => boolean;
  bookmarks: boolean;
  res: ServerResponse;
  timeout: NodeJS.Timeout | null;
}

export interface RequestLogEntry {
  method: string;
  /** Path without the query string. */
  path: string;
  query: Record<string, string>;
  watch: boolean;
}

export interface FakeApiServerOptions {
  /** Send a BOOKMARK to watches that allow them this often (ms); 0 = only on `bookmark()`. */
  bookmarkIntervalMs?: number;
}

function statusBody(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

export class FakeApiServer {
  private readonly server: Server;
  private port = 0;
  private rv = 1000;
  /** Watches from a resourceVersion below this get 410 Expired. */
  private oldestWatchableRv = 0;
  private readonly store = new Map<Kind, Map<string, KubeObject>>();
  private events: StoredEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly sockets = new Set<Socket>();
  private bookmarkTimer: NodeJS.Timeout | null = null;
  private uidCounter = 0;
  /** Every request received, in order. */
  readonly requestLog: RequestLogEntry[] = [];
  /** When set, every request is refused with this status (401 Unauthorized, 403 Forbidden). */
  private denyStatus: 401 | 403 | null = null;

  constructor(private readonly options: FakeApiServerOptions = {}) {
    for (const r of RESOURCES) this.store.set(r.kind, new Map());
    this.server = createServer((req, res) => this.handle(req, res));
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
  }

  /** Listens on 127.0.0.1 (an ephemeral port the first time, the same port after `down()`). */
  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = (this.server.address() as AddressInfo).port;
    if (this.options.bookmarkIntervalMs && !this.bookmarkTimer) {
      this.bookmarkTimer = setInterval(() => this.bookmark(), this.options.bookmarkIntervalMs);
    }
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The current (latest) resourceVersion. */
  get resourceVersion(): string {
    return String(this.rv);
  }

  async stop(): Promise<void> {
    if (this.bookmarkTimer) clearInterval(this.bookmarkTimer);
    this.bookmarkTimer = null;
    await this.down();
  }

  /** Stops listening (new connections are refused) and drops every open connection. */
  async down(): Promise<void> {
    const closed = this.server.listening
      ? new Promise<void>((resolve) => this.server.close(() => resolve()))
      : Promise.resolve();
    this.dropConnections();
    await closed;
  }

  /** Listens again on the same port. */
  async up(): Promise<void> {
    await this.start();
  }

  /** Destroys every open connection mid-stream, as a crashed server or broken network would. */
  dropConnections(): void {
    for (const w of this.watchers) this.closeWatcher(w, false);
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  /** Ends every watch cleanly (final chunk sent), as the API server does on a watch timeout. */
  endWatches(): void {
    for (const w of this.watchers) this.closeWatcher(w, true);
  }

  /** Forgets the event history: watches from any resourceVersion before now get 410 Expired. */
  compact(): void {
    this.events = [];
    this.oldestWatchableRv = this.rv;
  }

  /** Sends a BOOKMARK with the current resourceVersion to every watch that allows bookmarks. */
  bookmark(): void {
    for (const w of this.watchers) if (w.bookmarks) this.sendBookmark(w);
  }

  /** Refuses every request from now on as the real server does without credentials (401) or RBAC (403); null to serve again. */
  deny(status: 401 | 403 | null): void {
    this.denyStatus = status;
  }

  /** Number of open watch streams. */
  get activeWatches(): number {
    return this.watchers.size;
  }

  /** List (non-watch GET collection) requests received for a path (prefix match on `path`). */
  listRequests(pathPrefix = ''): RequestLogEntry[] {
    return this.requestLog.filter((r) => !r.watch && r.path.startsWith(pathPrefix) && this.isCollection(r.path));
  }

  watchRequests(pathPrefix = ''): RequestLogEntry[] {
    return this.requestLog.filter((r) => r.watch && r.path.startsWith(pathPrefix));
  }

  /** Creates or replaces an object (by kind, namespace, name); returns it as stored. */
  createOrUpdate(input: KubeObject): KubeObject {
    const res = resourceOf(input.kind ?? '');
    const obj = clone(input);
    obj.apiVersion = res.apiVersion;
    obj.kind = res.kind;
    if (res.namespaced) obj.metadata.namespace = obj.metadata.namespace ?? 'default';
    else delete obj.metadata.namespace;
    const key = this.key(obj);
    const objects = this.objects(res.kind);
    const previous = objects.get(key) ?? null;
    this.rv += 1;
    obj.metadata.resourceVersion = String(this.rv);
    obj.metadata.uid = previous?.metadata.uid ?? `uid-${++this.uidCounter}`;
    obj.metadata.creationTimestamp = previous?.metadata.creationTimestamp ?? new Date().toISOString();
    objects.set(key, obj);
    this.record({ rv: this.rv, kind: res.kind, type: previous ? 'MODIFIED' : 'ADDED', object: obj, previous });
    return clone(obj);
  }

  /** Deletes an object; returns whether it existed. */
  delete(kind: Kind, namespace: string | null, name: string): boolean {
    const res = resourceOf(kind);
    const key = res.namespaced ? `${namespace ?? 'default'}/${name}` : name;
    const objects = this.objects(kind);
    const previous = objects.get(key);
    if (!previous) return false;
    objects.delete(key);
    this.rv += 1;
    // The DELETED event carries the last state with the deletion's resourceVersion.
    const gone = clone(previous);
    gone.metadata.resourceVersion = String(this.rv);
    this.record({ rv: this.rv, kind, type: 'DELETED', object: gone, previous });
    return true;
  }

  get(kind: Kind, namespace: string | null, name: string): KubeObject | undefined {
    const res = resourceOf(kind);
    const o = this.objects(kind).get(res.namespaced ? `${namespace ?? 'default'}/${name}` : name);
    return o && clone(o);
  }

  private objects(kind: Kind): Map<string, KubeObject> {
    const m = this.store.get(kind);
    if (!m) throw new Error(`fake apiserver: no store for ${kind}`);
    return m;
  }

  private key(o: KubeObject): string {
    return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
  }

  private isCollection(path: string): boolean {
    return RESOURCES.some((r) => path.endsWith(`/${r.plural}`));
  }

  private record(event: StoredEvent): void {
    this.events.push(event);
    for (const w of this.watchers) {
      if (w.kind === event.kind) this.deliver(w, event);
    }
  }

  /** Sends an event to a watcher, translated for its namespace and selectors as the cacher does. */
  private deliver(w: Watcher, e: StoredEvent): void {
    const inScope = (o: KubeObject | null): boolean =>
      o !== null && (w.namespace === null || o.metadata.namespace === w.namespace) && w.matches(o);
    const now = inScope(e.object);
    const before = inScope(e.previous);
    if (e.type === 'DELETED') {
      if (before) this.write(w.res, { type: 'DELETED', object: e.object });
      return;
    }
    if (now && before) this.write(w.res, { type: 'MODIFIED', object: e.object });
    else if (now) this.write(w.res, { type: 'ADDED', object: e.object });
    else if (before && e.previous) {
      const gone = clone(e.previous);
      gone.metadata.resourceVersion = String(e.rv);
      this.write(w.res, { type: 'DELETED', object: gone });
    }
  }

  private write(res: ServerResponse, event: { type: string; object: unknown }): void {
    if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(event)}\n`);
  }

  private sendBookmark(w: Watcher): void {
    const res = resourceOf(w.kind);
    this.write(w.res, {
      type: 'BOOKMARK',
      object: { kind: res.kind, apiVersion: res.apiVersion, metadata: { resourceVersion: String(this.rv) } },
    });
  }

  private closeWatcher(w: Watcher, clean: boolean): void {
    this.watchers.delete(w);
    if (w.timeout) clearTimeout(w.timeout);
    if (clean) w.res.end();
    else w.res.destroy();
  }

  private sendJson(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query = Object.fromEntries(url.searchParams.entries());
    const watch = query.watch === 'true' || query.watch === '1';
    this.requestLog.push({ method: req.method ?? 'GET', path: url.pathname, query, watch });

    if (this.denyStatus === 401) {
      this.sendJson(res, 401, statusBody(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    if (this.denyStatus === 403) {
      const resource = url.pathname.split('/').pop() ?? '';
      this.sendJson(res, 403, statusBody(403, 'Forbidden', `${resource} is forbidden: User "system:anonymous" cannot list resource "${resource}" at the cluster scope`));
      return;
    }
    if (req.method !== 'GET') {
      this.sendJson(res, 405, statusBody(405, 'MethodNotAllowed', `${req.method} is not supported here`));
      return;
    }
    const route = this.route(url.pathname);
    if (!route) {
      this.sendJson(res, 404, statusBody(404, 'NotFound', `the server could not find the requested resource`));
      return;
    }
    let labelMatch: (l: Labels) => boolean;
    let fieldMatch: (s: { name: string; namespace: string }) => boolean;
    try {
      labelMatch = parseLabelSelector(query.labelSelector ?? '');
      fieldMatch = parseFieldSelector(query.fieldSelector ?? '');
    } catch (err) {
      if (!(err instanceof SelectorError)) throw err;
      this.sendJson(res, 400, statusBody(400, 'BadRequest', err.message));
      return;
    }
    const matches = (o: KubeObject): boolean =>
      labelMatch(o.metadata.labels ?? {}) &&
      fieldMatch({ name: o.metadata.name, namespace: o.metadata.namespace ?? '' });
    const inNamespace = (o: KubeObject): boolean =>
      route.namespace === null || o.metadata.namespace === route.namespace;

    if (route.name !== null) {
      const obj = this.get(route.resource.kind, route.namespace, route.name);
      if (!obj) {
        this.sendJson(
          res,
          404,
          statusBody(404, 'NotFound', `${route.resource.plural} "${route.name}" not found`),
        );
      } else {
        this.sendJson(res, 200, obj);
      }
      return;
    }

    if (watch) {
      this.startWatch(req, res, route.resource, route.namespace, matches, query);
      return;
    }

    const items = [...this.objects(route.resource.kind).values()]
      .filter((o) => inNamespace(o) && matches(o))
      .sort((a, b) => this.key(a).localeCompare(this.key(b)))
      .map((o) => {
        // List items carry no kind/apiVersion on the wire.
        const { kind: _k, apiVersion: _a, ...rest } = clone(o);
        return rest;
      });
    this.sendJson(res, 200, {
      kind: route.resource.listKind,
      apiVersion: route.resource.apiVersion,
      metadata: { resourceVersion: String(this.rv) },
      items,
    });
  }

  private startWatch(
    req: IncomingMessage,
    res: ServerResponse,
    resource: Resource,
    namespace: string | null,
    matches: (o: KubeObject) => boolean,
    query: Record<string, string>,
  ): void {
    const rvParam = query.resourceVersion ?? '';
    if (rvParam !== '' && !/^\d+$/.test(rvParam)) {
      this.sendJson(res, 400, statusBody(400, 'BadRequest', `invalid resource version: ${rvParam}`));
      return;
    }
    // The API server answers a watch with 200 at once and streams; flush headers immediately.
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Transfer-Encoding': 'chunked',
      'Cache-Control': 'no-cache, private',
    });
    res.flushHeaders();

    const from = rvParam === '' ? null : Number(rvParam);
    if (from !== null && from !== 0 && from < this.oldestWatchableRv) {
      // As the watch cache: a 200 response whose only event is an ERROR with a 410 Status.
      this.write(res, {
        type: 'ERROR',
        object: statusBody(410, 'Expired', 'too old resource version'),
      });
      res.end();
      return;
    }

    const w: Watcher = {
      kind: resource.kind,
      namespace,
      matches,
      bookmarks: query.allowWatchBookmarks === 'true',
      res,
      timeout: null,
    };
    this.watchers.add(w);
    req.on('close', () => this.watchers.delete(w));
    res.on('close', () => this.watchers.delete(w));

    if (from === null || from === 0) {
      // No (or "any") resourceVersion: synthetic ADDED events for the current state first.
      for (const o of [...this.objects(resource.kind).values()].sort((a, b) => this.key(a).localeCompare(this.key(b)))) {
        if ((namespace === null || o.metadata.namespace === namespace) && matches(o)) {
          this.write(res, { type: 'ADDED', object: o });
        }
      }
    } else {
      for (const e of this.events) if (e.kind === resource.kind && e.rv > from) this.deliver(w, e);
    }
    const timeoutSeconds = Number(query.timeoutSeconds ?? '0');
    if (timeoutSeconds > 0) w.timeout = setTimeout(() => this.closeWatcher(w, true), timeoutSeconds * 1000);
  }

  private route(
    path: string,
  ): { resource: Resource; namespace: string | null; name: string | null } | null {
    for (const resource of RESOURCES) {
      if (!path.startsWith(`${resource.prefix}/`)) continue;
      const segs = path.slice(resource.prefix.length + 1).split('/').filter((s) => s !== '');
      if (resource.namespaced && segs[0] === 'namespaces' && segs[2] === resource.plural && segs.length <= 4) {
        return { resource, namespace: segs[1] ?? null, name: segs[3] ?? null };
      }
      if (segs[0] === resource.plural && segs.length <= 2) {
        // A name on an all-namespaces path of a namespaced kind does not exist in the real API.
        if (resource.namespaced && segs.length === 2) return null;
        return { resource, namespace: null, name: segs[1] ?? null };
      }
    }
    return null;
  }
}
