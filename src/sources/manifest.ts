/*
 * Services and EndpointSlices from a directory of manifest files (`*.yaml`, `*.yml`, `*.json`;
 * multi-document YAML; `kind: List`), for clusters without an API server to watch and for the lab.
 *
 * The rule that shapes this module: a bad edit never removes a working service. A document that
 * no longer parses or validates keeps the last valid version of the object it used to define;
 * when it cannot even be told which object that was (broken YAML), every object the file used to
 * define is kept. Objects disappear only when a file that is fully understood no longer defines
 * them, or when the file is deleted.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { ConfigError } from '../errors.js';
import { componentLogger, type Logger } from '../log.js';
import { objectKey, type ClusterObjects } from '../model/k8s.js';
import { plainEqual } from '../model/diff.js';
import { parseObject, type ObjectRef, type ParsedItem, type ParseOutcome } from './parse.js';

/** One thing wrong with (or worth knowing about) a manifest file. */
export class ManifestProblem {
  constructor(
    readonly file: string,
    /** 1-based document number inside the file; null for the whole file. */
    readonly document: number | null,
    readonly message: string,
    /** `error`: something was not applied; `warning`: applied, with a part dropped. */
    readonly severity: 'error' | 'warning' = 'error',
  ) {}

  toString(): string {
    return this.document === null
      ? `${this.file}: ${this.message}`
      : `${this.file}: document ${this.document}: ${this.message}`;
  }
}

export interface ManifestLoad {
  objects: ClusterObjects;
  problems: ManifestProblem[];
  /** Objects of kinds vipr does not read (`file: document N: apps/v1 Deployment default/web`). */
  ignored: string[];
}

const MANIFEST_FILE = /\.(ya?ml|json)$/i;

/** Whether a directory entry is a manifest: by extension, skipping editors' hidden files. */
export function isManifestFile(name: string): boolean {
  return MANIFEST_FILE.test(name) && !name.startsWith('.');
}

interface SourcedItem {
  document: number;
  item: ParsedItem;
}

/** What one file currently contributes: valid objects by the object that defined them. */
interface FileState {
  bySource: Map<ObjectRef, SourcedItem[]>;
  problems: ManifestProblem[];
  ignored: string[];
}

function emptyState(): FileState {
  return { bySource: new Map(), problems: [], ignored: [] };
}

interface DecodedDocument {
  document: number;
  value: unknown;
  /** Set when the document is not valid YAML/JSON. */
  syntaxError: string | null;
}

function firstLine(message: string): string {
  return message.split('\n')[0] ?? message;
}

function decode(file: string, text: string): DecodedDocument[] {
  if (/\.json$/i.test(file)) {
    try {
      return [{ document: 1, value: JSON.parse(text) as unknown, syntaxError: null }];
    } catch (err) {
      return [{ document: 1, value: null, syntaxError: `invalid JSON: ${messageOf(err)}` }];
    }
  }
  return parseAllDocuments(text).map((doc, i) => {
    const first = doc.errors[0];
    if (first) return { document: i + 1, value: null, syntaxError: `invalid YAML: ${firstLine(first.message)}` };
    return { document: i + 1, value: doc.toJS() as unknown, syntaxError: null };
  });
}

/**
 * Parses the text of one file into its contribution, falling back to `previous` wherever a
 * document is broken (see the module comment).
 */
