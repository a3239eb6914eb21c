import { z } from 'zod';

import {
  BALANCERS,
  describePatternLimit,
  HOST_LENGTH_REGEX,
  HOST_PORT_LENGTH_REGEX,
  MAX_CONSECUTIVE_FAILURES,
  MAX_DURATION_MS,
  MAX_HEALTH_THRESHOLD,
  MAX_HOST_LENGTH,
  MAX_PATTERN_LENGTH,
  MAX_ROUTE_RETRIES,
  NAME_PATTERN,
  NAME_RULE,
  PATTERN_SEGMENTS_REGEX,
} from './limits.js';

export { NAME_PATTERN };

/** The only configuration format version this release reads and writes. */
export const API_VERSION = 'loom/v1';

const name = z.string().regex(NAME_PATTERN, NAME_RULE);

/**
 * Returns the schema of a path pattern, stripPrefix or addPrefix within the
 * length and segment limits (`config/limits.ts`), checked as written. Normalising never makes a
 * value longer or adds a slash, so the stored form is within them too. The
 * messages are those of the validator, which checks the same limits on
 * values that do not come from a file.
 */
function limitedPath(kind: 'path pattern' | 'path prefix') {
  const error = (issue: { input?: unknown }) =>
    `invalid ${kind}: ${describePatternLimit(String(issue.input)) ?? 'exceeds the limits'}`;
  return z
    .string()
    .max(MAX_PATTERN_LENGTH, { error, abort: true })
    .regex(PATTERN_SEGMENTS_REGEX, { error });
}

/** Describes a host name over `MAX_HOST_LENGTH` characters. */
function describeLongHost(issue: { input?: unknown }): string {
  const name = String(issue.input).replace(/^\*\./, '').replace(/\.$/, '');
  return `invalid host: the name has ${name.length} characters, at most ${MAX_HOST_LENGTH} are allowed`;
}

export const TargetSchema = z
  .object({
    url: z.string().describe('Base URL of the target: http(s)://host:port[/base-path]'),
    weight: z
      .number()
      .int()
      .min(0)
      .max(10000)
      .default(1)
      .describe('Relative share of requests; 0 takes the target out of rotation'),
  })
  .strict();

const milliseconds = z.number().int().min(1).max(MAX_DURATION_MS);
// 0 and omitted both mean "the proxy's default", which is how the stored form and `get` write it.
const defaultableMilliseconds = z
  .number()
  .int()
  .min(0)
  .max(MAX_DURATION_MS)
  .optional()
  .transform((value) => value ?? 0)
  .describe('Milliseconds; 0 or omitted uses the proxy default');

export const HealthCheckSchema = z
  .object({
    path: z.string().describe('Path requested from every target, such as /healthz'),
    intervalMs: milliseconds.default(5_000),
    timeoutMs: milliseconds.default(2_000),
    healthyThreshold: z.number().int().min(1).max(MAX_HEALTH_THRESHOLD).default(2),
    unhealthyThreshold: z.number().int().min(1).max(MAX_HEALTH_THRESHOLD).default(3),
    host: z
      .string()
      .regex(HOST_PORT_LENGTH_REGEX, {
        error: 'invalid host; use a name such as api.internal or api.internal:8080',
      })
      .optional()
      .describe(
        'Host header of the checks; omitted sends tls.serverName to https targets, else the target host',
      ),
  })
  .strict();

export const PassiveHealthSchema = z
  .object({
    consecutiveFailures: z.number().int().min(1).max(MAX_CONSECUTIVE_FAILURES).default(5),
    baseEjectionMs: milliseconds.default(10_000),
    maxEjectionMs: milliseconds.default(300_000),
  })
  .strict();

export const UpstreamTlsSchema = z
  .object({
    caFile: z
      .string()
      .default('')
      .describe('PEM file of CA certificates; empty uses the system roots'),
    serverName: z
      .string()
      .default('')
      .describe('SNI and certificate name; empty uses the target host'),
    insecureSkipVerify: z.boolean().default(false),
  })
  .strict();

