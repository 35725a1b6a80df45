/*
 * The Kubernetes API as a ClusterSource: informers on Services and EndpointSlices (with
 * kube-proxy's label selector) and on this node's Node object.
 *
 * The 1.x client's informer (ListWatch, src/cache.ts) relists by itself only on 410 Gone, and
 * re-watches from its last resourceVersion when a watch ends cleanly; on any other error (API
 * down, connection reset, list failure) it calls its error callbacks and stops for good. So each
 * informer here is restarted with capped exponential backoff on error; a restart resumes the
 * watch from the last resourceVersion (or relists after a 410), and meanwhile the objects stay
 * as they were: the dataplane keeps serving what it had.
 *
 * Raw objects are validated once with parseService / parseEndpointSlice; an invalid object is
 * logged and skipped, keeping its previous valid version. Listeners hear about a change only when
 * the validated objects really differ (a relist that finds everything as it was is silent), and
 * hear only the objects that changed, once per burst of events, with their previous and current
 * versions: never the whole cluster.
 */
import {
  ADD,
  CONNECT,
  CoreV1Api,
  DELETE,
  DiscoveryV1Api,
  ERROR,
  ListWatch,
  UPDATE,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type V1EndpointSlice,
  type V1Node,
  type V1Service,
} from '@kubernetes/client-node';
import { KubeApiError } from '../errors.js';
import { componentLogger, type Logger } from '../log.js';
import type { ClusterObjects } from '../model/k8s.js';
import type { NodeInfo } from '../model/types.js';
import { canonicalIp, familyOf } from '../model/ip.js';
import { realClock, type Clock, type TimerHandle } from '../sync/runner.js';
import { ClusterChangeTracker, deepEqual } from '../sync/tracker.js';
import { parseEndpointSlice, parseService } from './parse.js';
import type { ClusterSource, ObjectDeltas } from './types.js';

/**
 * kube-proxy's selector (cmd/kube-proxy/app/server.go), applied to both Services and
 * EndpointSlices through one informer factory: skip objects that ask for another service proxy,
 * and headless ones (the EndpointSlice controller labels the slices of headless Services).
 */
export const SERVICE_PROXY_LABEL_SELECTOR =
  '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless';

export const ZONE_LABEL = 'topology.kubernetes.io/zone';

const SERVICES_PATH = '/api/v1/services';
const ENDPOINT_SLICES_PATH = '/apis/discovery.k8s.io/v1/endpointslices';
const NODES_PATH = '/api/v1/nodes';
/**
 * How long one list may take before it is abandoned and the informer restarted. The API server
 * itself ends a list at 60 s (--request-timeout); past that, no answer is coming. Needed because a
 * list whose response is cut short (a proxy or load balancer in front of the API server closing
 * the connection mid-body) never settles: node-fetch 2 waits forever for the rest of its
 * Content-Length, and the agent would wait forever for its first sync, saying nothing.
 */
export const LIST_TIMEOUT_MS = 60_000;

export interface RestartBackoff {
  /** Delay before the first restart after an error (ms). */
  initial: number;
  /** Cap on the delay (ms). */
  max: number;
}

export interface KubeSourceOptions {
  kubeConfig: KubeConfig;
  /** This node's name (the Node object watched for addresses and zone). */
  nodeName: string;
  /** Informer restart schedule after errors; default 500 ms doubling up to 30 s. */
  restartBackoff?: RestartBackoff;
  clock?: Clock;
  log?: Logger;
  /** Called on every informer restart (for metrics). */
  onRestart?: (event: InformerRestart) => void;
  /** How long one list may take before the informer is restarted (default LIST_TIMEOUT_MS). */
  listTimeoutMs?: number;
}

export interface InformerRestart {
  /** `services`, `endpointslices` or `node`. */
  resource: string;
  /** Restarts of this informer in a row without success, this one included. */
  attempt: number;
  delayMs: number;
  error: string;
}

/**
 * One line describing an informer error: a fetch error with its code, a watch's HTTP status, or
 * the generated client's ApiException (whose message spans four lines) as `HTTP 403: <Status
 * message>`.
 */
export function describeKubeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const e = err as Error & { code?: unknown; statusCode?: unknown; body?: unknown };
  const status = e.statusCode ?? e.code;
  if (typeof status === 'number' && e.body !== undefined) {
    let body: unknown = e.body;
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body) as unknown;
      } catch {
        // Not JSON: show the text itself.
      }
    }
    const message =
      body && typeof body === 'object' && typeof (body as { message?: unknown }).message === 'string'
        ? (body as { message: string }).message
        : String(body).slice(0, 200);
    return `HTTP ${status}: ${message}`;
  }
  const first = e.message.split('\n')[0] ?? '';
  return status === undefined ? first : `${first} (${String(status)})`;
}

