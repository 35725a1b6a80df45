/*
 * Services and EndpointSlices from a directory of manifest files (`*.yaml`, `*.yml`, `*.json`;
 * multi-document YAML; `kind: List`), for clusters without an API server to watch and for the lab.
 *
 * The rule that shapes this module: a bad edit never removes a working service. A document that
 * no longer parses or validates keeps the last valid version of the object it used to define;
 * when it cannot even be told which object that was (broken YAML), every object the file used to
 * define is kept. Objects disappear only when a file that is fully understood no longer defines
 * them, or when the file is deleted.
 *
 * Every file is hostile until read: errors are caught per file and per document, so one bad file
 * costs only its own objects (which keep their last good version) and never the read of the
 * others. YAML is expanded with a bound on aliases (a 700-byte "billion laughs" would otherwise
 * expand to gigabytes), documents with a bound on nesting, files with a bound on size; FIFOs,
 * devices and directories named like manifests are reported and never opened; every problem is
 * one line of at most MAX_LINE_CHARS, quoting only excerpts of the input.
 *
 * ManifestSource.start() resolves only after one complete read of the directory (every file
 * parsed or reported as bad); hasSynced() says the same afterwards. A ConfigMap-mounted directory
 * (kubelet swaps a `..data` symlink; the file names never change) is re-read on every swap.
 */
import { constants, watch, type FSWatcher, type Stats } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Composer, isAlias, isCollection, isPair, LineCounter, Parser, type CST, type Document } from 'yaml';
import { ConfigError } from '../errors.js';
import { componentLogger, type Logger } from '../log.js';
import { objectKey, type ClusterObjects, type EndpointSliceObject, type ServiceObject } from '../model/k8s.js';
import type { Change } from '../sync/tracker.js';
import type { ObjectDeltas } from './types.js';
import { plainEqual } from '../model/diff.js';
import { MAX_LINE_CHARS, oneLine } from './excerpt.js';
import { parseObject, type ObjectRef, type ParsedItem, type ParseOutcome } from './parse.js';

/** Deepest nesting of mappings and lists in one document; Kubernetes objects stay far below. */
export const MAX_DOCUMENT_DEPTH = 100;
/** YAML alias expansions allowed per document (the yaml library's own default, made explicit). */
export const MAX_ALIAS_COUNT = 100;
/** Largest manifest file read, in bytes. */
export const MAX_FILE_BYTES = 64 * 1024 * 1024;

/** One thing wrong with (or worth knowing about) a manifest file. */
export class ManifestProblem {
  /** One line, capped. */
  readonly message: string;

  constructor(
    readonly file: string,
    /** 1-based document number inside the file; null for the whole file. */
    readonly document: number | null,
    message: string,
    /** `error`: something was not applied; `warning`: applied, with a part dropped. */
    readonly severity: 'error' | 'warning' = 'error',
    /**
     * What vipr did about it (` (keeping its last valid version)`): never cut, however long the
     * message is; the message is cut to make room for it.
     */
    readonly outcome: string = '',
  ) {
    this.message = oneLine(message, MAX_LINE_CHARS - outcome.length) + outcome;
  }

