import type { ConfigPath } from './validate.js';

/**
 * Maximum nesting of lists and mappings in a config document. The deepest field of the format,
 * `routes[0].requestHeaders.set[0].name`, is 5 levels down. Schema checks and messages walk
 * values recursively, so a document nested thousands of levels deep would overflow the stack.
 */
export const MAX_NESTING = 32;

/**
 * Returns the path of the first list or mapping nested deeper than `MAX_NESTING` levels in a
 * parsed document, or undefined when there is none. The walk uses a stack instead of
 * recursion, so it cannot overflow the call stack itself.
 */
export function findTooDeepValue(data: unknown): ConfigPath | undefined {
  if (data === null || typeof data !== 'object') return undefined;
  const pending: Container[] = [{ value: data, depth: 0 }];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    if (next.depth > MAX_NESTING) return pathOf(next);
    const items: [string | number, unknown][] = Array.isArray(next.value)
      ? next.value.map((item, index) => [index, item])
      : Object.entries(next.value);
    for (const [key, value] of items) {
      if (value === null || typeof value !== 'object') continue;
      pending.push({ value, depth: next.depth + 1, key, parent: next });
    }
  }
  return undefined;
}

/** A list or mapping met by the walk, linked to the one that contains it. */
interface Container {
  value: object;
  depth: number;
  key?: string | number;
  parent?: Container;
}

function pathOf(container: Container): ConfigPath {
  const path: ConfigPath = [];
  for (let at: Container | undefined = container; at?.key !== undefined; at = at.parent) {
    path.unshift(at.key);
  }
  return path;
}
