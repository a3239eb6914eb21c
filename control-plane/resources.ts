import type { HeaderActions, Route, Upstream } from '../proto/gen/loom/v1/config.js';

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
  // JSON.stringify leaves out undefined fields, so a route without the optional fields stores
  // the same bytes as before they existed.
  return JSON.stringify({
    name: route.name,
    hosts: route.hosts,
    paths: route.paths,
    methods: route.methods,
    upstream: route.upstream,
    stripPrefix: route.stripPrefix,
    addPrefix: route.addPrefix,
    hostRewrite: route.hostRewrite,
    requestHeaders: encodeHeaderActions(route.requestHeaders),
    responseHeaders: encodeHeaderActions(route.responseHeaders),
    timeouts: route.timeouts && {
      connectMs: route.timeouts.connectMs,
      responseHeaderMs: route.timeouts.responseHeaderMs,
      idleBodyMs: route.timeouts.idleBodyMs,
    },
    retries: route.retries,
    maxRequestBodyBytes: route.maxRequestBodyBytes,
  });
}

function encodeHeaderActions(actions: HeaderActions | undefined): object | undefined {
  return (
    actions && {
      set: actions.set.map((header) => ({ name: header.name, value: header.value })),
      remove: actions.remove,
    }
  );
}

/** Encodes a normalised upstream as its stored value. */
export function encodeUpstream(upstream: Upstream): string {
  return JSON.stringify({
    name: upstream.name,
    targets: upstream.targets.map((target) => ({ url: target.url, weight: target.weight })),
    balancer: upstream.balancer,
    hashOn: upstream.hashOn,
    healthCheck: upstream.healthCheck && {
      path: upstream.healthCheck.path,
      intervalMs: upstream.healthCheck.intervalMs,
      timeoutMs: upstream.healthCheck.timeoutMs,
      healthyThreshold: upstream.healthCheck.healthyThreshold,
      unhealthyThreshold: upstream.healthCheck.unhealthyThreshold,
    },
    passiveHealth: upstream.passiveHealth && {
      consecutiveFailures: upstream.passiveHealth.consecutiveFailures,
      baseEjectionMs: upstream.passiveHealth.baseEjectionMs,
      maxEjectionMs: upstream.passiveHealth.maxEjectionMs,
    },
    tls: upstream.tls && {
      caFile: upstream.tls.caFile,
      serverName: upstream.tls.serverName,
      insecureSkipVerify: upstream.tls.insecureSkipVerify,
    },
  });
}

/**
 * Decodes a stored route. Values written by another tool straight into the
 * store may be malformed; those throw, and the caller skips the key.
 */
export function decodeRoute(value: string): Route {
  const raw = JSON.parse(value) as Partial<Route>;
  if (
    typeof raw.name !== 'string' ||
    typeof raw.upstream !== 'string' ||
    !Array.isArray(raw.paths)
  ) {
    throw new TypeError('a stored route needs string "name", string "upstream" and array "paths"');
  }
  const route: Route = {
    name: raw.name,
    hosts: stringArray(raw.hosts),
    paths: stringArray(raw.paths),
    methods: stringArray(raw.methods),
    upstream: raw.upstream,
  };
  setIfDefined(route, 'stripPrefix', optionalString(raw.stripPrefix));
  setIfDefined(route, 'addPrefix', optionalString(raw.addPrefix));
  setIfDefined(route, 'hostRewrite', optionalString(raw.hostRewrite));
  setIfDefined(route, 'requestHeaders', decodeHeaderActions(raw.requestHeaders));
  setIfDefined(route, 'responseHeaders', decodeHeaderActions(raw.responseHeaders));
  if (raw.timeouts !== undefined) {
    route.timeouts = {
      connectMs: numberOr(raw.timeouts.connectMs, 0),
      responseHeaderMs: numberOr(raw.timeouts.responseHeaderMs, 0),
      idleBodyMs: numberOr(raw.timeouts.idleBodyMs, 0),
    };
  }
  setIfDefined(route, 'retries', optionalNumber(raw.retries));
  setIfDefined(route, 'maxRequestBodyBytes', optionalNumber(raw.maxRequestBodyBytes));
  return route;
}

/** Decodes a stored upstream; throws on a malformed value. */
export function decodeUpstream(value: string): Upstream {
  const raw = JSON.parse(value) as Partial<Upstream>;
  if (typeof raw.name !== 'string' || !Array.isArray(raw.targets)) {
    throw new TypeError('a stored upstream needs string "name" and array "targets"');
  }
  const upstream: Upstream = {
    name: raw.name,
    targets: raw.targets.map((target) => {
      if (typeof target?.url !== 'string') throw new TypeError('every target needs a string "url"');
      return { url: target.url, weight: typeof target.weight === 'number' ? target.weight : 1 };
    }),
  };
  setIfDefined(upstream, 'balancer', optionalString(raw.balancer));
  setIfDefined(upstream, 'hashOn', optionalString(raw.hashOn));
  const check = raw.healthCheck;
  if (check !== undefined) {
    if (typeof check.path !== 'string') throw new TypeError('a health check needs a string "path"');
    upstream.healthCheck = {
      path: check.path,
      intervalMs: numberOr(check.intervalMs, 5_000),
      timeoutMs: numberOr(check.timeoutMs, 2_000),
      healthyThreshold: numberOr(check.healthyThreshold, 2),
      unhealthyThreshold: numberOr(check.unhealthyThreshold, 3),
    };
  }
  const passive = raw.passiveHealth;
  if (passive !== undefined) {
    upstream.passiveHealth = {
      consecutiveFailures: numberOr(passive.consecutiveFailures, 5),
      baseEjectionMs: numberOr(passive.baseEjectionMs, 10_000),
      maxEjectionMs: numberOr(passive.maxEjectionMs, 300_000),
    };
  }
  if (raw.tls !== undefined) {
    upstream.tls = {
      caFile: optionalString(raw.tls.caFile) ?? '',
      serverName: optionalString(raw.tls.serverName) ?? '',
      insecureSkipVerify: raw.tls.insecureSkipVerify === true,
    };
  }
  return upstream;
}

function decodeHeaderActions(value: unknown): HeaderActions | undefined {
  if (value === undefined) return undefined;
  const raw = value as Partial<HeaderActions>;
  if (!Array.isArray(raw.set)) throw new TypeError('header actions need an array "set"');
  return {
    set: raw.set.map((header) => {
      if (typeof header?.name !== 'string' || typeof header.value !== 'string') {
        throw new TypeError('every header in "set" needs a string "name" and "value"');
      }
      return { name: header.name, value: header.value };
    }),
    remove: stringArray(raw.remove),
  };
}

function setIfDefined<T extends object, K extends keyof T>(target: T, key: K, value: T[K]): void {
  if (value !== undefined) target[key] = value;
}

function optionalString(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw new TypeError(`expected a string, got ${typeof value}`);
  return value;
}

function optionalNumber(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number') throw new TypeError(`expected a number, got ${typeof value}`);
  return value;
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === 'number' ? value : fallback;
}

function stringArray(value: unknown): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
    throw new TypeError('expected an array of strings');
  }
  return value;
}