  /** `file: document N: what is wrong`, one line of at most MAX_LINE_CHARS, the outcome kept. */
  toString(): string {
    const where = this.document === null ? `${this.file}: ` : `${this.file}: document ${this.document}: `;
    const head = oneLine(where, MAX_LINE_CHARS / 2);
    const body = this.message.slice(0, this.message.length - this.outcome.length);
    return head + oneLine(body, Math.max(20, MAX_LINE_CHARS - head.length - this.outcome.length)) + this.outcome;
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

function broken(document: number, syntaxError: string): DecodedDocument {
  return { document, value: null, syntaxError };
}

const TOO_DEEP = `nested deeper than ${MAX_DOCUMENT_DEPTH} levels; a Kubernetes object is never that deep`;

/** Whether a tree has a node with children at depth `max` or more; iterative, so any depth is safe. */
function nestedDeeperThan(root: unknown, max: number, children: (node: unknown) => readonly unknown[] | null): boolean {
  const stack: Array<{ node: unknown; depth: number }> = [{ node: root, depth: 0 }];
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    const kids = children(next.node);
    if (kids === null) continue;
    if (next.depth >= max) return true;
    for (const node of kids) stack.push({ node, depth: next.depth + 1 });
  }
  return false;
}

/** Children of a node of the yaml library's concrete syntax tree (a key and a value per item). */
function cstChildren(token: unknown): readonly unknown[] | null {
  const t = token as CST.Token | null | undefined;
  if (t?.type !== 'block-map' && t?.type !== 'block-seq' && t?.type !== 'flow-collection') return null;
  return (t.items as CST.CollectionItem[]).flatMap((item) => [item.key, item.value]);
}

function jsonChildren(node: unknown): readonly unknown[] | null {
  if (Array.isArray(node)) return node;
  return typeof node === 'object' && node !== null ? Object.values(node) : null;
}

/**
 * Whether a document expands (aliases followed, as toJS() will) deeper than `max` collections,
 * or into a cycle. Iterative with a memo per node, so its cost is the document's size.
 */
function expansionTooDeep(doc: Document, max: number): 'deep' | 'cycle' | null {
  type Frame = { node: object; children: readonly unknown[]; next: number; deepest: number };
  const depths = new Map<object, number>();
  const stack: Frame[] = [];
  const open = new Set<object>();
  /** The depth of `raw` when known; undefined after pushing it to be computed. */
  const enter = (raw: unknown): number | 'cycle' | undefined => {
    const node: unknown = isAlias(raw) ? raw.resolve(doc) : raw;
    if (!isCollection(node)) return 0;
    const known = depths.get(node);
    if (known !== undefined) return known;
    if (open.has(node)) return 'cycle';
    open.add(node);
    stack.push({ node, children: (node.items as unknown[]).flatMap((i) => (isPair(i) ? [i.key, i.value] : [i])), next: 0, deepest: 0 });
    return undefined;
  };
  const first = enter(doc.contents);
  if (first === 'cycle') return 'cycle';
  while (stack.length > 0) {
    if (stack.length > max) return 'deep';
    const top = stack[stack.length - 1] as Frame;
    if (top.next < top.children.length) {
      const depth = enter(top.children[top.next++]);
      if (depth === 'cycle') return 'cycle';
      if (depth !== undefined) top.deepest = Math.max(top.deepest, depth);
      continue;
    }
    stack.pop();
    open.delete(top.node);
    const depth = top.deepest + 1;
    if (depth > max) return 'deep';
    depths.set(top.node, depth);
    const parent = stack[stack.length - 1];
    if (parent) parent.deepest = Math.max(parent.deepest, depth);
  }
  return null;
}

function decodeYamlDocument(doc: Document, document: number, lines: LineCounter): DecodedDocument {
  const first = doc.errors[0];
  if (first) {
    const { line, col } = lines.linePos(first.pos[0]);
    return broken(document, `invalid YAML: ${firstLine(first.message)} at line ${line}, column ${col}`);
  }
  const expansion = expansionTooDeep(doc, MAX_DOCUMENT_DEPTH);
  if (expansion === 'deep') return broken(document, `aliases expand it: ${TOO_DEEP}`);
  if (expansion === 'cycle') return broken(document, 'an alias refers to a node that contains it; a Kubernetes object has no cycles');
  try {
    return { document, value: doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) as unknown, syntaxError: null };
  } catch (err) {
    // Aliases expanding to more than MAX_ALIAS_COUNT copies (a "billion laughs").
    return broken(document, `invalid YAML: ${firstLine(messageOf(err))}`);
  }
}

/**
 * The yaml library's parseAllDocuments() in its three steps, with the depth checked in between:
 * its Parser (concrete syntax) is iterative, but its Composer and toJS() recurse, and a stack
 * overflow inside them can leave V8 unable to compile a regular expression afterwards (the next
 * parse aborts the process). So no document deeper than MAX_DOCUMENT_DEPTH is ever composed.
 */
function decodeYaml(text: string): DecodedDocument[] {
  const lines = new LineCounter();
  const tokens = Array.from(new Parser(lines.addNewLine).parse(text));
  const tooDeep = new Set<number>();
  let count = 0;
  for (const token of tokens) {
    if (token.type !== 'document') continue;
    count += 1;
    if (nestedDeeperThan(token.value, MAX_DOCUMENT_DEPTH, cstChildren)) {
      tooDeep.add(count);
      token.value = undefined; // composed as an empty document, reported below
    }
  }
  return Array.from(new Composer().compose(tokens)).map((doc, i) =>
    tooDeep.has(i + 1) ? broken(i + 1, TOO_DEEP) : decodeYamlDocument(doc, i + 1, lines),
  );
}