/** The HTTP status of a failed list (ApiException `code`) or watch (`statusCode`), else null. */
export function kubeErrorStatus(err: unknown): number | null {
  if (!(err instanceof Error)) return null;
  const e = err as Error & { code?: unknown; statusCode?: unknown };
  const status = e.statusCode ?? e.code;
  return typeof status === 'number' ? status : null;
}

/**
 * What to do about an error no retry heals by itself: the API server refused vipr's credentials
 * (401) or its permissions (403). Null for everything else.
 */
export function kubeAccessHint(err: unknown, resource: string): string | null {
  const status = kubeErrorStatus(err);
  if (status === 401) {
    return "the API server rejected vipr's credentials (401 Unauthorized, before any RBAC check): check the kubeconfig user or the service account token";
  }
  if (status === 403) {
    return `vipr may not list/watch ${resource} (403): grant its service account get, list and watch on services, endpointslices (discovery.k8s.io) and nodes with a ClusterRole and ClusterRoleBinding (RBAC)`;
  }
  return null;
}

function keyOf(obj: KubernetesObject): string | null {
  const name = obj.metadata?.name;
  if (!name) return null;
  return `${obj.metadata?.namespace ?? 'default'}/${name}`;
}

/**
 * Node facts from a Node object: InternalIPs then ExternalIPs of both families (in the Node's
 * order, canonical text; a dual-stack node lists one of each), and its zone label.
 */
export function nodeInfoFrom(name: string, node: V1Node | null): NodeInfo {
  if (!node) return { name, zone: null, ips: [] };
  const ips: string[] = [];
  for (const type of ['InternalIP', 'ExternalIP']) {
    for (const a of node.status?.addresses ?? []) {
      if (a.type !== type || a.address.includes('%') || familyOf(a.address) === null) continue;
      const ip = canonicalIp(a.address);
      if (!ips.includes(ip)) ips.push(ip);
    }
  }
  return { name, zone: node.metadata?.labels?.[ZONE_LABEL] || null, ips };
}

/**
 * The client's Watch, plus what the informer lacks: bookmarks requested (as client-go's
 * reflector does, so a resumed watch rarely starts from a compacted resourceVersion), a hook when
 * a watch is established, and no watch surviving `stop()` (a watch whose request was in flight
 * when the informer stopped would otherwise run on).
 */
class FollowerWatch extends Watch {
  stopped = false;

  constructor(
    config: KubeConfig,
    private readonly onEstablished: () => void,
  ) {
    super(config);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    let ended = false;
    const controller = await super.watch(
      path,
      { ...queryParams, allowWatchBookmarks: true },
      callback,
      (err: unknown) => {
        ended = true;
        done(err);
      },
    );
    if (this.stopped) controller.abort();
    else if (!ended) this.onEstablished();
    return controller;
  }
}

interface FollowerHandlers<T extends KubernetesObject> {
  upsert(obj: T): void;
  remove(obj: T): void;
}

/** One informer, restarted with backoff whenever it gives up. */
class Follower<T extends KubernetesObject> {
  private readonly informer: ListWatch<T>;
  private readonly watch: FollowerWatch;
  private stopped = false;
  private attempt = 0;
  private restartTimer: TimerHandle | null = null;
  private listed = false;
  private resolveListed: (() => void) | null = null;
  private rejectListed: ((err: Error) => void) | null = null;
  /** Resolves after the first successful list has been applied. */
  readonly initialList: Promise<void>;

