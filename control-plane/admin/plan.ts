import { ConfigError, LoomError, type ConfigIssue } from '../../common/errors.js';
import { normalizeRoute, normalizeUpstream } from '../../config/normalize.js';
import { describeMissingResource } from '../../config/limits.js';
import { ConfigFileSchema } from '../../config/schema.js';
import {
  describeSchemaIssues,
  describeSchemaProblem,
  parseWithSchema,
} from '../../config/schema-issues.js';
import { validateConfig } from '../../config/validate.js';
import type { Change } from '../../proto/gen/loom/v1/admin.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { encodeRoute, encodeUpstream, resourceKey, type ResourceKind } from '../resources.js';
import type { StoreOperation } from '../store/store.js';

/** The stored configuration, as read at one revision. */
export interface StoredConfig {
  revision: number;
  /** Routes in stored form, as `readStoredValue` returns them. */
  routes: Route[];
  /** Upstreams in stored form, as `readStoredValue` returns them. */
  upstreams: Upstream[];
  /** Keys of routes and upstreams whose values cannot be decoded; proxies skip them. */
  unreadable?: UnreadableKey[];
}

/** A key under the prefix, named like a route or upstream, whose value cannot be decoded. */
export interface UnreadableKey {
  kind: ResourceKind;
  name: string;
  key: string;
  /** The decoding error, such as the JSON.parse message. */
  reason: string;
}

/** What an apply or delete would write. */
export interface Plan {
  /** Changes sorted by kind and name. */
  changes: Pick<Change, 'kind' | 'name' | 'action'>[];
  /** Stored form (JSON) before and after each change, by `kind/name`; empty for none. */
  values: Map<string, { beforeJson: string; afterJson: string }>;
  operations: StoreOperation[];
}

/**
 * Plans an apply: the declared resources replace stored ones of the same
 * name, and with `prune` every stored resource not declared is deleted. The
 * resulting whole configuration is validated before anything is planned, so
 * an apply that would leave a route without its upstream is rejected.
 *
 * The routes and upstreams of `stored` must already be in stored form, as
 * `readStoredValue` puts them, because they are compared with the normalised
 * declared ones as they are. A value in another spelling would show as a change.
 */
export function planApply(
  prefix: string,
  stored: StoredConfig,
  declared: { routes: Route[]; upstreams: Upstream[] },
  prune: boolean,
): Plan {
  rejectSchemaViolations(declared);
  const routes = declared.routes.map(normalizeRoute);
  const upstreams = declared.upstreams.map(normalizeUpstream);

  // Values written by an older release, or straight into the store, may spell the stored form
  // differently. readStoredValue normalised them, so such a value is no change by itself and is
  // rewritten only when its resource changes.
  const storedRoutes = stored.routes;
  const storedUpstreams = stored.upstreams;
  const desiredRoutes = merge(prune ? [] : storedRoutes, routes);
  const desiredUpstreams = merge(prune ? [] : storedUpstreams, upstreams);
  // NOTE: messages quote hosts lower-cased and methods upper-cased, as normalised. loomctl quotes
  // them as the file spells them because it runs the same checks before it sends anything.
  const issues = markStoredOrigins(validateConfig(desiredRoutes, desiredUpstreams), {
    route: new Set(routes.map((route) => route.name)),
    upstream: new Set(upstreams.map((upstream) => upstream.name)),
  });
  // Duplicates inside the request are reported by validateConfig only when they survive the merge.
  issues.unshift(...duplicateIssues(routes, 'route'), ...duplicateIssues(upstreams, 'upstream'));
  if (issues.length > 0) throw new ConfigError(issues);

  const plan: Plan = { changes: [], values: new Map(), operations: [] };
  diffInto(plan, prefix, 'route', storedRoutes, desiredRoutes, encodeRoute);
  diffInto(plan, prefix, 'upstream', storedUpstreams, desiredUpstreams, encodeUpstream);
  // A declared resource of the same name already replaces an unreadable value (as a create).
  if (prune) pruneUnreadable(plan, stored.unreadable ?? []);
  return plan;
}

/** Adds the deletion of every unreadable key that the plan does not already write. */
function pruneUnreadable(plan: Plan, unreadable: UnreadableKey[]): void {
  const written = new Set(plan.operations.map((operation) => operation.key));
  for (const { kind, name, key } of unreadable) {
    if (written.has(key)) continue;
    plan.changes.push({ kind, name, action: 'delete' });
    plan.values.set(`${kind}/${name}`, { beforeJson: '', afterJson: '' });
    plan.operations.push({ type: 'delete', key });
  }
  plan.changes.sort(byKindAndName);
}

/**
 * Plans the deletion of one resource; an upstream still used by a route is not deleted. A
 * key of that kind and name whose value cannot be decoded is deleted too.
 */
export function planDelete(
  prefix: string,
  stored: StoredConfig,
  kind: ResourceKind,
  name: string,
): Plan {
  const list: { name: string }[] = kind === 'route' ? stored.routes : stored.upstreams;
  const unreadable = stored.unreadable?.find((item) => item.kind === kind && item.name === name);
  if (unreadable !== undefined) {
    // Routes that name such an upstream already point at none, so they do not stop this.
    return {
      changes: [{ kind, name, action: 'delete' }],
      values: new Map([[`${kind}/${name}`, { beforeJson: '', afterJson: '' }]]),
      operations: [{ type: 'delete', key: unreadable.key }],
    };
  }
  if (!list.some((resource) => resource.name === name)) {
    throw new LoomError('LOOM_NOT_FOUND', describeMissingResource(kind, name));
  }
  if (kind === 'upstream') {
    const users = stored.routes
      .filter((route) => route.upstream === name)
      .map((route) => route.name);
    if (users.length > 0) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `upstream "${name}" is used by route(s) ${users.map((user) => `"${user}"`).join(', ')}; delete or move them first`,
      );
    }
  }
  const resource = list.find((item) => item.name === name);
  const beforeJson =
    kind === 'route' ? encodeRoute(resource as Route) : encodeUpstream(resource as Upstream);
  return {
    changes: [{ kind, name, action: 'delete' }],
    values: new Map([[`${kind}/${name}`, { beforeJson, afterJson: '' }]]),
    operations: [{ type: 'delete', key: resourceKey(prefix, kind, name) }],
  };
}

