/** One field that differs between the stored and the declared form of a resource. */
export interface FieldChange {
  /** Dotted path such as `upstream` or `targets[0].weight`. */
  field: string;
  /** JSON text of the old value; undefined when the field is new. */
  before: string | undefined;
  /** JSON text of the new value; undefined when the field is removed. */
  after: string | undefined;
}

/**
 * Compares two stored resources field by field. Objects are compared key by
 * key and arrays of objects element by element; arrays of strings or
 * numbers (hosts, paths, methods) are compared whole, so a change shows the
 * complete old and new list.
 */
export function diffFields(before: unknown, after: unknown, path = ''): FieldChange[] {
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
    return keys.flatMap((key) =>
      diffFields(before[key], after[key], path ? `${path}.${key}` : key),
    );
  }
  if (isObjectArray(before) && isObjectArray(after)) {
    const length = Math.max(before.length, after.length);
    return Array.from({ length }, (_, index) =>
      diffFields(before[index], after[index], `${path}[${index}]`),
    ).flat();
  }

  const [old, next] = [json(before), json(after)];
  return old === next ? [] : [{ field: path, before: old, after: next }];
}

function json(value: unknown): string | undefined {
  return value === undefined ? undefined : JSON.stringify(value);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isObjectArray(value: unknown): value is unknown[] {
  return Array.isArray(value) && value.some(isObject);
}
