// Times one-route router updates (`updateRouter`) on large tables, apart from the rest of the
// proxy. Each table is built once, then changed one route at a time, each update starting from
// the router the previous one returned, as a proxy applies a series of snapshots.
//
// Shapes:
//   propagation  `/r0/:id` to `/rN-1/:id`, every route under one wide root, as in
//                bench/propagation. A change moves `/rK/:id` to `/rK/vG/:id`.
//   synthetic    the table of bench/router/tables.ts (`/api/svcK/...`, N / 10 services under
//                `/api`). A change moves `/api/svcK/items/:id` to `/api/svcK/vG/items/:id`.
//   added        the propagation table, and each change adds a new route `/nG/:id`, so the
//                wide root gains an edge.
//
// Usage: npx tsx bench/router/update-cost.ts [--routes 1000,10000,100000] [--changes 200]
//   [--shapes propagation,synthetic,added] [--json]
// Run it under the benchmark lock on a shared machine:
//   flock /tmp/loom-bench.lock npx tsx bench/router/update-cost.ts
import { readFileSync } from 'node:fs';

import { buildRouter, updateRouter } from '../../data-plane/router/router.js';
import type { Router, RouterRoute } from '../../data-plane/router/types.js';
import { createTable } from './tables.js';

const SHAPES = ['propagation', 'synthetic', 'added'] as const;
type Shape = (typeof SHAPES)[number];

/** Updates run before the timed ones, so the timed ones run compiled code. */
const WARMUP_CHANGES = 50;

interface Options {
  routes: number[];
  changes: number;
  shapes: Shape[];
  json: boolean;
}

/** Update cost on one table, in milliseconds. */
interface Result {
  shape: Shape;
  routes: number;
  changes: number;
  medianMs: number;
  p99Ms: number;
  maxMs: number;
  /** CPU time of the main thread per update, from /proc (includes GC work on that thread). */
  mainThreadCpuMs: number;
  buildMs: number;
}

const USAGE = `Usage: npx tsx bench/router/update-cost.ts [--routes A,B] [--changes N] [--shapes A,B] [--json]

Times one-route updateRouter calls on tables of several sizes.

  --routes A,B   table sizes in routes (default 1000,10000,100000)
  --changes N    timed one-route updates per table (default 200)
  --shapes A,B   table and change shapes, from ${SHAPES.join(', ')} (default all)
  --json         print one JSON object instead of a Markdown table
  --help         print this message
`;

function parseOptions(argv: string[]): Options {
  const options: Options = {
    routes: [1000, 10_000, 100_000],
    changes: 200,
    shapes: [...SHAPES],
    json: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else if (arg === '--json') options.json = true;
    else if (arg === '--routes') options.routes = argv[++i].split(',').map(Number);
    else if (arg === '--changes') options.changes = Number(argv[++i]);
    else if (arg === '--shapes') options.shapes = argv[++i].split(',') as Shape[];
    else
      throw new Error(
        `unknown option "${arg}"; use --routes, --changes, --shapes, --json or --help`,
      );
  }
  for (const routes of options.routes) {
    if (!Number.isInteger(routes) || routes < 10) {
      throw new Error(`--routes must list integers of at least 10 (got ${routes})`);
    }
  }
  if (!Number.isInteger(options.changes) || options.changes < 1) {
    throw new Error(`--changes must be a positive integer (got ${options.changes})`);
  }
  for (const shape of options.shapes) {
    if (!SHAPES.includes(shape)) {
      throw new Error(`unknown shape "${shape}"; use ${SHAPES.join(', ')}`);
    }
  }
  return options;
}

type Route = RouterRoute<string>;

function route(name: string, path: string, methods: string[] = []): Route {
  return { name, value: name, hosts: [], paths: [path], methods };
}

/** A table and a source of one-route changes to it: the route removed and the route added. */
interface Workload {
  routes: Route[];
  change(step: number): { removed: Route[]; added: Route[]; probe: string };
}

