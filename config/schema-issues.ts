import type { z } from 'zod';

import type { ConfigIssue } from '../common/errors.js';
import { configJsonSchema } from './json-schema.js';
import { suggestName } from './suggest.js';
import { shortened, type ConfigPath } from './validate.js';

/** A schema problem in config terms: where it is, what is wrong and what would be valid. */
export interface SchemaProblem {
  /** Path of the invalid field, which for an unknown field is that field's own path. */
  path: ConfigPath;
  message: string;
  /** The value the document has at `path`, when it has one. */
  value?: unknown;
}

/**
 * Message that `parseWithSchema` gives to every issue whose schema sets no
 * message of its own, so that `describeSchemaIssues` can tell the two apart.
 */
const GENERIC = '\u0000generic';

/** Parses `data` so that issues without a message from the schema carry a marker instead. */
export function parseWithSchema<T extends z.ZodType>(schema: T, data: unknown) {
  return schema.safeParse(data, { error: () => GENERIC });
}

/** The parts of a JSON Schema node that messages use. */
interface JsonNode {
  type?: string;
  description?: string;
  const?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  minItems?: number;
  items?: JsonNode;
  properties?: Record<string, JsonNode>;
  required?: string[];
  additionalProperties?: JsonNode | boolean;
  anyOf?: JsonNode[];
}

let rootNode: JsonNode | undefined;

/**
 * Turns the issues of `parseWithSchema(ConfigFileSchema, data)` into one
 * message each, described from the JSON Schema that `loomctl schema` prints.
 * An unknown field gets the closest known field ("did you mean") or the list
 * of valid fields. A wrong type gets the expected type, and an enum the
 * allowed values. A misspelled required field is reported once, at the
 * misspelling.
 */
export function describeSchemaIssues(zodIssues: readonly z.core.$ZodIssue[], data: unknown) {
  rootNode ??= configJsonSchema() as JsonNode;
  const issues = zodIssues.flatMap(expandUnion);
  const problems: SchemaProblem[] = [];
  // Required fields that an unknown field probably meant; their "missing" issue is dropped.
  const explained = new Set<string>();
  // Paths and messages already described, so that two issues with one message make one problem.
  const reported = new Set<string>();

  for (const issue of issues) {
    if (issue.code !== 'unrecognized_keys') continue;
    const path = issue.path as ConfigPath;
    const node = nodeAt(rootNode, path);
    const known = Object.keys(node?.properties ?? {});
    const present = valueAt(data, path) as Record<string, unknown>;
    for (const key of issue.keys) {
      const suggestion = suggestName(key, known);
      let message = `unknown field; valid fields are ${known.join(', ')}`;
      if (suggestion !== undefined) {
        message = `unknown field; did you mean "${suggestion}"?`;
        if (node?.required?.includes(suggestion) && present[suggestion] === undefined) {
          message = `unknown field; did you mean "${suggestion}", which is required and missing?`;
          explained.add(JSON.stringify([...path, suggestion]));
        }
      }
      problems.push({ path: [...path, key], message, value: present[key] });
    }
  }

  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys') continue;
    const path = issue.path as ConfigPath;
    if (explained.has(JSON.stringify(path))) continue;
    const value = valueAt(data, path);
    const message = describeIssue(issue, nodeAt(rootNode, path), value, path);
    // zod reports an integer above 2^53 - 1 twice, as unsafe and as above the maximum.
    const key = JSON.stringify([path, message]);
    if (reported.has(key)) continue;
    reported.add(key);
    problems.push({ path, message, value });
  }
  return problems;
}

/**
 * Replaces a union issue with the issues of the one option whose type the
 * value has, such as the list form of header `set`, so that the message
 * points into the value. Other union issues stay as they are.
 */
function expandUnion(issue: z.core.$ZodIssue): z.core.$ZodIssue[] {
  if (issue.code !== 'invalid_union' || issue.errors.length === 0) return [issue];
  const sameType = issue.errors.filter(
    (errors) => !errors.some((inner) => inner.code === 'invalid_type' && inner.path.length === 0),
  );
  if (sameType.length !== 1) return [issue];
  return sameType[0]
    .map((inner) => ({ ...inner, path: [...issue.path, ...inner.path] }))
    .flatMap(expandUnion);
}