function parseFile(file: string, text: string, previous: FileState): FileState {
  const state = emptyState();
  /** Objects whose document is broken but still identifiable: keep their previous version. */
  const keep = new Set<ObjectRef>();
  let keepAll = false;

  for (const doc of decode(file, text)) {
    if (doc.syntaxError !== null) {
      state.problems.push(new ManifestProblem(file, doc.document, doc.syntaxError));
      keepAll = true;
      continue;
    }
    const outcome: ParseOutcome = parseObject(doc.value);
    for (const source of outcome.sources) {
      const items = state.bySource.get(source.ref) ?? [];
      items.push(...source.items.map((item) => ({ document: doc.document, item })));
      state.bySource.set(source.ref, items);
    }
    for (const failure of outcome.failures) {
      const kept = failure.ref !== null && previous.bySource.has(failure.ref);
      state.problems.push(
        new ManifestProblem(file, doc.document, failure.error.message + (kept ? ' (keeping its last valid version)' : '')),
      );
      if (failure.ref === null) keepAll = true;
      else keep.add(failure.ref);
    }
    for (const warning of outcome.warnings) {
      state.problems.push(new ManifestProblem(file, doc.document, warning, 'warning'));
    }
    for (const ignored of outcome.ignored) state.ignored.push(`${file}: document ${doc.document}: ${ignored}`);
  }

  for (const [ref, items] of previous.bySource) {
    if (state.bySource.has(ref)) continue;
    if (keepAll || keep.has(ref)) state.bySource.set(ref, items);
  }
  return state;
}

function itemKey(item: ParsedItem): string {
  return `${item.kind} ${objectKey(item.object)}`;
}

function where(file: string, document: number): string {
  return `${file} document ${document}`;
}

/** Combines file states (keyed by file name) in name order; the first definition of an object wins. */
function merge(dir: string, files: ReadonlyMap<string, FileState>): ManifestLoad {
  const objects: ClusterObjects = { services: new Map(), endpointSlices: new Map() };
  const problems: ManifestProblem[] = [];
  const ignored: string[] = [];
  const definedAt = new Map<string, string>();
  for (const name of [...files.keys()].sort()) {
    const state = files.get(name);
    if (!state) continue;
    const file = join(dir, name);
    problems.push(...state.problems);
    ignored.push(...state.ignored);
    const items = [...state.bySource.values()].flat().sort((a, b) => a.document - b.document);
    for (const { document, item } of items) {
      const key = itemKey(item);
      const first = definedAt.get(key);
      if (first !== undefined) {
        problems.push(
          new ManifestProblem(file, document, `${key} is already defined in ${first}; this definition is ignored (remove one of them)`),
        );
        continue;
      }
      definedAt.set(key, where(file, document));
      if (item.kind === 'Service') objects.services.set(objectKey(item.object), item.object);
      else objects.endpointSlices.set(objectKey(item.object), item.object);
    }
  }
  return { objects, problems, ignored };
}

/* Duck-typed rather than `instanceof Error`: errors from node:fs may come from another realm (vm, jest). */
function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

function messageOf(err: unknown): string {
  return typeof err === 'object' && err !== null && 'message' in err && typeof err.message === 'string' ? err.message : String(err);
}

/** Reads one file into `states`; a vanished file is dropped, an unreadable one keeps its objects. */
async function refreshFile(dir: string, name: string, states: Map<string, FileState>): Promise<void> {
  const file = join(dir, name);
  const previous = states.get(name) ?? emptyState();
  let text: string;
  try {
    const info = await stat(file);
    if (!info.isFile()) {
      states.delete(name);
      return;
    }
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      states.delete(name);
      return;
    }
    const reason = messageOf(err);
    states.set(name, {
      bySource: previous.bySource,
      ignored: previous.ignored,
      problems: [new ManifestProblem(file, null, `cannot be read (${reason}); keeping what it defined before`)],
    });
    return;
  }
  states.set(name, parseFile(file, text, previous));
}

async function listManifests(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).filter(isManifestFile).sort();
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT') throw new ConfigError(`manifest directory ${dir} does not exist; create it or point vipr at an existing directory`, { cause: err });
    if (code === 'ENOTDIR') throw new ConfigError(`${dir} is not a directory; point vipr at the directory holding the manifests`, { cause: err });
    throw new ConfigError(`cannot read manifest directory ${dir}: ${messageOf(err)}`, { cause: err });
  }
}

/** Reads every manifest in `dir` once. */
export async function loadManifestDir(dir: string): Promise<ManifestLoad> {
  const states = new Map<string, FileState>();
  for (const name of await listManifests(dir)) await refreshFile(dir, name, states);
  return merge(dir, states);
}

