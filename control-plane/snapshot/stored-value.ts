import { isDeepStrictEqual } from 'node:util';

import type { ConfigIssue } from '../../common/errors.js';
import { normalizeRoute, normalizeUpstream } from '../../config/normalize.js';
import { validateConfig } from '../../config/validate.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import {
  decodeRoute,
  decodeUpstream,
  encodeRoute,
  encodeUpstream,
  type ResourceKind,
} from '../resources.js';

/** A route or upstream read from the store, in stored form. */
export type StoredResource =
  { kind: 'route'; value: Route } | { kind: 'upstream'; value: Upstream };

/**
 * Decodes the value of a resource key and puts it in stored form (`normalizeRoute`,
 * `normalizeUpstream`), named after its key. A value written by an older release or
 * straight into the store, such as `"methods":["get"]`, may spell the stored form
 * differently. Proxies serve what this returns, and `loomctl diff` compares against it, so
 * both see the same resource.
 *
 * @throws Error when the value cannot be decoded (see `decodeRoute`, `decodeUpstream`).
 */
export function readStoredValue(kind: ResourceKind, name: string, value: string): StoredResource {
  if (kind === 'route') {
    return { kind, value: normalizeRoute({ ...decodeRoute(value), name }) };
  }
  return { kind, value: normalizeUpstream({ ...decodeUpstream(value), name }) };
}

/**
 * Returns the top-level fields whose stored JSON differs from the stored form of `resource`,
 * sorted, or an empty list when `value` already is that stored form. A field missing from
 * one side counts as different, so fields that Loom does not know are listed too.
 */
export function respelledFields(value: string, resource: StoredResource): string[] {
  const expected =
    resource.kind === 'route' ? encodeRoute(resource.value) : encodeUpstream(resource.value);
  if (expected === value) return [];

  const stored = JSON.parse(value) as Record<string, unknown>;
  const normal = JSON.parse(expected) as Record<string, unknown>;
  const fields = new Set([...Object.keys(stored), ...Object.keys(normal)]);
  return [...fields].filter((field) => !isDeepStrictEqual(stored[field], normal[field])).sort();
}

/**
 * Checks one stored resource on its own with the rules that `loomctl apply` applies. Checks
 * that need the other resources (unknown upstreams, route conflicts) are left out, because
 * `loomctl apply` reports those for stored resources when it checks the merged configuration.
 */
export function checkStoredResource(resource: StoredResource): ConfigIssue[] {
  return resource.kind === 'route'
    ? validateConfig([resource.value], [], undefined, { allowUndeclaredUpstreams: true })
    : validateConfig([], [resource.value]);
}
