import FindMyWay, { type HTTPMethod } from 'find-my-way';
import { Memoirist } from 'memoirist';
import { addRoute, createRouter, findRoute } from 'rou3';

import { buildRouter } from '../../data-plane/router/router.js';
import type { TableRoute } from './github-api.js';

/** Looks up one request and returns whether a route matched. */
export type LookupFunction = (method: string, path: string) => boolean;

/** A router under test: builds a table and returns its lookup. */
export interface RouterAdapter {
  name: string;
  build(routes: readonly TableRoute[]): LookupFunction;
}

/** Host header passed to Loom; the tables have no host routes, so only its parsing costs. */
const HOST = 'api.example.com';

/** Rewrites a trailing `*name` catch-all into another router's syntax. */
function catchAll(path: string, syntax: (name: string) => string): string {
  const star = path.lastIndexOf('/*');
  return star === -1 ? path : path.slice(0, star + 1) + syntax(path.slice(star + 2));
}

const loom: RouterAdapter = {
  name: 'loom',
  build(routes) {
    const router = buildRouter(
      routes.map((route, index) => ({
        name: `r${index}`,
        hosts: [],
        paths: [route.path],
        methods: [route.method],
        value: index,
      })),
    );
    return (method, path) => router.find(method, HOST, path).kind === 'found';
  },
};

const findMyWay: RouterAdapter = {
  name: 'find-my-way',
  build(routes) {
    const router = FindMyWay();
    const handler = () => {};
    for (const route of routes)
      router.on(
        route.method as HTTPMethod,
        catchAll(route.path, () => '*'),
        handler,
      );
    return (method, path) => router.find(method as HTTPMethod, path) !== null;
  },
};

const rou3: RouterAdapter = {
  name: 'rou3',
  build(routes) {
    const router = createRouter<number>();
    routes.forEach((route, index) => {
      addRoute(
        router,
        route.method,
        catchAll(route.path, (name) => `**:${name}`),
        index,
      );
    });
    return (method, path) => findRoute(router, method, path) !== undefined;
  },
};

const memoirist: RouterAdapter = {
  name: 'memoirist',
  build(routes) {
    const router = new Memoirist<number>();
    routes.forEach((route, index) => {
      router.add(
        route.method,
        catchAll(route.path, () => '*'),
        index,
      );
    });
    return (method, path) => router.find(method, path) !== null;
  },
};

/** Every router the benchmark compares, Loom first. */
export const ADAPTERS: readonly RouterAdapter[] = [loom, findMyWay, rou3, memoirist];

/** Returns the adapter with that name. */
export function adapterNamed(name: string): RouterAdapter {
  const adapter = ADAPTERS.find((candidate) => candidate.name === name);
  if (adapter === undefined) {
    throw new Error(
      `unknown router "${name}"; use one of ${ADAPTERS.map((a) => a.name).join(', ')}`,
    );
  }
  return adapter;
}