export interface ManifestSourceOptions {
  /** Called after start() and after every reload that changed the objects or the problems. */
  onChange: (objects: ClusterObjects, problems: ManifestProblem[]) => void;
  /** Quiet time after the last file event before re-reading (editors write in several steps). */
  debounceMs?: number;
  logger?: Logger;
}

/** Watches a manifest directory and reports the full current set of objects on every change. */
export class ManifestSource {
  private readonly states = new Map<string, FileState>();
  private readonly log: Logger;
  private readonly debounceMs: number;
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** Names from file events since the last reload; null = something unnamed, re-read all. */
  private pending: Set<string> | null = new Set();
  private reloading: Promise<void> = Promise.resolve();
  private last: ManifestLoad = { objects: { services: new Map(), endpointSlices: new Map() }, problems: [], ignored: [] };
  private stopped = false;

  constructor(
    readonly dir: string,
    private readonly options: ManifestSourceOptions,
  ) {
    this.log = (options.logger ?? componentLogger('manifest')).child({ dir });
    this.debounceMs = options.debounceMs ?? 100;
  }

  /** Loads the directory, reports it through onChange, then watches for changes. */
  async start(): Promise<void> {
    this.stopped = false;
    await listManifests(this.dir); // a missing directory is the user's to fix: throw ConfigError
    // Watch before the initial read, so nothing written meanwhile is missed.
    this.watcher = watch(this.dir, { persistent: false }, (_event, name) => this.noteEvent(name));
    this.watcher.on('error', (err) => this.log.error({ err }, 'watching the manifest directory failed'));
    this.pending = null;
    this.reloading = this.reload(true);
    await this.reloading;
  }

  stop(): void {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** The objects and problems as of the last reload. */
  current(): ManifestLoad {
    return this.last;
  }

  private noteEvent(name: string | Buffer | null): void {
    if (this.stopped) return;
    const fileName = name === null ? null : name.toString();
    if (fileName === null) this.pending = null;
    else if (isManifestFile(fileName)) this.pending?.add(fileName);
    else return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.reloading = this.reloading.then(() => this.reload(false));
    }, this.debounceMs);
  }

  private async reload(initial: boolean): Promise<void> {
    if (this.stopped) return;
    const named = this.pending;
    this.pending = new Set();
    try {
      const present = await listManifests(this.dir);
      const toRead = new Set<string>(named ?? present);
      // Files that appeared or vanished without an event naming them (e.g. a rename).
      for (const name of present) if (!this.states.has(name)) toRead.add(name);
      for (const name of this.states.keys()) if (!present.includes(name)) toRead.add(name);
      for (const name of [...toRead].sort()) await refreshFile(this.dir, name, this.states);
    } catch (err) {
      // The directory itself is gone or unreadable: keep serving what we had.
      this.log.error({ err }, 'cannot list the manifest directory; keeping the current services');
      return;
    }
    if (this.stopped) return;
    const next = merge(this.dir, this.states);
    const before = new Set(this.last.problems.map(String));
    for (const problem of next.problems) {
      if (before.has(String(problem))) continue;
      if (problem.severity === 'error') this.log.warn({ file: problem.file, document: problem.document }, String(problem));
      else this.log.info({ file: problem.file, document: problem.document }, String(problem));
    }
    const unchanged =
      !initial &&
      plainEqual([...this.last.objects.services], [...next.objects.services]) &&
      plainEqual([...this.last.objects.endpointSlices], [...next.objects.endpointSlices]) &&
      plainEqual(this.last.problems.map(String), next.problems.map(String));
    this.last = next;
    if (unchanged) return;
    this.log.info(
      { services: next.objects.services.size, endpointSlices: next.objects.endpointSlices.size, problems: next.problems.length },
      'manifests loaded',
    );
    this.options.onChange(next.objects, next.problems);
  }
}
