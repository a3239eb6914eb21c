import { githubLikeRoutes, type TableRoute } from './github-api.js';

/** The lookups measured on every table. */
export const LOOKUP_KINDS = ['static', 'params', 'miss'] as const;
export type LookupKind = (typeof LOOKUP_KINDS)[number];

/** One request of a lookup kind and whether a route must match it. */
export interface Lookup {
  method: string;
  path: string;
  hit: boolean;
}

/** A route table and the requests measured against it. */
export interface BenchTable {
  name: string;
  routes: TableRoute[];
  lookups: Record<LookupKind, Lookup>;
}

/** Table names accepted by `createTable`, in report order. */
export const TABLE_NAMES = ['github', '10', '1000', '10000', '100000'] as const;

/**
 * Path templates of one synthetic service. A table of N routes has N / 10
 * services, so shared prefixes, params and catch-alls grow with the table.
 */
const SERVICE_TEMPLATES = [
  '/items',
  '/items/:id',
  '/items/:id/comments',
  '/items/:id/comments/:commentId',
  '/users/:user',
  '/users/:user/settings',
  '/users/:user/repos/:repo',
  '/files/*path',
  '/search',
  '/health',
];

/** Returns the named table: `github`, or a synthetic table of that many routes. */
export function createTable(name: string): BenchTable {
  if (name === 'github') return githubTable();
  const size = Number(name);
  if (!Number.isInteger(size) || size < SERVICE_TEMPLATES.length) {
    throw new Error(`unknown table "${name}"; use one of ${TABLE_NAMES.join(', ')}`);
  }
  return syntheticTable(size);
}

function githubTable(): BenchTable {
  return {
    name: 'github',
    routes: githubLikeRoutes(),
    lookups: {
      static: { method: 'GET', path: '/user/memberships/orgs', hit: true },
      params: { method: 'GET', path: '/repos/loom/gateway/issues/42/comments', hit: true },
      miss: { method: 'GET', path: '/repos/loom/gateway/issues/42/commentary', hit: false },
    },
  };
}

function syntheticTable(size: number): BenchTable {
  const services = Math.ceil(size / SERVICE_TEMPLATES.length);
  const routes: TableRoute[] = [];
  for (let i = 0; i < size; i++) {
    const service = Math.floor(i / SERVICE_TEMPLATES.length);
    const template = SERVICE_TEMPLATES[i % SERVICE_TEMPLATES.length];
    routes.push({ method: 'GET', path: `/api/svc${service}${template}` });
  }

  // The middle service, so neither end of a sorted structure is favoured.
  const prefix = `/api/svc${Math.floor(services / 2)}`;
  return {
    name: String(size),
    routes,
    lookups: {
      static: { method: 'GET', path: `${prefix}/health`, hit: true },
      params: { method: 'GET', path: `${prefix}/users/alice/repos/loom`, hit: true },
      miss: { method: 'GET', path: `${prefix}/users/alice/repos/loom/x`, hit: false },
    },
  };
}
