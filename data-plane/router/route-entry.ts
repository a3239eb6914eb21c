import { decodeParam } from './path.js';
import type { PathPattern } from './pattern.js';

/** One path of one route as stored in a tree: the match result and the names of its params. */
export interface RouteEntry<T> {
  route: string;
  value: T;
  /** The pattern as the route wrote it, for conflict messages. */
  pattern: string;
  /** Names of the `:param` segments, in path order. */
  paramNames: string[];
  /** Name of the catch-all, or null when the pattern has none. */
  catchAllName: string | null;
}

/** Creates the entry for one path pattern of a route. */
export function createRouteEntry<T>(route: string, value: T, pattern: PathPattern): RouteEntry<T> {
  const entry: RouteEntry<T> = {
    route,
    value,
    pattern: pattern.source,
    paramNames: [],
    catchAllName: null,
  };
  for (const segment of pattern.segments) {
    if (segment.kind === 'param') entry.paramNames.push(segment.name);
    if (segment.kind === 'catch-all') entry.catchAllName = segment.name;
  }
  return entry;
}

/** Returns how many slots a pattern needs in the `starts` array of a lookup. */
export function countCaptures(pattern: PathPattern): number {
  return pattern.segments.filter((segment) => segment.kind !== 'static').length;
}

/**
 * Params of one match. The prototype is an empty frozen object without a
 * prototype of its own, so nothing is inherited and `__proto__` is an ordinary
 * key. On Node 20, creating these measured faster than `Object.create(null)`.
 */
class Params {
  [name: string]: string;
}
delete (Params.prototype as { constructor?: unknown }).constructor;
Object.setPrototypeOf(Params.prototype, null);
Object.freeze(Params.prototype);

/**
 * Returns the params of an entry found for the normalized `path`, decoded once
 * each. `starts` holds where each param, then the catch-all, starts in the
 * path, as the lookup that found the entry recorded them.
 */
export function extractParams(
  entry: RouteEntry<unknown>,
  path: string,
  starts: Int32Array,
): Record<string, string> {
  const params = new Params();
  const names = entry.paramNames;
  for (let i = 0; i < names.length; i++) {
    const start = starts[i];
    let end = path.indexOf('/', start);
    if (end === -1) end = path.length;
    params[names[i]] = decodeParam(path.slice(start, end));
  }
  if (entry.catchAllName !== null) {
    params[entry.catchAllName] = decodeParam(path.slice(starts[names.length]));
  }
  return params;
}
