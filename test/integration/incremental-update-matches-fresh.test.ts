import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { buildRouter } from '../../data-plane/router/router.js';
import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { waitFor, waitForPort } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { httpRequest } from '../helpers/net.js';
import { fleetStatus } from '../helpers/fleet-status.js';

/**
 * A proxy that applied every version must respond as a proxy started on the last version
 * alone. The config has about 230 routes, so that most applies change less than 10 % of them
 * and the proxy updates its router instead of building a new one. Paths share wide nodes
 * (`/w/s0` to `/w/s399`) with params, mixed segments, catch-alls, hosts and methods.
 */

const ROUNDS = 4;
const HOSTS: string[][] = [[], [], [], ['a.example'], ['*.b.example'], ['a.example', 'c.example']];
const METHODS: string[][] = [[], ['GET'], ['POST'], ['GET', 'POST']];
/** Hosts of the requests: each path goes without a named host and with one of the others. */
const REQUEST_HOSTS = ['a.example', 'x.b.example', 'c.example'];
const REQUEST_METHODS = ['GET', 'POST'];

interface RouteShape {
  name: string;
  path: string;
  hosts: string[];
  methods: string[];
  upstream: string;
  requestValue: string;
  responseValue: string;
  addPrefix: string;
}

/** A small deterministic generator, so that every run applies the same versions. */
function generator(seed: number): () => number {
  let state = seed;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x100000000;
  };
}

const random = generator(7);
let routeCounter = 0;

function pick<T>(items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

function randomPath(): string {
  const i = Math.floor(random() * 400);
  const kind = random();
  if (kind < 0.35) return `/w/s${i}`;
  if (kind < 0.5) return `/w/${String.fromCharCode(97 + (i % 20))}${i}`;
  if (kind < 0.6) return `/w/s${i}/x/y`;
  if (kind < 0.65) return `/w/s${i}/:id`;
  if (kind < 0.7) return `/w/s${i}/:name.json`;
  if (kind < 0.73) return '/w/:id';
  if (kind < 0.75) return '/w/:name.json';
  if (kind < 0.78) return `/w/s${i}/**rest`;
  if (kind < 0.8) return '/w/*rest';
  if (kind < 0.85) return `/x/s${i}`;
  if (kind < 0.88) return '/';
  if (kind < 0.9) return `/w/s${i}/`;
  return `/w/s${i}/${pick(['a', 'b', ':p'])}`;
}

function randomRoute(): RouteShape {
  return {
    name: `r${routeCounter++}`,
    path: randomPath(),
    hosts: pick(HOSTS),
    methods: pick(METHODS),
    upstream: pick(['u0', 'u1']),
    requestValue: `q${Math.floor(random() * 3)}`,
    responseValue: `s${Math.floor(random() * 3)}`,
    addPrefix: random() < 0.2 ? '/add' : '',
  };
}

/** Drops routes, one at a time, until the router accepts the rest. */
function withoutConflicts(routes: RouteShape[]): RouteShape[] {
  let remaining = routes;
  for (;;) {
    try {
      buildRouter(
        remaining.map((route) => ({
          name: route.name,
          hosts: route.hosts,
          paths: [route.path],
          methods: route.methods,
          value: route.name,
        })),
      );
      return remaining;
    } catch (error) {
      const name = /route "([^"]+)"/.exec((error as Error).message)?.[1];
      assert.ok(name !== undefined, String(error));
      remaining = remaining.filter((route) => route.name !== name);
    }
  }
}

/** Changes a few routes: removals, additions, renames, moves between hosts and new actions. */
function changeRoutes(routes: RouteShape[], round: number): RouteShape[] {
  const next = routes.slice();
  const count = 1 + Math.floor((random() * routes.length * 0.1) / 3);
  for (let k = 0; k < count; k++) {
    const index = Math.floor(random() * next.length);
    const kind = random();
    if (kind < 0.3) next.splice(index, 1);
    else if (kind < 0.5) next.push(randomRoute());
    else if (kind < 0.6) next[index] = { ...next[index], name: `m${routeCounter++}` };
    else if (kind < 0.7) next[index] = { ...next[index], hosts: pick(HOSTS) };
    else if (kind < 0.8) next[index] = { ...next[index], methods: pick(METHODS) };
    else if (kind < 0.9) {
      next[index] = {
        ...next[index],
        requestValue: `q${round}`,
        responseValue: `s${round}`,
        upstream: pick(['u0', 'u1']),
      };
    } else next[index] = { ...randomRoute(), name: next[index].name };
  }
  return withoutConflicts(next);
}

