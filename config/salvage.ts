import { z } from 'zod';

import type { ConfigPath } from './validate.js';

/**
 * The fields of a document that failed the schema, as a tree of path parts.
 * An unknown field counts as a failed field at its own path.
 */
export class FailedFields {
  readonly #root = new FailedNode();

  /** Builds the tree from schema issues, whose paths are relative to the parsed value. */
  static fromIssues(issues: readonly z.core.$ZodIssue[]): FailedFields {
    const failed = new FailedFields();
    for (const issue of issues) {
      const path = issue.path as ConfigPath;
      if (issue.code === 'unrecognized_keys') {
        for (const key of issue.keys) failed.add([...path, key]);
      } else {
        failed.add(path);
      }
    }
    return failed;
  }

  add(path: ConfigPath): void {
    let node = this.#root;
    for (const part of path) {
      let child = node.children.get(part);
      if (!child) node.children.set(part, (child = new FailedNode()));
      node = child;
    }
    node.failed = true;
  }

  /** Returns the node at `path`, or undefined when nothing at or below it failed. */
  nodeAt(path: ConfigPath): FailedNode | undefined {
    let node: FailedNode | undefined = this.#root;
    for (const part of path) {
      if (node.failed) return node;
      node = node.children.get(part);
      if (!node) return undefined;
    }
    return node;
  }

  /**
   * Returns whether a check of the field at `path` would read a failed value:
   * the field, a field that contains it, or a field inside it failed.
   */
  touches(path: ConfigPath): boolean {
    return this.nodeAt(path) !== undefined;
  }
}

class FailedNode {
  failed = false;
  readonly children = new Map<string | number, FailedNode>();
}

/**
 * Parses the parts of `data` that passed `schema` and puts a placeholder
 * (the default, or an empty value of the right type) where a field failed.
 * The result has the schema's output type, so the semantic checks can run on
 * it. They must skip every field that `failed.touches`, because placeholders
 * are not values from the file.
 */
export function salvage<T extends z.ZodType>(
  schema: T,
  data: unknown,
  failed: FailedFields,
): z.output<T> {
  return salvageAt(schema, data, failed, []) as z.output<T>;
}

function salvageAt(
  schema: z.ZodType,
  data: unknown,
  failed: FailedFields,
  path: ConfigPath,
): unknown {
  const node = failed.nodeAt(path);
  if (node === undefined) {
    const result = schema.safeParse(data);
    if (result.success) return result.data;
    // Zod reports every failing field, so this is not expected. A placeholder is safer than a throw.
    failed.add(path);
    return placeholder(schema);
  }
  if (node.failed) return placeholder(schema);

  const inner = unwrap(schema);
  if (inner instanceof z.ZodObject && isPlainObject(data)) {
    const fields = Object.entries(inner.shape as Record<string, z.ZodType>).map(([key, field]) => [
      key,
      salvageAt(field, data[key], failed, [...path, key]),
    ]);
    return Object.fromEntries(fields.filter(([, value]) => value !== undefined));
  }
  if (inner instanceof z.ZodArray && Array.isArray(data)) {
    return data.map((element, index) =>
      salvageAt(inner.element as z.ZodType, element, failed, [...path, index]),
    );
  }
  return placeholder(schema);
}

/** Returns a value of the schema's output type to use in place of a failed field. */
function placeholder(schema: z.ZodType): unknown {
  const empty = schema.safeParse(undefined);
  if (empty.success) return empty.data;

  const inner = unwrap(schema);
  if (inner instanceof z.ZodObject) {
    const shape = inner.shape as Record<string, z.ZodType>;
    return Object.fromEntries(
      Object.entries(shape).map(([key, field]) => [key, placeholder(field)]),
    );
  }
  if (inner instanceof z.ZodArray) return [];
  if (inner instanceof z.ZodNumber) return 0;
  if (inner instanceof z.ZodBoolean) return false;
  return '';
}

/** Returns the schema inside optional, nullable and default wrappers. */
function unwrap(schema: z.ZodType): z.ZodType {
  let inner = schema;
  while (
    inner instanceof z.ZodOptional ||
    inner instanceof z.ZodDefault ||
    inner instanceof z.ZodNullable
  ) {
    inner = inner.unwrap() as z.ZodType;
  }
  return inner;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
