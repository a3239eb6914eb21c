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
      host: upstream.healthCheck.host,
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

/** Largest value of the protocol's uint32 fields (timeouts, weights, retries). */
const MAX_UINT32 = 0xffff_ffff;

/**
 * Decodes a stored route. Values written by another tool straight into the
 * store may be malformed; those throw with the field and the expected value,
 * and the caller skips the key. `null` counts as a missing optional field.
 * Numbers outside the range of their protocol field throw too, because no
 * snapshot could carry them.
 */
export function decodeRoute(value: string): Route {
  const raw = parseObject(value, 'a stored route') as Partial<Route>;
  if (
    typeof raw.name !== 'string' ||
    typeof raw.upstream !== 'string' ||
    !Array.isArray(raw.paths)
  ) {
    throw new TypeError('a stored route needs string "name", string "upstream" and array "paths"');
  }
  const route: Route = {
    name: raw.name,
    hosts: stringArray(raw.hosts, 'hosts'),
    paths: stringArray(raw.paths, 'paths'),
    methods: stringArray(raw.methods, 'methods'),
    upstream: raw.upstream,
  };
  setIfDefined(route, 'stripPrefix', optionalString(raw.stripPrefix, 'stripPrefix'));
  setIfDefined(route, 'addPrefix', optionalString(raw.addPrefix, 'addPrefix'));
  setIfDefined(route, 'hostRewrite', optionalString(raw.hostRewrite, 'hostRewrite'));
  setIfDefined(route, 'requestHeaders', decodeHeaderActions(raw.requestHeaders, 'requestHeaders'));
  setIfDefined(
    route,
    'responseHeaders',
    decodeHeaderActions(raw.responseHeaders, 'responseHeaders'),
  );
  const timeouts = optionalObject(raw.timeouts, 'timeouts');
  if (timeouts !== undefined) {
    route.timeouts = {
      connectMs: uint32Or(timeouts.connectMs, 0, 'timeouts.connectMs'),
      responseHeaderMs: uint32Or(timeouts.responseHeaderMs, 0, 'timeouts.responseHeaderMs'),
      idleBodyMs: uint32Or(timeouts.idleBodyMs, 0, 'timeouts.idleBodyMs'),
    };
  }
  setIfDefined(route, 'retries', optionalInteger(raw.retries, MAX_UINT32, 'retries'));
  setIfDefined(
    route,
    'maxRequestBodyBytes',
    optionalInteger(raw.maxRequestBodyBytes, Number.MAX_SAFE_INTEGER, 'maxRequestBodyBytes'),
  );
  return route;
}

/** Decodes a stored upstream; throws on a malformed value, as `decodeRoute` does. */
export function decodeUpstream(value: string): Upstream {
  const raw = parseObject(value, 'a stored upstream') as Partial<Upstream>;
  if (typeof raw.name !== 'string' || !Array.isArray(raw.targets)) {
    throw new TypeError('a stored upstream needs string "name" and array "targets"');
  }
  const upstream: Upstream = {
    name: raw.name,
    targets: raw.targets.map((target, index) => {
      if (typeof target?.url !== 'string') throw new TypeError('every target needs a string "url"');
      return { url: target.url, weight: uint32Or(target.weight, 1, `targets[${index}].weight`) };
    }),
  };
  setIfDefined(upstream, 'balancer', optionalString(raw.balancer, 'balancer'));
  setIfDefined(upstream, 'hashOn', optionalString(raw.hashOn, 'hashOn'));
  const check = optionalObject(raw.healthCheck, 'healthCheck');
  if (check !== undefined) {
    if (typeof check.path !== 'string') throw new TypeError('a health check needs a string "path"');
    upstream.healthCheck = {
      path: check.path,
      intervalMs: uint32Or(check.intervalMs, 5_000, 'healthCheck.intervalMs'),
      timeoutMs: uint32Or(check.timeoutMs, 2_000, 'healthCheck.timeoutMs'),
      healthyThreshold: uint32Or(check.healthyThreshold, 2, 'healthCheck.healthyThreshold'),
      unhealthyThreshold: uint32Or(check.unhealthyThreshold, 3, 'healthCheck.unhealthyThreshold'),
    };
    setIfDefined(upstream.healthCheck, 'host', optionalString(check.host, 'healthCheck.host'));
  }
  const passive = optionalObject(raw.passiveHealth, 'passiveHealth');
  if (passive !== undefined) {
    upstream.passiveHealth = {
      consecutiveFailures: uint32Or(
        passive.consecutiveFailures,
        5,
        'passiveHealth.consecutiveFailures',
      ),
      baseEjectionMs: uint32Or(passive.baseEjectionMs, 10_000, 'passiveHealth.baseEjectionMs'),
      maxEjectionMs: uint32Or(passive.maxEjectionMs, 300_000, 'passiveHealth.maxEjectionMs'),
    };
  }
  const tls = optionalObject(raw.tls, 'tls');
  if (tls !== undefined) {
    upstream.tls = {
      caFile: optionalString(tls.caFile, 'tls.caFile') ?? '',
      serverName: optionalString(tls.serverName, 'tls.serverName') ?? '',
      insecureSkipVerify: tls.insecureSkipVerify === true,
    };
  }
  return upstream;
}

function decodeHeaderActions(value: unknown, field: string): HeaderActions | undefined {
  const raw = optionalObject(value, field) as Partial<HeaderActions> | undefined;
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw.set)) throw new TypeError(`"${field}" needs an array "set"`);
  return {
    set: raw.set.map((header) => {
      if (typeof header?.name !== 'string' || typeof header.value !== 'string') {
        throw new TypeError(`every header in "${field}.set" needs a string "name" and "value"`);
      }
      return { name: header.name, value: header.value };
    }),
    remove: stringArray(raw.remove, `${field}.remove`),
  };
}

function setIfDefined<T extends object, K extends keyof T>(target: T, key: K, value: T[K]): void {
  if (value !== undefined) target[key] = value;
}

/** Parses `value` as JSON and returns it when it is an object; `description` starts the error. */
function parseObject(value: string, description: string): Record<string, unknown> {
  const raw: unknown = JSON.parse(value);
  if (!isPlainObject(raw))
    throw new TypeError(`${description} must be a JSON object (got ${typeName(raw)})`);
  return raw;
}

function optionalObject(value: unknown, field: string): Record<string, unknown> | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isPlainObject(value)) {
    throw new TypeError(`"${field}" must be an object (got ${typeName(value)})`);
  }
  return value;
}

function optionalString(value: unknown, field: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') {
    throw new TypeError(`"${field}" must be a string (got ${typeName(value)})`);
  }
  return value;
}

/** Returns `value` when it is an integer from 0 to `max`, undefined when it is missing. */
function optionalInteger(value: unknown, max: number, field: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
    throw new TypeError(
      `"${field}" must be an integer from 0 to ${max} (got ${JSON.stringify(value)})`,
    );
  }
  return value;
}

function uint32Or(value: unknown, fallback: number, field: string): number {
  return optionalInteger(value, MAX_UINT32, field) ?? fallback;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function typeName(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  const text = JSON.stringify(value);
  const clipped = text.length > 60 ? `${text.slice(0, 60)}...` : text;
  return `${typeof value} ${clipped}`;
}

function stringArray(value: unknown, field: string): string[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value) || !value.every((item) => typeof item === 'string')) {
    throw new TypeError(`"${field}" must be an array of strings`);
  }
  return value;
}