function configYaml(routes: RouteShape[], echoPorts: number[]): string {
  const lines = ['apiVersion: loom/v1', 'upstreams:'];
  echoPorts.forEach((port, i) => {
    lines.push(`  - name: u${i}`, '    targets:', `      - url: http://127.0.0.1:${port}`);
  });
  lines.push('routes:');
  for (const route of routes) {
    lines.push(
      `  - name: ${route.name}`,
      `    paths: ['${route.path}']`,
      `    upstream: ${route.upstream}`,
      `    requestHeaders: { set: { x-req: ${route.requestValue} } }`,
      `    responseHeaders: { set: { x-res: ${route.responseValue} } }`,
    );
    if (route.methods.length > 0) lines.push(`    methods: [${route.methods.join(', ')}]`);
    if (route.hosts.length > 0) {
      lines.push(`    hosts: [${route.hosts.map((host) => `'${host}'`).join(', ')}]`);
    }
    if (route.addPrefix !== '') lines.push(`    addPrefix: ${route.addPrefix}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Returns request paths for every pattern seen so far: a match, its parent and near misses. */
function requestPaths(patterns: Set<string>): string[] {
  const paths = new Set(['/', '/w', '/w/', '/x', '/w/zzz']);
  for (const pattern of patterns) {
    const path = pattern
      .replace(/\*\*\w+$/, 'q/r')
      .replace(/\*\w+$/, 'q')
      .replace(/:name\.json/, 'n.json')
      .replace(/:\w+/g, 'v');
    paths.add(path);
    paths.add(path.replace(/\/[^/]*$/, '') || '/');
    paths.add(`${path}/`);
  }
  return [...paths];
}

/** Reduces a response to what the config decides: status, Allow, headers set, upstream, URL. */
async function observe(proxy: FleetProxy, method: string, host: string, path: string) {
  const response = await httpRequest(method, proxy.url(path), { host });
  const parts = [
    String(response.status),
    String(response.headers.allow ?? ''),
    String(response.headers['x-res'] ?? ''),
  ];
  if (response.status === 200) {
    const body = JSON.parse(response.body) as {
      upstream: string;
      url: string;
      headers: Record<string, string>;
    };
    parts.push(body.upstream, body.url, body.headers['x-req'] ?? '');
  }
  return parts.join(' | ');
}

describe('incremental update matches fresh proxy', { timeout: 300_000 }, () => {
  let echoes: Server[] = [];
  let fleet: Fleet;

  before(async () => {
    echoes = [await startEchoUpstream(0, 'u0'), await startEchoUpstream(0, 'u1')];
    fleet = await startFleet({ proxies: 1 });
  });
  after(async () => {
    await fleet?.stop();
    for (const echo of echoes) await new Promise((resolve) => echo.close(resolve));
  });

  test('every version responds as fresh', async () => {
    const echoPorts = echoes.map((echo) => (echo.address() as AddressInfo).port);
    const updated = fleet.proxies[0];
    const patterns = new Set<string>();
    let routes = withoutConflicts(Array.from({ length: 260 }, randomRoute));

    for (let round = 0; round <= ROUNDS; round++) {
      if (round > 0) routes = changeRoutes(routes, round);
      for (const route of routes) patterns.add(route.path);
      const file = join(fleet.dir, `round${round}.yaml`);
      writeFileSync(file, configYaml(routes, echoPorts));
      const applied = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--prune', '--wait']);
      assert.equal(applied.code, 0, applied.stdout + applied.stderr + fleet.logs());
      const version = (await fleetStatus(fleet.controlPlane)).version;

      const fresh = await startProxy(fleet.controlPlane, fleet.dir, `fresh-${round}`);
      try {
        await waitForPort('127.0.0.1', fresh.adminPort);
        await waitFor(`fresh-${round} to apply version ${version}`, 20_000, async () => {
          const record = (await fleetStatus(fleet.controlPlane)).proxies.find(
            (proxy) => proxy.id === fresh.id,
          );
          return record?.ackedVersion === version;
        });
        const paths = requestPaths(patterns);
        for (const [i, path] of paths.entries()) {
          for (const host of ['127.0.0.1', REQUEST_HOSTS[i % REQUEST_HOSTS.length]]) {
            for (const method of REQUEST_METHODS) {
              const expected = await observe(fresh, method, host, path);
              const actual = await observe(updated, method, host, path);
              assert.equal(actual, expected, `version ${version}: ${method} ${host} ${path}`);
            }
          }
        }
      } finally {
        await fresh.process.stop();
      }
    }
  });
});