function decode(file: string, text: string): DecodedDocument[] {
  if (/\.json$/i.test(file)) {
    let value: unknown;
    try {
      value = JSON.parse(text) as unknown;
    } catch (err) {
      return [broken(1, `invalid JSON: ${firstLine(messageOf(err))}`)];
    }
    if (nestedDeeperThan(value, MAX_DOCUMENT_DEPTH, jsonChildren)) return [broken(1, TOO_DEEP)];
    return [{ document: 1, value, syntaxError: null }];
  }
  return decodeYaml(text);
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

  let documents: DecodedDocument[];
  try {
    documents = decode(file, text);
  } catch (err) {
    // Not expected from the guarded decoder above; if it happens, it costs this file only.
    documents = [broken(1, `cannot be decoded: ${firstLine(messageOf(err))}`)];
  }
  for (const doc of documents) {
    if (doc.syntaxError !== null) {
      state.problems.push(new ManifestProblem(file, doc.document, doc.syntaxError));
      keepAll = true;
      continue;
    }
    let outcome: ParseOutcome;
    try {
      outcome = parseObject(doc.value);
    } catch (err) {
      // parseObject reports invalid input as failures; a throw is a bug, kept to this document.
      state.problems.push(new ManifestProblem(file, doc.document, `cannot be parsed: ${firstLine(messageOf(err))}`));
      keepAll = true;
      continue;
    }
    for (const source of outcome.sources) {
      const items = state.bySource.get(source.ref) ?? [];
      items.push(...source.items.map((item) => ({ document: doc.document, item })));
      state.bySource.set(source.ref, items);
    }
    for (const failure of outcome.failures) {
      const kept = failure.ref !== null && previous.bySource.has(failure.ref);
      state.problems.push(
        new ManifestProblem(file, doc.document, failure.error.message, 'error', kept ? ' (keeping its last valid version)' : ''),
      );
      if (failure.ref === null) keepAll = true;
      else keep.add(failure.ref);
    }
    for (const warning of outcome.warnings) {
      state.problems.push(new ManifestProblem(file, doc.document, warning, 'warning'));
    }
    for (const ignored of outcome.ignored) state.ignored.push(oneLine(`${file}: document ${doc.document}: ${ignored}`));
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

/** A file's items by object (`Kind namespace/name`), each list in document order. */
function itemsByKey(state: FileState | undefined): Map<string, SourcedItem[]> {
  const out = new Map<string, SourcedItem[]>();
  if (!state) return out;
  for (const sourced of [...state.bySource.values()].flat().sort((x, y) => x.document - y.document)) {
    const key = itemKey(sourced.item);
    const list = out.get(key);
    if (list) list.push(sourced);
    else out.set(key, [sourced]);
  }
  return out;
}

/**
 * The files' objects merged, kept up to date file by file: the first definition of an object (by
 * file name, then document) wins, the others are reported. A reload touches only the objects the
 * re-read files define, before or after, and says which of them changed: (previous, current).
 */
class MergedObjects {
  readonly objects: ClusterObjects = { services: new Map(), endpointSlices: new Map() };
  /** The files defining each object. */
  private readonly definers = new Map<string, Set<string>>();
  /** Ignored second definitions, by the file that holds them. */
  private readonly duplicates = new Map<string, Map<string, ManifestProblem[]>>();

  constructor(private readonly dir: string) {}

  /**
   * Takes in the files named in `changed` (their state now in `files`, before in `before`);
   * returns the objects whose merged version changed.
   */
  update(files: ReadonlyMap<string, FileState>, changed: Iterable<string>, before: ReadonlyMap<string, FileState | undefined>): ObjectDeltas {
    const affected = new Set<string>();
    for (const name of changed) {
      for (const key of itemsByKey(before.get(name)).keys()) {
        affected.add(key);
        const set = this.definers.get(key);
        set?.delete(name);
        if (set?.size === 0) this.definers.delete(key);
      }
      for (const key of itemsByKey(files.get(name)).keys()) {
        affected.add(key);
        const set = this.definers.get(key) ?? new Set<string>();
        this.definers.set(key, set.add(name));
      }
    }
    const services = new Map<string, Change<ServiceObject>>();
    const endpointSlices = new Map<string, Change<EndpointSliceObject>>();
    const fileItems = new Map<string, Map<string, SourcedItem[]>>();
    const itemsOf = (name: string): Map<string, SourcedItem[]> => {
      let m = fileItems.get(name);
      if (!m) fileItems.set(name, (m = itemsByKey(files.get(name))));
      return m;
    };
    for (const key of affected) {
      for (const byKey of this.duplicates.values()) byKey.delete(key);
      const definitions = [...(this.definers.get(key) ?? [])].sort().flatMap((name) => (itemsOf(name).get(key) ?? []).map((d) => ({ name, ...d })));
      const [first, ...rest] = definitions;
      for (const d of rest) {
        const file = join(this.dir, d.name);
        const problem = new ManifestProblem(file, d.document, `${key} is already defined in ${where(join(this.dir, first!.name), first!.document)}; this definition is ignored (remove one of them)`);
        const byKey = this.duplicates.get(d.name) ?? new Map<string, ManifestProblem[]>();
        this.duplicates.set(d.name, byKey.set(key, [...(byKey.get(key) ?? []), problem]));
      }
      const item = first?.item ?? null;
      const objectName = key.slice(key.indexOf(' ') + 1);
      if (key.startsWith('Service ')) {
        const previous = this.objects.services.get(objectName) ?? null;
        const current = item?.kind === 'Service' ? item.object : null;
        if (current) this.objects.services.set(objectName, current);
        else this.objects.services.delete(objectName);
        if (!(previous === null ? current === null : current !== null && plainEqual(previous, current))) services.set(objectName, { previous, current });
      } else {
        const previous = this.objects.endpointSlices.get(objectName) ?? null;
        const current = item?.kind === 'EndpointSlice' ? item.object : null;
        if (current) this.objects.endpointSlices.set(objectName, current);
        else this.objects.endpointSlices.delete(objectName);
        if (!(previous === null ? current === null : current !== null && plainEqual(previous, current))) endpointSlices.set(objectName, { previous, current });
      }
    }
    return { services, endpointSlices };
  }

  /** Every problem and ignored object, in file order (a file's own lines, then its duplicates). */
  report(files: ReadonlyMap<string, FileState>): Pick<ManifestLoad, 'problems' | 'ignored'> {
    const problems: ManifestProblem[] = [];
    const ignored: string[] = [];
    for (const name of [...new Set([...files.keys(), ...this.duplicates.keys()])].sort()) {
      const state = files.get(name);
      if (state) {
        problems.push(...state.problems);
        ignored.push(...state.ignored);
      }
      const dups = [...(this.duplicates.get(name)?.values() ?? [])].flat().sort((x, y) => (x.document ?? 0) - (y.document ?? 0));
      problems.push(...dups);
    }
    return { problems, ignored };
  }
}

/** Combines file states (keyed by file name) in name order; the first definition of an object wins. */
function merge(dir: string, files: ReadonlyMap<string, FileState>): ManifestLoad {
  const merged = new MergedObjects(dir);
  merged.update(files, files.keys(), new Map());
  return { objects: merged.objects, ...merged.report(files) };
}

/* Duck-typed rather than `instanceof Error`: errors from node:fs may come from another realm (vm, jest). */
function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}

function messageOf(err: unknown): string {
  return typeof err === 'object' && err !== null && 'message' in err && typeof err.message === 'string' ? err.message : String(err);
}

/** What a directory entry that is not a regular file is, for the line that reports it. */
function entryType(info: Stats): string {
  if (info.isDirectory()) return 'a directory';
  if (info.isFIFO()) return 'a FIFO';
  if (info.isCharacterDevice()) return 'a character device';
  if (info.isBlockDevice()) return 'a block device';
  if (info.isSocket()) return 'a socket';
  return 'not a regular file';
}

type FileRead =
  | { kind: 'text'; text: string }
  | { kind: 'gone' }
  /** Not read, for the reason given (the file's previous objects stay). */
  | { kind: 'refused'; reason: string };

function refusal(info: Stats): FileRead | null {
  if (!info.isFile()) return { kind: 'refused', reason: `is ${entryType(info)}, not a regular file; skipped (rename or remove it)` };
  if (info.size > MAX_FILE_BYTES) {
    return { kind: 'refused', reason: `is ${info.size} bytes, more than the ${MAX_FILE_BYTES} vipr reads from one manifest file; split it` };
  }
  return null;
}

/**
 * Reads a manifest file (following symlinks, as a ConfigMap mount needs). Anything but a regular
 * file is refused before it is opened: opening a FIFO blocks, opening a device may act. The file
 * is opened non-blocking and checked again, in case it was swapped in between.
 */
async function readManifestFile(file: string): Promise<FileRead> {
  try {
    const refused = refusal(await stat(file));
    if (refused) return refused;
    const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      return refusal(await handle.stat()) ?? { kind: 'text', text: await handle.readFile({ encoding: 'utf8' }) };
    } finally {
      await handle.close();
    }
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return { kind: 'gone' };
    return { kind: 'refused', reason: `cannot be read (${firstLine(messageOf(err))})` };
  }
}