export const UpstreamSchema = z
  .object({
    name,
    targets: z.array(TargetSchema).min(1, 'an upstream needs at least one target'),
    balancer: z.enum(BALANCERS).optional(),
    hashOn: z
      .string()
      .optional()
      .describe('Hash key of the hash balancer: header:NAME, cookie:NAME or client-address'),
    healthCheck: HealthCheckSchema.optional(),
    passiveHealth: PassiveHealthSchema.optional(),
    tls: UpstreamTlsSchema.optional(),
  })
  .strict();

const HeaderValueSchema = z.object({ name: z.string(), value: z.string() }).strict();

/**
 * Returns a `set` mapping with a `__proto__` key in the list form. zod's record assigns each key
 * of its output to a plain object, where `__proto__` sets the prototype, so the header would
 * be dropped without an error. Other values are returned as they are.
 */
function listFormOfProtoKey(set: unknown): unknown {
  if (set === null || typeof set !== 'object' || Array.isArray(set)) return set;
  if (!Object.hasOwn(set, '__proto__')) return set;
  return Object.entries(set).map(([key, value]: [string, unknown]) => ({ name: key, value }));
}

/** Header changes; `set` is a map of name to value, or the list form that `loomctl get` prints. */
export const HeaderActionsSchema = z
  .object({
    set: z
      .preprocess(
        listFormOfProtoKey,
        z.union([z.record(z.string(), z.string()), z.array(HeaderValueSchema)]).default([]),
      )
      .transform((set) =>
        Array.isArray(set)
          ? set
          : Object.entries(set).map(([key, value]) => ({ name: key, value })),
      ),
    remove: z.array(z.string()).default([]),
  })
  .strict();

export const RouteTimeoutsSchema = z
  .object({
    connectMs: defaultableMilliseconds,
    responseHeaderMs: defaultableMilliseconds,
    idleBodyMs: defaultableMilliseconds,
  })
  .strict();

export const RouteSchema = z
  .object({
    name,
    hosts: z
      .array(z.string().regex(HOST_LENGTH_REGEX, { error: describeLongHost }))
      .default([])
      .describe('Host names or *.wildcards; omitted or empty means any host'),
    paths: z
      .array(limitedPath('path pattern'))
      .min(1, 'a route needs at least one path')
      .describe('Path patterns: static segments, :param and a trailing *name catch-all'),
    methods: z
      .array(z.string())
      .default([])
      .describe('HTTP methods; omitted or empty means any method'),
    upstream: name.describe('Name of the upstream that receives matching requests'),
    stripPrefix: limitedPath('path prefix')
      .optional()
      .describe('Path prefix removed before forwarding'),
    addPrefix: limitedPath('path prefix')
      .optional()
      .describe('Path prefix added after stripPrefix'),
    hostRewrite: z
      .string()
      .regex(HOST_PORT_LENGTH_REGEX, {
        error: 'invalid host; use a name such as api.internal or api.internal:8080',
      })
      .optional()
      .describe('Host header sent to the upstream'),
    requestHeaders: HeaderActionsSchema.optional(),
    responseHeaders: HeaderActionsSchema.optional(),
    timeouts: RouteTimeoutsSchema.optional(),
    retries: z.number().int().min(0).max(MAX_ROUTE_RETRIES).optional(),
    maxRequestBodyBytes: z
      .number()
      .int()
      .min(0)
      .max(Number.MAX_SAFE_INTEGER)
      .optional()
      .describe('Largest request body in bytes; 0 means no limit'),
  })
  .strict();

export const ConfigFileSchema = z
  .object({
    $schema: z.string().optional().describe('URL or path of this JSON Schema, for editors'),
    apiVersion: z
      .literal(API_VERSION)
      .optional()
      .describe(`Format version; "${API_VERSION}" is the only one so far`),
    upstreams: z.array(UpstreamSchema).default([]),
    routes: z.array(RouteSchema).default([]),
    // Written by "loomctl get" so that its output can be applied back; apply ignores them.
    version: z
      .number()
      .int()
      .min(0)
      .optional()
      .describe('Store version the document was read at; informational, apply ignores it'),
    epoch: z
      .string()
      .optional()
      .describe('Store epoch the document was read at; informational, apply ignores it'),
  })
  .strict();

export type ConfigFile = z.infer<typeof ConfigFileSchema>;