/**
 * Marks each issue of a resource that only the store has (such as a route written straight
 * into etcd) as such, and adds how to fix it. Unmarked, a broken stored resource reads as an
 * error in the applied files, which do not contain it.
 */
function markStoredOrigins(
  issues: ConfigIssue[],
  declared: Record<ResourceKind, Set<string>>,
): ConfigIssue[] {
  return issues.map((issue) =>
    issue.kind === undefined || issue.name === undefined || declared[issue.kind].has(issue.name)
      ? issue
      : markStoredOrigin(issue, issue.kind, issue.name),
  );
}

function markStoredOrigin(issue: ConfigIssue, kind: ResourceKind, name: string): ConfigIssue {
  const resource = `${kind} ${JSON.stringify(name)}`;
  const remove = `run "loomctl delete ${kind} ${name}"`;
  const fix =
    kind === 'route' && issue.field === 'upstream' && typeof issue.value === 'string'
      ? `${remove}, add upstream ${JSON.stringify(issue.value)}, or include ${resource} ` +
        'with a declared upstream in the files'
      : `${remove}, or include a fixed ${resource} in the files`;
  return {
    ...issue,
    message: `this ${kind} is stored but not in the applied files: ${issue.message}. To fix it, ${fix}`,
  };
}

/**
 * Rejects declared routes and upstreams that break the schema of config files: names, number
 * ranges, allowed values and required lists. loomctl checks files against the same schema, but
 * any other gRPC client reaches the admin API without those checks.
 */
function rejectSchemaViolations(declared: { routes: Route[]; upstreams: Upstream[] }): void {
  // The file form leaves unset optional fields out, where the protocol form has undefined.
  const data = toJsonData({ upstreams: declared.upstreams, routes: declared.routes });
  const result = parseWithSchema(ConfigFileSchema, data);
  if (result.success) return;
  const problems = describeSchemaIssues(result.error.issues, data);
  throw new ConfigError(problems.map((problem) => describeSchemaProblem(data, problem)));
}

/**
 * Returns the value that `JSON.parse(JSON.stringify(value))` returns for the plain objects,
 * arrays, strings, numbers and booleans of a decoded request, without the text in between,
 * which for 100,000 routes is megabytes. As in JSON, undefined fields are left out,
 * undefined array elements become null, and so do numbers that are not finite.
 */
function toJsonData(value: unknown): unknown {
  if (typeof value === 'number') {
    // JSON writes -0 as 0 and NaN and the infinities as null.
    return Number.isFinite(value) ? value + 0 : null;
  }
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) {
    return value.map((item: unknown) => (item === undefined ? null : toJsonData(item)));
  }
  const copy: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    if (field !== undefined) copy[key] = toJsonData(field);
  }
  return copy;
}

function duplicateIssues(resources: { name: string }[], kind: ResourceKind): ConfigIssue[] {
  const seen = new Set<string>();
  const issues: ConfigIssue[] = [];
  for (const resource of resources) {
    if (seen.has(resource.name)) {
      issues.push({
        kind,
        name: resource.name,
        field: 'name',
        value: resource.name,
        message: `declared twice; every ${kind} needs a unique name`,
      });
    }
    seen.add(resource.name);
  }
  return issues;
}

function merge<T extends { name: string }>(stored: T[], declared: T[]): T[] {
  const byName = new Map(stored.map((resource) => [resource.name, resource]));
  for (const resource of declared) byName.set(resource.name, resource);
  return [...byName.values()];
}

/**
 * Orders changes by kind, then name, as the string `kind + name` would sort, because the kinds
 * (route, upstream) differ in their first letter. It concatenates no strings, which sorting
 * 100,000 changes would do millions of times.
 */
function byKindAndName(a: Plan['changes'][number], b: Plan['changes'][number]): number {
  if (a.kind !== b.kind) return a.kind < b.kind ? -1 : 1;
  return a.name < b.name ? -1 : 1;
}

function diffInto<T extends { name: string }>(
  plan: Plan,
  prefix: string,
  kind: ResourceKind,
  stored: T[],
  desired: T[],
  encode: (resource: T) => string,
): void {
  const before = new Map(stored.map((resource) => [resource.name, encode(resource)]));
  const after = new Map(desired.map((resource) => [resource.name, encode(resource)]));
  for (const [name, value] of after) {
    const old = before.get(name);
    if (old === value) continue;
    const action = old === undefined ? 'create' : 'update';
    plan.changes.push({ kind, name, action });
    plan.values.set(`${kind}/${name}`, { beforeJson: old ?? '', afterJson: value });
    plan.operations.push({ type: 'put', key: resourceKey(prefix, kind, name), value });
  }
  for (const [name, old] of before) {
    if (after.has(name)) continue;
    plan.changes.push({ kind, name, action: 'delete' });
    plan.values.set(`${kind}/${name}`, { beforeJson: old, afterJson: '' });
    plan.operations.push({ type: 'delete', key: resourceKey(prefix, kind, name) });
  }
  plan.changes.sort(byKindAndName);
}