/**
 * Reads one file into `states`; a vanished file is dropped, one that cannot be read keeps its
 * objects. Never throws: whatever goes wrong costs this file only.
 */
async function refreshFile(dir: string, name: string, states: Map<string, FileState>): Promise<void> {
  const file = join(dir, name);
  const previous = states.get(name) ?? emptyState();
  const keepPrevious = (reason: string): void => {
    const kept = previous.bySource.size > 0 ? '; keeping what it defined before' : '';
    states.set(name, { bySource: previous.bySource, ignored: previous.ignored, problems: [new ManifestProblem(file, null, reason + kept)] });
  };
  const read = await readManifestFile(file);
  if (read.kind === 'gone') states.delete(name);
  else if (read.kind === 'refused') keepPrevious(read.reason);
  else {
    try {
      states.set(name, parseFile(file, read.text, previous));
    } catch (err) {
      keepPrevious(`cannot be parsed (${firstLine(messageOf(err))})`);
    }
  }
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

/**
 * Parses the text of one manifest file on its own, as loadManifestDir would (for tools and tests):
 * never throws; problems and ignored objects come back one line each.
 */
export function parseManifestText(file: string, text: string): ManifestLoad {
  return merge(dirname(file), new Map([[basename(file), parseFile(file, text, emptyState())]]));
}

/** Reads every manifest in `dir` once. */
export async function loadManifestDir(dir: string): Promise<ManifestLoad> {
  const states = new Map<string, FileState>();
  for (const name of await listManifests(dir)) await refreshFile(dir, name, states);
  return merge(dir, states);
}

/**
 * kubelet's AtomicWriter (ConfigMap, Secret and projected volumes) publishes an update by writing
 * a new timestamped directory and renaming a `..data_tmp` symlink over `..data`; every file is a
 * symlink through `..data`, so the files themselves raise no event.
 */
const ATOMIC_WRITER_DATA = '..data';

export interface ManifestSourceOptions {
  /**
   * Called once the first complete read is done (before start() resolves, with hasSynced() true;
   * every object comes as added) and after every reload that changed objects or problems, with
   * only the objects of the re-read files that changed.
   */
  onChange: (deltas: ObjectDeltas, problems: ManifestProblem[]) => void;
  /** Quiet time after the last file event before re-reading (editors write in several steps). */
  debounceMs?: number;
  logger?: Logger;
}

/** Watches a manifest directory and reports what each change to its files changed. */
export class ManifestSource {
  private readonly states = new Map<string, FileState>();
  private readonly log: Logger;
  private readonly debounceMs: number;
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** Names from file events since the last reload; null = something unnamed, re-read all. */
  private pending: Set<string> | null = new Set();
  private reloading: Promise<void> = Promise.resolve();
  private readonly merged: MergedObjects;
  private problems: ManifestProblem[] = [];
  private ignored: string[] = [];
  private stopped = false;
  private synced = false;

  constructor(
    readonly dir: string,
    private readonly options: ManifestSourceOptions,
  ) {
    this.log = (options.logger ?? componentLogger('manifest')).child({ dir });
    this.debounceMs = options.debounceMs ?? 100;
    this.merged = new MergedObjects(dir);
  }

  /**
   * Reads the whole directory once, reports it through onChange, then watches for changes.
   * Resolves only after that complete read, in which every file was parsed or reported as bad;
   * rejects (ConfigError) when the directory cannot be listed, or when stop() came first.
   */
  async start(): Promise<void> {
    this.stopped = false;
    await listManifests(this.dir); // a missing directory is the user's to fix: throw ConfigError
    // Watch before the initial read, so nothing written meanwhile is missed.
    this.watcher = watch(this.dir, { persistent: false }, (_event, name) => this.noteEvent(name));
    this.watcher.on('error', (err) => this.log.error({ err }, 'watching the manifest directory failed'));
    this.pending = null;
    const firstRead = this.reload(true);
    this.reloading = firstRead.catch(() => undefined);
    try {
      await firstRead;
    } catch (err) {
      this.stop();
      throw err;
    }
    if (!this.synced) throw new ConfigError(`manifest source ${this.dir} was stopped before its first read completed`);
  }

  /** Whether one complete read of the directory is done (kube-proxy's informer HasSynced). */
  hasSynced(): boolean {
    return this.synced;
  }

  stop(): void {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** The objects and problems as of the last reload (a copy the caller may keep). */
  current(): ManifestLoad {
    const { services, endpointSlices } = this.merged.objects;
    return { objects: { services: new Map(services), endpointSlices: new Map(endpointSlices) }, problems: [...this.problems], ignored: [...this.ignored] };
  }

  private noteEvent(name: string | Buffer | null): void {
    if (this.stopped) return;
    const fileName = name === null ? null : name.toString();
    // Unnamed events and ConfigMap updates (a new ..data) may change any file: re-read them all.
    if (fileName === null || fileName === ATOMIC_WRITER_DATA) this.pending = null;
    else if (isManifestFile(fileName)) this.pending?.add(fileName);
    else return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      // A failed reload must not end the chain: later changes still get read.
      this.reloading = this.reloading
        .then(() => this.reload(false))
        .catch((err: unknown) => this.log.error({ err }, 'reloading the manifests failed; keeping the current services'));
    }, this.debounceMs);
  }

  /** Re-reads what changed; the initial read (all files) throws when the directory cannot be listed. */
  private async reload(initial: boolean): Promise<void> {
    if (this.stopped) return;
    const named = this.pending;
    this.pending = new Set();
    let present: string[];
    try {
      present = await listManifests(this.dir);
    } catch (err) {
      if (initial) throw err;
      // The directory itself is gone or unreadable: keep serving what we had.
      this.log.error({ err }, 'cannot list the manifest directory; keeping the current services');
      return;
    }
    const toRead = new Set<string>(named ?? present);
    // Files that appeared or vanished without an event naming them (e.g. a rename).
    for (const name of present) if (!this.states.has(name)) toRead.add(name);
    for (const name of this.states.keys()) if (!present.includes(name)) toRead.add(name);
    const before = new Map<string, FileState | undefined>();
    for (const name of [...toRead].sort()) {
      if (this.stopped) return;
      before.set(name, this.states.get(name));
      await refreshFile(this.dir, name, this.states);
    }
    if (this.stopped) return;
    const deltas = this.merged.update(this.states, before.keys(), before);
    const { problems, ignored } = this.merged.report(this.states);
    const seen = new Set(this.problems.map(String));
    for (const problem of problems) {
      if (seen.has(String(problem))) continue;
      if (problem.severity === 'error') this.log.warn({ file: problem.file, document: problem.document }, String(problem));
      else this.log.info({ file: problem.file, document: problem.document }, String(problem));
    }
    const unchanged =
      !initial && deltas.services.size === 0 && deltas.endpointSlices.size === 0 && plainEqual(this.problems.map(String), problems.map(String));
    this.problems = problems;
    this.ignored = ignored;
    this.synced = true;
    if (unchanged) return;
    this.log.info(
      {
        services: this.merged.objects.services.size,
        endpointSlices: this.merged.objects.endpointSlices.size,
        changed: deltas.services.size + deltas.endpointSlices.size,
        problems: problems.length,
      },
      'manifests loaded',
    );
    try {
      this.options.onChange(deltas, problems);
    } catch (err) {
      this.log.error({ err }, 'change listener threw');
    }
  }
}
