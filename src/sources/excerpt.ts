/*
 * How text from outside (manifest files, API objects, file names) appears in a message: a short
 * excerpt on one line. A problem line is read in a terminal or a log; a 100 kB name, a newline in
 * a value or a 20,000-level path must not turn it into a wall of text or forge extra lines.
 */

/** Longest problem line, in characters (a line is cut, with `…`, beyond it). */
export const MAX_LINE_CHARS = 300;

/** Longest piece of a value a message quotes. */
export const EXCERPT_CHARS = 60;

/** Line breaks and other control characters, written as escapes so a line stays one line. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

function escapeControl(text: string): string {
  return text.replace(CONTROL, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
  });
}

/** `text` as one line of at most `max` characters. */
export function oneLine(text: string, max: number = MAX_LINE_CHARS): string {
  const line = escapeControl(text);
  return line.length <= max ? line : `${line.slice(0, max - 1)}…`;
}

/** An unquoted excerpt (a name in an object's identity): the start of `text`, and its length if cut. */
export function clip(text: string, max: number = EXCERPT_CHARS): string {
  if (text.length <= max) return escapeControl(text);
  return `${escapeControl(text.slice(0, max))}… (${text.length} characters)`;
}

/** A quoted excerpt (a value in a message): `"10.0.0.300"`, or `"aaaa"… (100000 characters)`. */
export function quote(text: string, max: number = EXCERPT_CHARS): string {
  const quoted = text.length <= max ? JSON.stringify(text) : `${JSON.stringify(text.slice(0, max))}… (${text.length} characters)`;
  return escapeControl(quoted);
}
