import type { Route, Upstream } from '../proto/gen/loom/v1/config.js';

/** Default key prefix of Loom's resources in the store. */
export const DEFAULT_PREFIX = '/loom/';

export type ResourceKind = 'route' | 'upstream';

const FOLDERS: Record<ResourceKind, string> = { route: 'routes/', upstream: 'upstreams/' };

/** Returns the store key of one resource, such as `/loom/routes/get-user`. */
export function resourceKey(prefix: string, kind: ResourceKind, name: string): string {
  return `${prefix}${FOLDERS[kind]}${name}`;
}

/** Splits a store key into kind and name; undefined for keys Loom does not own. */
export function parseResourceKey(
  prefix: string,
  key: string,
): { kind: ResourceKind; name: string } | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  for (const kind of ['route', 'upstream'] as const) {
    const folder = FOLDERS[kind];
    if (rest.startsWith(folder) && rest.length > folder.length) {
      return { kind, name: rest.slice(folder.length) };
    }
  }
  return undefined;
}

/**
 * Encodes a normalised route as its stored value. Fields are written in a
 * fixed order so that equal routes store equal bytes.
 */
export function encodeRoute(route: Route): string {
  return JSON.stringify({
    name: route.name,
    hosts: route.hosts,
    paths: route.paths,
    methods: route.methods,
    upstream: route.upstream,
  });
}

/** Encodes a normalised upstream as its stored value. */
export function encodeUpstream(upstream: Upstream): string {
  return JSON.stringify({
    name: upstream.name,
    targets: upstream.targets.map((target) => ({ url: target.url, weight: target.weight })),
  });
}

/**
 * Decodes a stored route. Values written by another tool straight into the
 * store may be malformed; those throw, and the caller skips the key.
 */
export function decodeRoute(value: string): Route {
  const raw = JSON.parse(value) as Partial<Route>;
  if (typeof raw.name !== 'string' || typeof raw.upstream !== 'string' || !Array.isArray(raw.paths)) {
    throw new TypeError('a stored route needs string "name", string "upstream" and array "paths"');
  }
  return {
    name: raw.name,
    hosts: stringArray(raw.hosts),
    paths: stringArray(raw.paths),
    methods: stringArray(raw.methods),
    upstream: raw.upstream,
  };
}

/** Decodes a stored upstream; throws on a malformed value. */
export function decodeUpstream(value: string): Upstream {
  const raw = JSON.parse(value) as Partial<Upstream>;
  if (typeof raw.name !== 'string' || !Array.isArray(raw.targets)) {
    throw new TypeError('a stored upstream needs string "name" and array "targets"');
  }
  return {
    name: raw.name,
    targets: raw.targets.map((target) => {
      if (typeof target?.url !== 'string') throw new TypeError('every target needs a string "url"');
      return { url: target.url, weight: typeof target.weight === 'number' ? target.weight : 1 };
    }),
  };
}

function stringArray(value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
    throw new TypeError('expected an array of strings');
  }
  return value;
}
