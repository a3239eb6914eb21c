// Builds Loom's router over and over in one process and prints the mean CPU time per build,
// for profiling the build (`node --cpu-prof --cpu-prof-interval 50 ...`) or counting
// collections (`node --trace-gc ...`). Unlike measure.ts, it times only warm builds, after
// untimed ones, and builds from route objects made once, outside the timed loop.
//
// Usage: node --import tsx bench/router/build-loop.ts [TABLES (default github,1000)] [BUILDS (default 1000)]
import { buildRouter } from '../../data-plane/router/router.js';
import { createTable } from './tables.js';

/** Untimed builds before the timed ones, so that the timed builds run optimized code. */
const WARMUP_BUILDS = 50;

const tableNames = (process.argv[2] ?? 'github,1000').split(',');
const builds = Number(process.argv[3] ?? 1000);
if (!Number.isInteger(builds) || builds < 1) {
  throw new Error(`BUILDS must be a positive integer, such as 1000 (got ${process.argv[3]})`);
}

for (const name of tableNames) {
  const table = createTable(name);
  const routes = table.routes.map((route, index) => ({
    name: `r${index}`,
    hosts: [],
    paths: [route.path],
    methods: [route.method],
    value: index,
  }));
  for (let i = 0; i < WARMUP_BUILDS; i++) buildRouter(routes);

  const started = process.cpuUsage();
  for (let i = 0; i < builds; i++) buildRouter(routes);
  const { user, system } = process.cpuUsage(started);
  const msPerBuild = (user + system) / 1000 / builds;
  process.stdout.write(
    `${name}: ${msPerBuild.toFixed(3)} ms CPU per build over ${builds} builds\n`,
  );
}
