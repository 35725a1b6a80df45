/*
 * The one way vipr reads JSON it finds on disk (its own records under /run/vipr, lab state, bench
 * results): parsed, then validated with a zod schema, at the edge (renovate's `Result.parse`). A
 * file that is not what it should be is one ConfigError line naming the file, what it is, the
 * first bad field and the fix, never a TypeError somewhere later:
 *
 *   /run/vipr/vipr.services.json: bad service-names record at ["7"]: Expected string, received
 *   number; delete it: the agent writes it again on its next sync
 *
 * Every layer may import this module: it imports nothing of vipr's but errors.ts.
 */
import { readFileSync } from 'node:fs';
import type { z } from 'zod';
import { ConfigError } from './errors.js';

/** A JSON file on disk is not what it should be; `message` is the one line for people. */
export class JsonFileError extends ConfigError {
  constructor(
    readonly file: string,
    readonly what: string,
    /** The first bad field (`nodes[0].pinDir`); null when the file is not JSON at all. */
    readonly field: string | null,
    /** What is wrong there: `Expected string, received number`, `not JSON (Unexpected token...)`. */
    readonly problem: string,
    fix: string,
    options?: { cause?: unknown },
  ) {
    const at = field === null ? '' : field === '' ? ': ' : ` at ${field}: `;
    super(oneLine(field === null ? `${file}: ${what} is ${problem}; ${fix}` : `${file}: bad ${what}${at}${problem}; ${fix}`), options);
  }

  /** The problem without the file and the fix: `bad field nodes[0].pinDir: Required`. */
  get short(): string {
    return oneLine(this.field === null ? this.problem : this.field === '' ? this.problem : `bad field ${this.field}: ${this.problem}`);
  }
}

/** A kind of JSON file vipr reads: its schema and what to tell people about a bad one. */
export interface JsonRecordKind<T> {
  /** What the file is, for people: `lab state`, `service-names record`. */
  what: string;
  schema: z.ZodType<T, z.ZodTypeDef, unknown>;
  /** What to do about a bad one: `delete it: the agent writes it again on its next sync`. */
  fix: string;
}

const MESSAGE_MAX = 400;

function oneLine(text: string): string {
  const line = text.replace(/\s*\n\s*/g, ' ').trim();
  return line.length <= MESSAGE_MAX ? line : `${line.slice(0, MESSAGE_MAX - 1)}…`;
}

/** A zod issue path as code would name the field: `nodes[0].pinDir`, `["7"]`. */
export function fieldPath(path: ReadonlyArray<string | number>): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(p)) out += out === '' ? p : `.${p}`;
    else out += `[${JSON.stringify(p)}]`;
  }
  return out;
}

/** `text` (read from `source`) as a `kind`, or a one-line JsonFileError. */
export function parseJson<T>(text: string, source: string, kind: JsonRecordKind<T>): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new JsonFileError(source, kind.what, null, `not JSON (${(err as Error).message})`, kind.fix, { cause: err });
  }
  const parsed = kind.schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  throw new JsonFileError(source, kind.what, fieldPath(issue?.path ?? []), issue?.message ?? 'invalid', kind.fix, { cause: parsed.error });
}

/** The file at `path` as a `kind`; a missing, unreadable or bad file is a one-line JsonFileError. */
export function readJsonFile<T>(path: string, kind: JsonRecordKind<T>): T {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'missing' : `unreadable (${e.code ?? e.message})`;
    throw new JsonFileError(path, kind.what, null, why, kind.fix, { cause: err });
  }
  return parseJson(text, path, kind);
}

/** As readJsonFile, but a file that does not exist is null (nothing recorded yet). */
export function readJsonFileIfExists<T>(path: string, kind: JsonRecordKind<T>): T | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return null;
    throw new JsonFileError(path, kind.what, null, `unreadable (${e.code ?? e.message})`, kind.fix, { cause: err });
  }
  return parseJson(text, path, kind);
}
