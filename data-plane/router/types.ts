/** Route input of the router: patterns plus the value returned on a match. */
export interface RouterRoute<T> {
  /** Route name, used in conflict errors. */
  name: string;
  /** Lower-case host names; empty means any host. */
  hosts: readonly string[];
  /**
   * Path patterns: static segments, `:param` segments, params mixed with text
   * (`:name.json`), and a trailing `*name` or `**name` catch-all.
   */
  paths: readonly string[];
  /** Upper-case methods; empty means any method. */
  methods: readonly string[];
  value: T;
}

/**
 * Result of a lookup. The router never throws on a request. A `found` result with params or a
 * `path` is a fresh object. A `found` result without either is frozen and shared by every
 * lookup of that route.
 * `path` is the request path in normalized form, present only when it differs from the path
 * given to `find`, so the proxy forwards it without normalizing the path again.
 */
export type RouterMatch<T> =
  | { kind: 'found'; value: T; route: string; params: Record<string, string>; path?: string }
  | { kind: 'method-not-allowed'; allow: string[] }
  | { kind: 'not-found' }
  | { kind: 'bad-request'; reason: string };

/** An immutable routing index built once from a complete set of routes. */
export interface Router<T> {
  /**
   * Finds the route for a request. `host` is the raw Host header (it may carry
   * a port, upper case or a trailing dot); `path` is the raw request target
   * without the query string.
   */
  find(method: string, host: string | undefined, path: string): RouterMatch<T>;
  /**
   * Returns the sorted methods that the routes matching `host` and `path` list, with HEAD
   * where one lists GET. Routes without a method list add none, so the result can be empty
   * on a path that such a route matches. An invalid path gives an empty list.
   */
  listMethods(host: string | undefined, path: string): string[];
  /** Number of routes indexed. */
  readonly size: number;
}
