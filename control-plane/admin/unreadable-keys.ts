import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { decodeRoute, decodeUpstream, parseResourceKey } from '../resources.js';
import type { KeyValue } from '../store/store.js';
import type { UnreadableKey } from './plan.js';

/** Unreadable keys listed in a response; `unreadableTotal` counts the rest too. */
const MAX_LISTED_KEYS = 20;
/** Characters of a decode error kept in a response. */
const MAX_REASON_LENGTH = 200;

/**
 * Returns the keys under `prefix` named like a route or upstream that are not among the
 * decoded `routes` and `upstreams`, because their values failed to decode, with the error.
 */
export function findUnreadableKeys(
  prefix: string,
  items: readonly KeyValue[],
  decoded: { routes: readonly Route[]; upstreams: readonly Upstream[] },
): UnreadableKey[] {
  const names = {
    route: new Set(decoded.routes.map((route) => route.name)),
    upstream: new Set(decoded.upstreams.map((upstream) => upstream.name)),
  };
  const unreadable: UnreadableKey[] = [];
  for (const item of items) {
    const parsed = parseResourceKey(prefix, item.key);
    if (parsed === undefined || names[parsed.kind].has(parsed.name)) continue;
    unreadable.push({
      ...parsed,
      key: item.key,
      reason: describeDecodeError(parsed.kind, item.value),
    });
  }
  return unreadable;
}

function describeDecodeError(kind: 'route' | 'upstream', value: string): string {
  try {
    if (kind === 'route') decodeRoute(value);
    else decodeUpstream(value);
    return 'the value was skipped when read';
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/** Returns the response fields that list `unreadable`: at most 20 keys, and the count of all. */
export function unreadableFields(unreadable: readonly UnreadableKey[]): {
  unreadable: UnreadableKey[];
  unreadableTotal: number;
} {
  const listed = unreadable.slice(0, MAX_LISTED_KEYS).map((item) => ({
    ...item,
    reason: item.reason.slice(0, MAX_REASON_LENGTH),
  }));
  return { unreadable: listed, unreadableTotal: unreadable.length };
}
