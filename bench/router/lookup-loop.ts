// Runs one Loom lookup over and over in one process, for counting instructions with
// valgrind, which a loaded machine does not move the way it moves timings. Run it twice,
// with LOOKUPS and with 0, and divide the difference of the two totals by LOOKUPS:
//
//   npx esbuild bench/router/lookup-loop.ts --bundle --platform=node --format=esm \
//     --outfile=/tmp/lookup-loop.mjs
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//     node --single-threaded /tmp/lookup-loop.mjs 10000 params 300000
//
// `--single-threaded` compiles optimized code on the main thread, so both runs optimize the
// same functions at the same points. Tables of 100,000 routes build for too long: the
// difference of two runs then drowns in the build's own variation.
//
// Usage: node --import tsx bench/router/lookup-loop.ts TABLE KIND [LOOKUPS (default 1000000)]
import { buildRouter } from '../../data-plane/router/router.js';
import { createTable, LOOKUP_KINDS, type LookupKind } from './tables.js';

/** Untimed lookups before the counted ones, so that the counted ones run optimized code. */
const WARMUP_LOOKUPS = 200_000;

const [tableName = '10000', kind = 'params', countText = '1000000'] = process.argv.slice(2);
if (!(LOOKUP_KINDS as readonly string[]).includes(kind)) {
  throw new Error(`unknown kind "${kind}"; use ${LOOKUP_KINDS.join(', ')}`);
}
const lookups = Number(countText);
if (!Number.isInteger(lookups) || lookups < 0) {
  throw new Error(`LOOKUPS must be a whole number, such as 300000 (got ${countText})`);
}

const table = createTable(tableName);
const { method, path } = table.lookups[kind as LookupKind];
const router = buildRouter(
  table.routes.map((route, index) => ({
    name: `r${index}`,
    hosts: [],
    paths: [route.path],
    methods: [route.method],
    value: index,
  })),
);

// The same Host header as the benchmark adapter passes.
const host = 'api.example.com';
let found = 0;
for (let i = 0; i < WARMUP_LOOKUPS + lookups; i++) {
  if (router.find(method, host, path).kind === 'found') found++;
}
// Printing the count keeps the loop from being optimized away.
process.stdout.write(`${found} of ${WARMUP_LOOKUPS + lookups} lookups found a route\n`);