function describeIssue(
  issue: z.core.$ZodIssue,
  node: JsonNode | undefined,
  value: unknown,
  path: ConfigPath,
) {
  if (issue.message !== GENERIC) return issue.message;

  const expected = node
    ? describeNode(node)
    : `a valid ${issue.code === 'invalid_type' ? issue.expected : 'value'}`;
  switch (issue.code) {
    case 'invalid_type':
      if (value === undefined) {
        const hint = node?.description ? ` (${lowerFirst(node.description)})` : '';
        return `missing required field; expected ${expected}${hint}`;
      }
      if (typeof value === 'number' && !Number.isFinite(value)) {
        return `out of range; expected ${expected}, got a number beyond the range of a double`;
      }
      return `invalid type: expected ${expected}, got ${typeName(value)}${suggestType(node, value, path)}`;
    case 'invalid_value': {
      const suggestion =
        typeof value === 'string' && issue.values.length > 1
          ? suggestName(value, issue.values.map(String))
          : undefined;
      if (suggestion === undefined) return `invalid value; expected ${expected}`;
      return `invalid value; did you mean "${suggestion}"? Expected ${expected}`;
    }
    case 'too_small':
    case 'too_big':
      return `out of range; expected ${expected}${describeLostPrecision(node, value)}`;
    case 'invalid_union':
      return `invalid value; expected ${expected}, got ${typeName(value)}`;
    default:
      return `invalid value; expected ${expected}`;
  }
}

/**
 * Returns a hint such as `; write a list, such as [GET]` for a string in a field of another type.
 * A list field gets the string as a one-item list. A field whose name ends in `Ms` gets a
 * duration such as `5s` in milliseconds. Other fields get ''.
 */
function suggestType(node: JsonNode | undefined, value: unknown, path: ConfigPath): string {
  if (typeof value !== 'string') return '';
  if (node?.type === 'array') return `; write a list, such as [${value}]`;
  const field = path.at(-1);
  const ms = typeof field === 'string' && field.endsWith('Ms') ? durationMs(value) : undefined;
  return ms === undefined ? '' : `; write the number of milliseconds, such as ${ms}`;
}

/** Returns the milliseconds of a duration such as `5s`, `700ms` or `1m30s`, else undefined. */
function durationMs(text: string): number | undefined {
  if (!/^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/.test(text)) return undefined;
  const unitMs: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };
  let ms = 0;
  for (const [, amount, unit] of text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) {
    ms += Number(amount) * unitMs[unit];
  }
  return Math.round(ms);
}

/**
 * Returns why a number beyond 2^53 - 1 fails a field whose maximum is at least that large,
 * where the range that messages give leaves the maximum out, or '' for other values.
 */
function describeLostPrecision(node: JsonNode | undefined, value: unknown): string {
  if (typeof value !== 'number' || Math.abs(value) <= Number.MAX_SAFE_INTEGER) return '';
  if (node?.maximum !== undefined && node.maximum < Number.MAX_SAFE_INTEGER) return '';
  return `, at most ${Number.MAX_SAFE_INTEGER} (2^53 - 1); larger numbers lose precision when read`;
}

/** Describes what a JSON Schema node accepts, such as `an integer from 0 to 5`. */
function describeNode(node: JsonNode): string {
  if (node.anyOf) return node.anyOf.map(describeNode).join(' or ');
  if (node.const !== undefined) return JSON.stringify(node.const);
  if (node.enum) return `one of ${node.enum.map((value) => JSON.stringify(value)).join(', ')}`;
  switch (node.type) {
    case 'integer':
      return `an integer${describeRange(node)}`;
    case 'number':
      return `a number${describeRange(node)}`;
    case 'string':
      return 'a string';
    case 'boolean':
      return 'true or false';
    case 'array': {
      const items = node.items ? describeItems(node.items) : 'values';
      return `a ${node.minItems ? 'non-empty ' : ''}list of ${items}`;
    }
    case 'object':
      return describeObject(node);
    default:
      return 'a valid value';
  }
}

/** Describes list items in the plural, such as `strings` or `mappings with fields url, weight`. */
function describeItems(node: JsonNode): string {
  switch (node.type) {
    case 'string':
      return node.enum ? `values from ${describeNode(node).slice('one of '.length)}` : 'strings';
    case 'integer':
      return 'integers';
    case 'object':
      return describeObject(node).replace(/^a mapping/, 'mappings');
    default:
      return 'values';
  }
}

