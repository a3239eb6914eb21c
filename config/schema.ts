import { z } from 'zod';

/** The only configuration format version this release reads and writes. */
export const API_VERSION = 'loom/v1';

/** Resource names: they become etcd key segments, so they stay URL- and key-safe. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const name = z
  .string()
  .regex(NAME_PATTERN, 'must be 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit');

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

export const UpstreamSchema = z
  .object({
    name,
    targets: z.array(TargetSchema).min(1, 'an upstream needs at least one target'),
  })
  .strict();

export const RouteSchema = z
  .object({
    name,
    hosts: z
      .array(z.string())
      .default([])
      .describe('Host names or *.wildcards; omitted or empty means any host'),
    paths: z
      .array(z.string())
      .min(1, 'a route needs at least one path')
      .describe('Path patterns: static segments, :param and a trailing *name catch-all'),
    methods: z
      .array(z.string())
      .default([])
      .describe('HTTP methods; omitted or empty means any method'),
    upstream: name.describe('Name of the upstream that receives matching requests'),
  })
  .strict();

export const ConfigFileSchema = z
  .object({
    apiVersion: z.literal(API_VERSION).optional(),
    upstreams: z.array(UpstreamSchema).default([]),
    routes: z.array(RouteSchema).default([]),
  })
  .strict();

export type ConfigFile = z.infer<typeof ConfigFileSchema>;
