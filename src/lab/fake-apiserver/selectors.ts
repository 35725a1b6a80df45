/*
 * Label and field selectors as the API server parses them (k8s.io/apimachinery/pkg/labels and
 * pkg/fields), for the subset clients send: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
 * `k notin (a,b)`; fields `metadata.name` and `metadata.namespace` with `=`, `==`, `!=`.
 */

export type Labels = Record<string, string>;

type Requirement =
  | { op: 'exists' | 'notexists'; key: string }
  | { op: 'in' | 'notin'; key: string; values: string[] };

export class SelectorError extends Error {
  override readonly name = 'SelectorError';
}

const KEY = /^([A-Za-z0-9][-A-Za-z0-9_.]*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/** Splits on commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      parts.push(s.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(s.slice(start));
  return parts;
}

function checkKey(key: string, raw: string): string {
  if (!KEY.test(key)) throw new SelectorError(`invalid label key in selector requirement '${raw}'`);
  return key;
}

function checkValue(value: string, raw: string): string {
  if (!VALUE.test(value)) throw new SelectorError(`invalid label value in selector requirement '${raw}'`);
  return value;
}

function parseRequirement(raw: string): Requirement {
  const s = raw.trim();
  if (s.startsWith('!')) return { op: 'notexists', key: checkKey(s.slice(1).trim(), raw) };
  const set = /^(\S+)\s+(in|notin)\s*\((.*)\)$/.exec(s);
  if (set) {
    const values = (set[3] ?? '').split(',').map((v) => checkValue(v.trim(), raw));
    return { op: set[2] === 'in' ? 'in' : 'notin', key: checkKey(set[1] ?? '', raw), values };
  }
  const eq = /^([^!=\s]+)\s*(==|=|!=)\s*(.*)$/.exec(s);
  if (eq) {
    const key = checkKey(eq[1] ?? '', raw);
    const value = checkValue((eq[3] ?? '').trim(), raw);
    return { op: eq[2] === '!=' ? 'notin' : 'in', key, values: [value] };
  }
  return { op: 'exists', key: checkKey(s, raw) };
}

/** Parses a label selector into a predicate; '' selects everything. Throws SelectorError. */
export function parseLabelSelector(selector: string): (labels: Labels) => boolean {
  if (selector.trim() === '') return () => true;
  const reqs = splitTop(selector).map(parseRequirement);
  return (labels) =>
    reqs.every((r) => {
      const has = Object.prototype.hasOwnProperty.call(labels, r.key);
      switch (r.op) {
        case 'exists':
          return has;
        case 'notexists':
          return !has;
        case 'in':
          return has && r.values.includes(labels[r.key] ?? '');
        case 'notin':
          // As apimachinery: NotEquals / NotIn also match objects without the key.
          return !has || !r.values.includes(labels[r.key] ?? '');
      }
    });
}

export interface FieldSubject {
  name: string;
  namespace: string;
}

/** Parses a field selector over metadata.name / metadata.namespace. Throws SelectorError. */
export function parseFieldSelector(selector: string): (subject: FieldSubject) => boolean {
  if (selector.trim() === '') return () => true;
  const terms = selector.split(',').map((raw) => {
    const m = /^\s*([^!=\s]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(raw);
    if (!m) throw new SelectorError(`invalid field selector term '${raw}'`);
    const field = m[1];
    if (field !== 'metadata.name' && field !== 'metadata.namespace') {
      throw new SelectorError(`field label not supported: ${field}`);
    }
    return { field, negate: m[2] === '!=', value: m[3] ?? '' };
  });
  return (subject) =>
    terms.every((t) => {
      const actual = t.field === 'metadata.name' ? subject.name : subject.namespace;
      return (actual === t.value) !== t.negate;
    });
}
