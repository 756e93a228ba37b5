/**
 * Config files (the official YAML layout, or JSON): reading one, and checking the document against a
 * valibot schema, with one-line errors that name the key and what it got:
 *
 *   cannot read training config 'x.yaml': ENOENT ...                 E_IO
 *   training config 'x.yaml' is not valid YAML: ...                    E_FORMAT
 *   training.max_train_steps must be an integer >= 1, got 0           E_CONFIG (the caller's error)
 *   unknown key 'training.learnig_rate' (known: max_train_steps, ...)
 *
 * The schema pieces below carry those messages, so a schema reads as the layout it accepts. valibot
 * (small, no dependencies) instead of hand-written checks: each layout, its defaults and its limits
 * are stated once, in one place, and the checked result is typed from it.
 */
import { readFileSync } from 'node:fs';
import * as v from 'valibot';
import { parse as parseYaml } from 'yaml';
import { TorchError } from '../torch/errors.js';

/** Reads and parses `path`: JSON when it ends in .json, else YAML. `what` names it in errors. */
export function readConfigDocument(path: string, what = 'config'): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new TorchError(`cannot read ${what} '${path}': ${(e as Error).message}`, 'E_IO');
  }
  const json = /\.json$/i.test(path);
  try {
    return json ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new TorchError(`${what} '${path}' is not valid ${json ? 'JSON' : 'YAML'}: ${(e as Error).message}`, 'E_FORMAT');
  }
}

const show = (x: unknown): string => JSON.stringify(x) ?? String(x);
/** A message for any issue: "must be <what>, got <the value>". */
export const mustBe = (what: string) => (issue: v.BaseIssue<unknown>): string => `must be ${what}, got ${show(issue.input)}`;

/** A finite number. */
export const finiteNumber = v.pipe(v.number(mustBe('a number')), v.finite(mustBe('a number')));

/** A number > 0. */
export const positiveNumber = v.pipe(finiteNumber, v.gtValue(0, mustBe('a number > 0')));

/** A whole number >= min. */
export function integer(min: number) {
  const m = mustBe(`an integer >= ${min}`);
  return v.pipe(v.number(m), v.safeInteger(m), v.minValue(min, m));
}

/** A list of whole numbers, each >= min. */
export function integerList(min: number) {
  return v.custom<number[]>((x) => Array.isArray(x) && x.every((n) => Number.isSafeInteger(n) && n >= min), mustBe(`a list of integers >= ${min}`));
}

export const bool = v.boolean(mustBe('true or false'));

export const text = v.string(mustBe('a string'));

export function oneOf<const T extends readonly string[]>(choices: T) {
  return v.picklist(choices, mustBe(`one of ${choices.join(', ')}`));
}

/** Any mapping (its keys are checked elsewhere, e.g. data.dataset by its data_type). */
export const mapping = v.record(v.string(), v.unknown(), mustBe('a mapping'));

/**
 * A section that may be left out: it is then checked as {}, so its defaults apply and its required
 * keys are named as missing.
 */
export function section<S extends v.GenericSchema>(schema: S) {
  return v.optional(schema, () => ({}) as v.InferInput<S>);
}

/**
 * A mapping with exactly these keys (a typo must not silently fall back to a default). `required`:
 * a hint after "is required" for keys that are.
 */
export function strict<E extends v.ObjectEntries>(entries: E, required: Record<string, string> = {}) {
  return v.strictObject(entries, (issue) => {
    if (issue.expected === 'never') return `(known: ${Object.keys(entries).join(', ')})`;
    const key = issue.input === undefined && issue.path?.length ? String(issue.path.at(-1)!.key) : null;
    return key !== null ? `is required${required[key] ? ` (${required[key]})` : ''}` : `must be a mapping, got ${show(issue.input)}`;
  });
}

/**
 * `schema`'s output for `doc`, else `fail` of one line about the first issue (an unknown key first:
 * a misspelt key also leaves the key it meant missing).
 */
export function checkDocument<S extends v.GenericSchema>(schema: S, doc: unknown, fail: (message: string) => Error): v.InferOutput<S> {
  const r = v.safeParse(schema, doc);
  if (r.success) return r.output;
  const unknown = r.issues.find((i) => i.expected === 'never');
  const issue = unknown ?? r.issues[0];
  const path = v.getDotPath(issue) ?? '';
  throw fail(unknown ? `unknown key '${path}' ${issue.message}` : path ? `${path} ${issue.message}` : issue.message);
}