  constructor(
    readonly resource: string,
    kubeConfig: KubeConfig,
    path: string,
    list: () => Promise<KubernetesListObject<T>>,
    selectors: { label?: string; field?: string },
    handlers: FollowerHandlers<T>,
    private readonly backoff: RestartBackoff,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly onRestart: (event: InformerRestart) => void,
    listTimeoutMs: number,
  ) {
    this.initialList = new Promise<void>((resolve, reject) => {
      this.resolveListed = resolve;
      this.rejectListed = reject;
    });
    // Keep an unobserved rejection (stop before start) from being reported as unhandled.
    this.initialList.catch(() => undefined);
    this.watch = new FollowerWatch(kubeConfig, () => {
      this.attempt = 0;
    });
    const listed = async (): Promise<KubernetesListObject<T>> => {
      // A list that never settles is abandoned (its request is left to the socket's fate) and
      // the informer restarted, as after any failed list.
      let timer: TimerHandle | null = null;
      const timedOut = new Promise<never>((_, reject) => {
        timer = clock.setTimeout(
          () => reject(new KubeApiError(`${resource}: the list did not complete within ${listTimeoutMs / 1000} s`)),
          listTimeoutMs,
        );
      });
      let result: KubernetesListObject<T>;
      try {
        result = await Promise.race([list(), timedOut]);
      } finally {
        if (timer !== null) clock.clearTimeout(timer);
      }
      // A list that completes after stop() must not let the informer open a new watch.
      if (this.stopped) throw new KubeApiError(`${resource}: informer stopped`);
      this.attempt = 0;
      if (!this.listed) {
        this.listed = true;
        // The informer applies the items right after this promise resolves, in the same
        // microtask run; a macrotask later they are all in.
        setImmediate(() => this.resolveListed?.());
      }
      return result;
    };
    // makeInformer(), but with our Watch and with a field selector (for the Node).
    this.informer = new ListWatch<T>(path, this.watch, listed, false, selectors.label, selectors.field);
    this.informer.on(ADD, (o) => handlers.upsert(o));
    this.informer.on(UPDATE, (o) => handlers.upsert(o));
    this.informer.on(DELETE, (o) => handlers.remove(o));
    this.informer.on(ERROR, (err: unknown) => this.failed(err));
    this.informer.on(CONNECT, () => this.log.debug({ resource }, 'informer connecting'));
  }

  start(): void {
    this.informer.start().catch((err: unknown) => this.failed(err));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watch.stopped = true;
    if (this.restartTimer !== null) this.clock.clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.rejectListed?.(new KubeApiError(`${this.resource}: stopped before the initial list completed`));
    await this.informer.stop();
  }

  private failed(err: unknown): void {
    // After stop() the informer reports its own aborted watch as an error: not a failure.
    if (this.stopped || this.restartTimer !== null) return;
    this.attempt += 1;
    const delayMs = Math.min(this.backoff.initial * 2 ** (this.attempt - 1), this.backoff.max);
    const error = describeKubeError(err);
    const hint = kubeAccessHint(err, this.resource);
    // Denied access lasts until someone fixes RBAC or the credentials: an error, not a blip.
    if (hint !== null) {
      this.log.error({ resource: this.resource, attempt: this.attempt, retryInMs: delayMs, error, hint }, `informer denied access: ${hint}`);
    } else {
      this.log.warn(
        { resource: this.resource, attempt: this.attempt, retryInMs: delayMs, error },
        'informer stopped on error; restarting',
      );
    }
    this.onRestart({ resource: this.resource, attempt: this.attempt, delayMs, error });
    this.restartTimer = this.clock.setTimeout(() => {
      this.restartTimer = null;
      if (!this.stopped) this.start();
    }, delayMs);
  }
}

export class KubeSource implements ClusterSource {
  private readonly log: Logger;
  private readonly tracker = new ClusterChangeTracker();
  private readonly listeners: Array<(deltas: ObjectDeltas) => void> = [];
  private readonly nodeListeners: Array<(node: NodeInfo) => void> = [];
  private readonly followers: Follower<KubernetesObject>[];
  private nodeInfo: NodeInfo;
  private nodeChanged = false;
  private started = false;
  private stopped = false;
  private flushQueued = false;
  private restartCount = 0;

  constructor(private readonly options: KubeSourceOptions) {
    this.log = options.log ?? componentLogger('kube-source');
    this.nodeInfo = nodeInfoFrom(options.nodeName, null);
    const kc = options.kubeConfig;
    const core = kc.makeApiClient(CoreV1Api);
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    const backoff = options.restartBackoff ?? { initial: 500, max: 30_000 };
    const clock = options.clock ?? realClock;
    const listTimeout = options.listTimeoutMs ?? LIST_TIMEOUT_MS;
    const onRestart = (event: InformerRestart): void => {
      this.restartCount += 1;
      options.onRestart?.(event);
    };
    const labelSelector = SERVICE_PROXY_LABEL_SELECTOR;
    const fieldSelector = `metadata.name=${options.nodeName}`;

    const services = new Follower<V1Service>(
      'services',
      kc,
      SERVICES_PATH,
      () => core.listServiceForAllNamespaces({ labelSelector }),
      { label: labelSelector },
      { upsert: (o) => this.upsertService(o), remove: (o) => this.remove('Service', o) },
      backoff,
      clock,
      this.log,
      onRestart,
      listTimeout,
    );
    const slices = new Follower<V1EndpointSlice>(
      'endpointslices',
      kc,
      ENDPOINT_SLICES_PATH,
      () => discovery.listEndpointSliceForAllNamespaces({ labelSelector }),
      { label: labelSelector },
      { upsert: (o) => this.upsertSlice(o), remove: (o) => this.remove('EndpointSlice', o) },
      backoff,
      clock,
      this.log,
      onRestart,
      listTimeout,
    );
    const node = new Follower<V1Node>(
      'node',
      kc,
      NODES_PATH,
      () => core.listNode({ fieldSelector }),
      { field: fieldSelector },
      { upsert: (o) => this.setNode(o), remove: () => this.setNode(null) },
      backoff,
      clock,
      this.log,
      onRestart,
      listTimeout,
    );
    this.followers = [services, slices, node] as Follower<KubernetesObject>[];
  }

