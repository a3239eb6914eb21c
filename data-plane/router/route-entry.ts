import { decodeParam } from './path.js';
import type { PathPattern } from './pattern.js';
import type { RouterMatch } from './types.js';

/** The `found` variant of a lookup result. */
export type FoundMatch<T> = Extract<RouterMatch<T>, { kind: 'found' }>;

/** One path of one route as stored in a tree: the match result and the names of its params. */
export interface RouteEntry<T> {
  route: string;
  value: T;
  /** The pattern as the route wrote it, for conflict messages. */
  pattern: string;
  /** Names of the params in path order, the catch-all last. */
  names: readonly string[];
  /**
   * True for the entry that matches the parent path of a `**` pattern
   * (`/api` for `/api/**`): the last name, the catch-all, is then empty.
   */
  emptyCatchAll: boolean;
  /** Builds the params object of a match; see `compileParamsReader`. */
  readParams: ParamsReader;
  /**
   * The frozen result that every lookup of an entry without params returns, so
   * such lookups allocate nothing. Null when the entry has params.
   */
  match: FoundMatch<T> | null;
}

/**
 * Returns the params of a match from the normalized path and the bounds the lookup recorded.
 * `escaped` must be true when the path contains `%`, so that values are decoded.
 */
export type ParamsReader = (
  path: string,
  bounds: Int32Array,
  escaped: boolean,
) => Record<string, string>;

/**
 * Scratch state of a lookup: the start and end of each param of the current
 * match in the normalized path (two slots per param), and whether some route
 * matched the path but not the method. One instance per router is reused by
 * every lookup, which is safe because a lookup is synchronous and calls no
 * outside code.
 */
export class SearchState {
  bounds = new Int32Array(8);
  pathMatched = false;

  /** Grows `bounds` to hold `captures` params. */
  reserve(captures: number): void {
    if (captures * 2 > this.bounds.length) this.bounds = new Int32Array(captures * 2);
  }
}

/**
 * Creates the entry for one path pattern of a route. `emptyCatchAll` selects
 * the entry of a `**` pattern that matches its parent path. Entries with the
 * same names can share one `reader`.
 */
export function createRouteEntry<T>(
  route: string,
  value: T,
  pattern: PathPattern,
  names: readonly string[],
  emptyCatchAll = false,
  reader: ParamsReader = compileParamsReader(names, emptyCatchAll),
): RouteEntry<T> {
  const match =
    names.length === 0
      ? Object.freeze({ kind: 'found' as const, value, route, params: NO_PARAMS })
      : null;
  return { route, value, pattern: pattern.source, names, emptyCatchAll, readParams: reader, match };
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

/** Params of every match without params: frozen, so sharing it is safe. */
const NO_PARAMS: Record<string, string> = Object.freeze(new Params());

/**
 * Compiles the params reader for one list of names. The generated function
 * stores each name as a constant key: for a three-param route on Node 20 it
 * took 52 ns against 150 ns for a loop storing through `params[names[i]]`,
 * whose keys differ from route to route. Names are letters, digits, `_` or
 * `*`, and each is written as a JSON string literal, so no name can change the
 * generated code. Each value is decoded once; a path without escapes needs no
 * decoding, and the caller passes whether the path has one, because it already
 * searched the path for `%` when normalizing it.
 */
export function compileParamsReader(
  names: readonly string[],
  emptyCatchAll: boolean,
): ParamsReader {
  return (
    cachedParamsReader(names, emptyCatchAll) ?? compileParamsReaders([names], emptyCatchAll)[0]
  );
}

/** Returns the reader that `compileParamsReader` compiled before for these names, if any. */
export function cachedParamsReader(
  names: readonly string[],
  emptyCatchAll: boolean,
): ParamsReader | undefined {
  return compiledReaders.get(readerKey(names, emptyCatchAll));
}

/**
 * Compiles the readers of several lists of names in one `new Function` call (see
 * `compileParamsReader`) and caches each. For 84 lists, one call took about 0.6 ms on Node 20
 * against 1.2 ms for one call per list, most of a call's cost being fixed.
 */
export function compileParamsReaders(
  lists: readonly (readonly string[])[],
  emptyCatchAll: boolean,
): ParamsReader[] {
  const sources = lists.map((names) => readerSource(names, emptyCatchAll));
  const factory = new Function('Params', 'decode', `return [${sources.join(',')}];`);
  const readers = factory(Params, decodeParam) as ParamsReader[];
  for (let i = 0; i < lists.length; i++) {
    if (compiledReaders.size < MAX_CACHED_READERS) {
      compiledReaders.set(readerKey(lists[i], emptyCatchAll), readers[i]);
    }
  }
  return readers;
}

/**
 * Compiled params readers by names, shared by every router in the process. A reader depends
 * only on its names. Compiling one with `new Function` and its first call took about 40
 * microseconds in a micro-benchmark on Node 20, as long as adding 25 routes, and every
 * snapshot's table would otherwise compile the same readers again.
 */
const compiledReaders = new Map<string, ParamsReader>();
/** Maximum size of `compiledReaders`, so that ever new param names cannot grow it forever. */
const MAX_CACHED_READERS = 4096;

function readerKey(names: readonly string[], emptyCatchAll: boolean): string {
  // Names never contain "/" or "!", so the key is unambiguous.
  return (emptyCatchAll ? '!' : '') + names.join('/');
}

/** Returns the source of an arrow function that reads the params of `names`. */
function readerSource(names: readonly string[], emptyCatchAll: boolean): string {
  const captured = emptyCatchAll ? names.length - 1 : names.length;
  const lines = ['const params = new Params();'];
  for (let i = 0; i < captured; i++) {
    const slice = `path.slice(bounds[${2 * i}], bounds[${2 * i + 1}])`;
    lines.push(`params[${JSON.stringify(names[i])}] = escaped ? decode(${slice}) : ${slice};`);
  }
  if (emptyCatchAll) lines.push(`params[${JSON.stringify(names[captured])}] = '';`);
  lines.push('return params;');
  return `(path, bounds, escaped) => {${lines.join('')}}`;
}

/**
 * Returns the params of an entry found for the normalized `path`, decoded once each.
 * `escaped` defaults to whether the path contains `%`.
 */
export function extractParams(
  entry: RouteEntry<unknown>,
  path: string,
  bounds: Int32Array,
  escaped: boolean = path.indexOf('%') !== -1,
): Record<string, string> {
  return entry.readParams(path, bounds, escaped);
}
