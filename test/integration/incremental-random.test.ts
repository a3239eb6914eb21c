import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { waitFor, waitForPort } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startFleet, startProxy, type Fleet, type FleetProxy } from '../helpers/fleet.js';
import { fleetStatus } from '../helpers/fleet-status.js';
import { httpRequest, type TextResponse } from '../helpers/net.js';

const ECHOES = 3;
const PATHS = 6;
const ROUTE_NAMES = 8;
const UPSTREAM_NAMES = 4;
const APPLIES = 30;

interface UpstreamShape {
  name: string;
  echo: number;
  weight: number;
  healthCheck: boolean;
}

interface RouteShape {
  name: string;
  path: number;
  upstream: string;
  methods: string[];
  otherHost: boolean;
  addPrefix: string;
  requestValue: string;
  responseValue: string;
  retries: number;
  timeoutMs: number;
}

interface ConfigShape {
  upstreams: UpstreamShape[];
  routes: RouteShape[];
}

/** A small deterministic generator, so that a failure names a seed that reproduces it. */
function generator(seed: number): (below: number) => number {
  let state = seed >>> 0 || 1;
  return (below) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % below;
  };
}

function shuffled<T>(items: T[], random: (below: number) => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = random(i + 1);
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

function randomShape(random: (below: number) => number): ConfigShape {
  const upstreamNames = shuffled(
    Array.from({ length: UPSTREAM_NAMES }, (_, i) => `u${i}`),
    random,
  ).slice(0, 2 + random(UPSTREAM_NAMES - 1));
  const upstreams = upstreamNames.map((name) => ({
    name,
    echo: random(ECHOES),
    weight: 1 + random(3),
    healthCheck: random(3) === 0,
  }));
  const routeNames = shuffled(
    Array.from({ length: ROUTE_NAMES }, (_, i) => `r${i}`),
    random,
  );
  const paths = shuffled(
    Array.from({ length: PATHS }, (_, i) => i),
    random,
  );
  const routes = Array.from({ length: 2 + random(PATHS - 1) }, (_, i) => ({
    name: routeNames[i],
    path: paths[i],
    upstream: upstreamNames[random(upstreamNames.length)],
    methods: random(3) === 0 ? ['GET'] : [],
    otherHost: random(6) === 0,
    addPrefix: random(3) === 0 ? `/add${random(2)}` : '',
    requestValue: `q${random(3)}`,
    responseValue: `s${random(3)}`,
    retries: random(3),
    timeoutMs: 5_000 + 1_000 * random(2),
  }));
  return { upstreams, routes };
}

/** Changes one thing of `shape`, the kinds of change that an incremental build must notice. */
function mutate(shape: ConfigShape, random: (below: number) => number): ConfigShape {
  const next: ConfigShape = {
    upstreams: shape.upstreams.map((upstream) => ({ ...upstream })),
    routes: shape.routes.map((route) => ({ ...route, methods: [...route.methods] })),
  };
  const route = next.routes[random(next.routes.length)];
  const upstream = next.upstreams[random(next.upstreams.length)];
  switch (random(10)) {
    case 0: {
      // Swap the upstreams of two routes.
      const other = next.routes[random(next.routes.length)];
      [route.upstream, other.upstream] = [other.upstream, route.upstream];
      break;
    }
    case 1: {
      // Rename a route and change nothing else.
      const used = new Set(next.routes.map((item) => item.name));
      const free = Array.from({ length: ROUTE_NAMES }, (_, i) => `r${i}`).filter(
        (name) => !used.has(name),
      );
      if (free.length > 0) route.name = free[random(free.length)];
      break;
    }
    case 2:
      next.routes = shuffled(next.routes, random);
      next.upstreams = shuffled(next.upstreams, random);
      break;
    case 3:
      route.requestValue = `q${random(5)}`;
      route.responseValue = `s${random(5)}`;
      break;
    case 4:
      upstream.weight = 1 + random(5);
      break;
    case 5:
      upstream.echo = random(ECHOES);
      break;
    case 6:
      route.methods = route.methods.length === 0 ? ['GET'] : [];
      route.addPrefix = route.addPrefix === '' ? '/add1' : '';
      break;
    case 7:
      route.otherHost = !route.otherHost;
      break;
    case 8:
      // Settings that no response shows, so the check is that the rest keeps serving unchanged.
      upstream.healthCheck = !upstream.healthCheck;
      route.retries = random(3);
      route.timeoutMs = 5_000 + 1_000 * random(2);
      break;
    default:
      return randomShape(random);
  }
  return next;
}

function configYaml(shape: ConfigShape, echoPorts: number[]): string {
  const lines = ['apiVersion: loom/v1', 'upstreams:'];
  for (const upstream of shape.upstreams) {
    lines.push(
      `  - name: ${upstream.name}`,
      '    targets:',
      `      - url: http://127.0.0.1:${echoPorts[upstream.echo]}`,
      `        weight: ${upstream.weight}`,
    );
    if (upstream.healthCheck) lines.push('    healthCheck: { path: /health, intervalMs: 1000 }');
  }
  lines.push('routes:');
  for (const route of shape.routes) {
    lines.push(
      `  - name: ${route.name}`,
      `    paths: [/p${route.path}/*rest]`,
      `    upstream: ${route.upstream}`,
      `    requestHeaders: { set: { x-req: ${route.requestValue} } }`,
      `    responseHeaders: { set: { x-res: ${route.responseValue} } }`,
      `    retries: ${route.retries}`,
      `    timeouts: { responseHeaderMs: ${route.timeoutMs} }`,
    );
    if (route.methods.length > 0) lines.push(`    methods: [${route.methods.join(', ')}]`);
    if (route.otherHost) lines.push('    hosts: [other.example]');
    if (route.addPrefix !== '') lines.push(`    addPrefix: ${route.addPrefix}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Reduces a proxy's response to the fields that the config decides. */
function observed(response: TextResponse): string {
  if (response.status !== 200) return `${response.status}`;
  const body = JSON.parse(response.body) as {
    upstream: string;
    url: string;
    method: string;
    headers: Record<string, string>;
  };
  return [
    response.status,
    body.upstream,
    body.method,
    body.url,
    body.headers['x-req'],
    response.headers['x-res'],
  ].join(' ');
}

/** Returns the reduced response that the config prescribes for `method /pN/item`. */
function expected(shape: ConfigShape, path: number, method: string): string {
  const route = shape.routes.find((item) => item.path === path);
  if (route === undefined || route.otherHost) return '404';
  if (route.methods.length > 0 && !route.methods.includes(method)) return '405';
  const upstream = shape.upstreams.find((item) => item.name === route.upstream)!;
  const url = `${route.addPrefix}/p${path}/item`;
  return [200, `e${upstream.echo}`, method, url, route.requestValue, route.responseValue].join(' ');
}

async function answers(proxy: FleetProxy): Promise<string[]> {
  const result: string[] = [];
  for (let path = 0; path < PATHS; path++) {
    for (const method of ['GET', 'POST']) {
      const response = await httpRequest(method, proxy.url(`/p${path}/item`));
      result.push(`${method} /p${path}: ${observed(response)}`);
    }
  }
  return result;
}

function expectedAnswers(shape: ConfigShape): string[] {
  const result: string[] = [];
  for (let path = 0; path < PATHS; path++) {
    for (const method of ['GET', 'POST']) {
      result.push(`${method} /p${path}: ${expected(shape, path, method)}`);
    }
  }
  return result;
}

async function metricRoutes(proxy: FleetProxy): Promise<string[]> {
  const metrics = await httpRequest('GET', `http://127.0.0.1:${proxy.adminPort}/metrics`);
  const names = new Set<string>();
  for (const match of metrics.body.matchAll(/^loom_proxy_requests_total\{[^}]*route="(r\d+)"/gm)) {
    names.add(match[1]);
  }
  return [...names].sort();
}

/** Returns the upstreams that `loom_proxy_target_healthy` has a sample of. */
async function healthUpstreams(proxy: FleetProxy): Promise<string[]> {
  const metrics = await httpRequest('GET', `http://127.0.0.1:${proxy.adminPort}/metrics`);
  const names = new Set<string>();
  for (const match of metrics.body.matchAll(/^loom_proxy_target_healthy\{upstream="([^"]*)"/gm)) {
    names.add(match[1]);
  }
  return [...names].sort();
}

describe('incremental builds under random applies', { timeout: 180_000 }, () => {
  let fleet: Fleet;
  const servers: Server[] = [];
  const stops: (() => Promise<void>)[] = [];
  const echoPorts: number[] = [];

  before(async () => {
    for (let i = 0; i < ECHOES; i++) {
      const server = await startEchoUpstream(0, `e${i}`);
      servers.push(server);
      echoPorts.push((server.address() as AddressInfo).port);
    }
    fleet = await startFleet({ proxies: 1 });
  });

  after(async () => {
    for (const stop of stops) await stop();
    await fleet?.stop();
    for (const server of servers) server.close();
  });

  test('every apply serves its config', async () => {
    // A fixed seed keeps CI repeatable; LOOM_TEST_SEED explores others.
    const seed = Number(process.env.LOOM_TEST_SEED ?? 11);
    const random = generator(seed);
    const proxy = fleet.proxies[0];
    // This proxy nacks every version that contains the route r7 and keeps serving the last one.
    const picky = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-picky', {
      rejectRoute: 'r7',
    });
    stops.push(async () => {
      await picky.process.stop();
    });
    await waitForPort('127.0.0.1', picky.adminPort);
    const file = join(fleet.dir, 'loom.yaml');
    const deadline = Date.now() + 120_000;
    let shape = randomShape(random);
    let accepted: ConfigShape | undefined;
    const history: string[] = [];

    const check = async (target: FleetProxy, served: ConfigShape, context: string) => {
      assert.deepEqual(await answers(target), expectedAnswers(served), context);
      const configured = new Set(served.routes.map((route) => route.name));
      for (const name of await metricRoutes(target)) {
        assert.ok(configured.has(name), `${context}: metrics keep route ${name}`);
      }
      const upstreams = served.upstreams.map((upstream) => upstream.name).sort();
      assert.deepEqual(await healthUpstreams(target), upstreams, `${context}: target health`);
    };

    const applyShape = async (apply: number) => {
      writeFileSync(file, configYaml(shape, echoPorts));
      history.push(configYaml(shape, echoPorts));
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--prune']);
      assert.equal(result.code, 0, result.stdout + result.stderr);
      const version = Number(/version (\d+)/.exec(result.stdout)?.[1] ?? 0);
      if (version === 0) return;

      const context = `seed ${seed}, apply ${apply}, config:\n${history.at(-1)}\nprevious:\n${history.at(-2)}`;
      const rejected = shape.routes.some((route) => route.name === 'r7');
      for (const target of [proxy, picky]) {
        if (target === picky && rejected) {
          await waitFor(`${target.id} to nack version ${version}`, 15_000, async () => {
            const records = (await fleetStatus(fleet.controlPlane)).proxies;
            return records.find((record) => record.id === target.id)?.nackedVersion === version;
          });
        } else {
          await waitFor(`${target.id} to serve version ${version}`, 15_000, async () => {
            const metrics = await httpRequest(
              'GET',
              `http://127.0.0.1:${target.adminPort}/metrics`,
            );
            return new RegExp(`^loom_proxy_snapshot_version ${version}$`, 'm').test(metrics.body);
          });
        }
      }
      if (!rejected) accepted = shape;
      await check(proxy, shape, `${context}\n${proxy.id}`);
      if (accepted !== undefined) await check(picky, accepted, `${context}\n${picky.id}`);
    };

    let apply = 0;
    for (; apply < APPLIES && Date.now() < deadline; apply++) {
      if (apply > 0) shape = mutate(shape, random);
      try {
        await applyShape(apply);
      } catch (error) {
        const log = readFileSync(join(fleet.dir, `${picky.id}.log`), 'utf8');
        const tail = log.split('\n').slice(-30).join('\n');
        throw new Error(`${String(error)}\n--- ${picky.id}\n${tail}\n${fleet.logs()}`);
      }
    }
    const acceptable = shape.routes.filter((route) => route.name !== 'r7');
    if (acceptable.length < shape.routes.length && acceptable.length > 0) {
      shape = { ...shape, routes: acceptable };
      await applyShape(apply);
    }

    // A proxy that never received the earlier versions returns the same responses.
    const fresh = await startProxy(fleet.controlPlane, fleet.dir, 'proxy-fresh');
    try {
      await waitForPort('127.0.0.1', fresh.adminPort);
      await waitFor('fresh proxy to become ready', 15_000, async () => {
        const ready = await httpRequest('GET', `http://127.0.0.1:${fresh.adminPort}/readyz`);
        return ready.status === 200;
      });
      assert.deepEqual(await answers(proxy), await answers(fresh), `seed ${seed}`);
      if (accepted === shape) {
        assert.deepEqual(await answers(picky), await answers(fresh), `seed ${seed}`);
      }
    } finally {
      await fresh.process.stop();
    }
  });
});