  /** Informer restarts since construction (all resources). */
  get restarts(): number {
    return this.restartCount;
  }

  /** Starts the informers; resolves once services, slices and the node have been listed. */
  async start(): Promise<void> {
    if (this.started || this.stopped) throw new KubeApiError('KubeSource: start() called twice');
    for (const f of this.followers) f.start();
    await Promise.all(this.followers.map((f) => f.initialList));
    // What start() callers read with current() includes everything so far: nothing to announce.
    this.tracker.take();
    this.nodeChanged = false;
    this.started = true;
    this.log.info(
      {
        services: this.tracker.current().services.size,
        endpointSlices: this.tracker.current().endpointSlices.size,
        node: this.nodeInfo,
      },
      'initial lists complete',
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.followers.map((f) => f.stop()));
  }

  /** Whether services, slices and the node have all been listed (start() has resolved). */
  hasSynced(): boolean {
    return this.started;
  }

  current(): ClusterObjects {
    return this.tracker.current();
  }

  /** Each burst of changes after start(): only the objects that changed, (previous, current). */
  onChange(listener: (deltas: ObjectDeltas) => void): void {
    this.listeners.push(listener);
  }

  /** This node's addresses and zone, from its Node object (empty until it is seen). */
  node(): NodeInfo {
    return { ...this.nodeInfo, ips: [...this.nodeInfo.ips] };
  }

  onNodeChange(listener: (node: NodeInfo) => void): void {
    this.nodeListeners.push(listener);
  }

  private upsertService(raw: V1Service): void {
    const key = keyOf(raw);
    if (!key) return;
    try {
      if (this.tracker.setService(key, parseService(raw, (message) => this.log.warn({ service: key }, message))).changed) this.scheduleFlush();
    } catch (err) {
      this.log.warn({ service: key, err: describeKubeError(err) }, 'invalid Service skipped; keeping its previous version');
    }
  }

  private upsertSlice(raw: V1EndpointSlice): void {
    const key = keyOf(raw);
    if (!key) return;
    try {
      const slice = parseEndpointSlice(raw, (message) => this.log.warn({ endpointSlice: key }, message));
      if (this.tracker.setEndpointSlice(key, slice).changed) this.scheduleFlush();
    } catch (err) {
      this.log.warn(
        { endpointSlice: key, err: describeKubeError(err) },
        'invalid EndpointSlice skipped; keeping its previous version',
      );
    }
  }

  private remove(kind: 'Service' | 'EndpointSlice', raw: KubernetesObject): void {
    const key = keyOf(raw);
    if (!key) return;
    const diff = kind === 'Service' ? this.tracker.setService(key, null) : this.tracker.setEndpointSlice(key, null);
    if (diff.changed) this.scheduleFlush();
  }

  private setNode(raw: V1Node | null): void {
    const next = nodeInfoFrom(this.options.nodeName, raw);
    if (deepEqual(next, this.nodeInfo)) return;
    this.nodeInfo = next;
    this.nodeChanged = true;
    this.scheduleFlush();
  }

  /**
   * Announces changes once per burst: a relist or a replayed watch delivers many events in one
   * go, and changes that cancel out within it (delete then re-add) are never announced.
   */
  private scheduleFlush(): void {
    if (!this.started || this.stopped || this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => {
      this.flushQueued = false;
      if (this.stopped) return;
      if (this.nodeChanged) {
        this.nodeChanged = false;
        const node = this.node();
        for (const l of this.nodeListeners) this.call(() => l(node));
      }
      if (this.tracker.hasPending()) {
        const { services, endpointSlices } = this.tracker.take();
        for (const l of this.listeners) this.call(() => l({ services, endpointSlices }));
      }
    });
  }

  private call(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.error({ err }, 'change listener threw');
    }
  }
}