function workloadOf(shape: Shape, size: number): Workload {
  if (shape === 'synthetic') return syntheticWorkload(size);
  const routes = Array.from({ length: size }, (_, k) => route(`route-${k}`, `/r${k}/:id`));
  if (shape === 'added') {
    return {
      routes,
      change: (step) => ({
        removed: [],
        added: [route(`new-${step}`, `/n${step}/:id`)],
        probe: `/n${step}/1`,
      }),
    };
  }
  return {
    routes,
    change(step) {
      // A stride that is prime to the sizes used spreads the changes over the table.
      const k = (step * 7919) % size;
      const next = route(routes[k].name, `/r${k}/v${step}/:id`);
      const removed = [routes[k]];
      routes[k] = next;
      return { removed, added: [next], probe: `/r${k}/v${step}/1` };
    },
  };
}

function syntheticWorkload(size: number): Workload {
  const routes = createTable(String(size)).routes.map((item, i) =>
    route(`route-${i}`, item.path, [item.method]),
  );
  const services = Math.floor(size / 10);
  return {
    routes,
    change(step) {
      const service = (step * 7919) % services;
      // The second template of each service is `/items/:id`.
      const k = service * 10 + 1;
      const next = route(routes[k].name, `/api/svc${service}/v${step}/items/:id`, ['GET']);
      const removed = [routes[k]];
      routes[k] = next;
      return { removed, added: [next], probe: `/api/svc${service}/v${step}/items/1` };
    },
  };
}

/** Returns the CPU time of the main thread in milliseconds. On Linux its thread id is the pid. */
function mainThreadCpuMs(): number {
  const fields = readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ');
  return Number(fields[0]) / 1e6;
}

function percentile(sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)];
}

function measure(shape: Shape, size: number, changes: number): Result {
  const workload = workloadOf(shape, size);
  const buildStarted = performance.now();
  let router: Router<string> = buildRouter(workload.routes);
  const buildMs = performance.now() - buildStarted;

  const apply = (step: number): number => {
    const { removed, added, probe } = workload.change(step);
    const started = performance.now();
    const updated = updateRouter(router, removed, added);
    const elapsed = performance.now() - started;
    if (updated === null) throw new Error(`update ${step} of ${shape} ${size} returned null`);
    const match = updated.find('GET', undefined, probe);
    if (match.kind !== 'found') throw new Error(`update ${step}: ${probe} is ${match.kind}`);
    router = updated;
    return elapsed;
  };

  for (let step = 0; step < WARMUP_CHANGES; step++) apply(step);
  const samples: number[] = [];
  const cpuStarted = mainThreadCpuMs();
  for (let step = WARMUP_CHANGES; step < WARMUP_CHANGES + changes; step++) {
    samples.push(apply(step));
  }
  const cpuMs = mainThreadCpuMs() - cpuStarted;
  samples.sort((a, b) => a - b);
  return {
    shape,
    routes: size,
    changes,
    medianMs: round(percentile(samples, 0.5)),
    p99Ms: round(percentile(samples, 0.99)),
    maxMs: round(samples[samples.length - 1]),
    mainThreadCpuMs: round(cpuMs / changes),
    buildMs: round(buildMs),
  };
}

function round(ms: number): number {
  return Number(ms.toFixed(3));
}

const options = parseOptions(process.argv.slice(2));
const results: Result[] = [];
for (const shape of options.shapes) {
  for (const size of options.routes) results.push(measure(shape, size, options.changes));
}

if (options.json) {
  process.stdout.write(JSON.stringify({ node: process.version, results }, null, 2) + '\n');
} else {
  process.stdout.write(
    '| shape | routes | median (ms) | p99 (ms) | max (ms) | main-thread CPU per update (ms) | build (ms) |\n',
  );
  process.stdout.write('| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n');
  for (const r of results) {
    process.stdout.write(
      `| ${r.shape} | ${r.routes} | ${r.medianMs} | ${r.p99Ms} | ${r.maxMs} | ${r.mainThreadCpuMs} | ${r.buildMs} |\n`,
    );
  }
}