function describeObject(node: JsonNode): string {
  if (node.properties) return `a mapping with fields ${Object.keys(node.properties).join(', ')}`;
  if (typeof node.additionalProperties === 'object') {
    return `a mapping of names to ${describeItems(node.additionalProperties)}`;
  }
  return 'a mapping';
}

function describeRange(node: JsonNode): string {
  const min = node.minimum;
  const max =
    node.maximum !== undefined && node.maximum < Number.MAX_SAFE_INTEGER ? node.maximum : undefined;
  if (min !== undefined && max !== undefined) return ` from ${min} to ${max}`;
  if (min !== undefined) return ` of at least ${min}`;
  if (max !== undefined) return ` of at most ${max}`;
  return '';
}

/** Returns the JSON Schema node that describes `path`, or undefined when the schema has none. */
function nodeAt(root: JsonNode, path: ConfigPath): JsonNode | undefined {
  let node: JsonNode | undefined = root;
  for (const part of path) {
    if (node === undefined) return undefined;
    const options: JsonNode[] = node.anyOf ?? [node];
    node = undefined;
    for (const option of options) {
      node =
        typeof part === 'number'
          ? option.items
          : (option.properties?.[part] ??
            (typeof option.additionalProperties === 'object'
              ? option.additionalProperties
              : undefined));
      if (node) break;
    }
  }
  return node;
}

/**
 * Describes a schema problem of the config document `data` as an issue without a file or line:
 * the resource it is in, named as `data` writes it, the field and the value.
 */
export function describeSchemaProblem(
  data: unknown,
  problem: SchemaProblem,
): Omit<ConfigIssue, 'file' | 'line'> {
  const [list, index, ...rest] = problem.path;
  let kind: 'route' | 'upstream' | undefined;
  if (list === 'routes') kind = 'route';
  else if (list === 'upstreams') kind = 'upstream';
  const isResource = kind !== undefined && typeof index === 'number';
  const field = isResource
    ? formatField(rest) || '(resource)'
    : formatField(problem.path) || '(document)';
  return {
    kind: isResource ? kind : undefined,
    name: isResource ? displayName(data, list as string, index) : undefined,
    field,
    value: shownValue(problem.value),
    message: problem.message,
  };
}

/** Returns a resource's name as the document writes it, or `#N` (1-based) when it has none. */
export function displayName(data: unknown, list: string, index: number): string {
  const raw = valueAt(data, [list, index, 'name']);
  return typeof raw === 'string' ? raw : `#${index + 1}`;
}

/**
 * Returns a value to quote in a message: scalars, strings cut to 100 characters, and lists or
 * mappings of up to 60 characters.
 */
function shownValue(value: unknown): unknown {
  if (typeof value === 'string') return shortened(value);
  // JSON has no Infinity, so a number such as 1e309 would be quoted as null.
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  if (value === null || typeof value !== 'object') return value;
  const text = JSON.stringify(value);
  return text.length <= 60 ? value : undefined;
}

/** Formats a document path as messages name a field: `routes[0].paths`. */
export function formatField(path: ConfigPath): string {
  let text = '';
  for (const [index, part] of path.entries()) {
    if (typeof part === 'number') text += `[${part}]`;
    else if (index === 0) text += part;
    else text += `.${part}`;
  }
  return text;
}

/** Returns the value at `path` in parsed YAML or JSON, or undefined. */
export function valueAt(data: unknown, path: ConfigPath): unknown {
  let value = data;
  for (const part of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<string | number, unknown>)[part];
  }
  return value;
}

/** Names the YAML type of a value, as a message would: `a string`, `a list`, `null`. */
function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  switch (typeof value) {
    case 'string':
      return 'a string';
    case 'number':
      return Number.isInteger(value) ? 'an integer' : 'a number';
    case 'boolean':
      return 'a boolean';
    case 'object':
      return describeTaggedObject(value) ?? 'a mapping';
    default:
      return typeof value;
  }
}

/** Names the value of a YAML 1.1 tag that the parser resolves to an object other than a mapping. */
function describeTaggedObject(value: object): string | undefined {
  if (value instanceof Uint8Array) return 'binary data (!!binary)';
  if (value instanceof Date) return 'a timestamp (!!timestamp)';
  if (value instanceof Set) return 'a set (!!set)';
  if (value instanceof Map) return 'an ordered mapping (!!omap)';
  return undefined;
}

function lowerFirst(text: string): string {
  return text.charAt(0).toLowerCase() + text.slice(1);
}
