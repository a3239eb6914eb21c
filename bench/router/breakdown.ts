// Splits the CPU time of one Loom lookup into its stages, to show where a lookup spends
// its time before changing the router. Prints ns per call of each stage, one line each.
//
// Usage: node --import tsx bench/router/breakdown.ts TABLE KIND
import { normalizeRequestPath } from '../../data-plane/router/path.js';
import { extractParams } from '../../data-plane/router/route-entry.js';
import { RouteIndex } from '../../data-plane/router/route-index.js';
import { buildRouter } from '../../data-plane/router/router.js';
import { createTable, type LookupKind } from './tables.js';

const [tableName = '10000', kind = 'params'] = process.argv.slice(2);
const table = createTable(tableName);
const { method, path } = table.lookups[kind as LookupKind];
const routes = table.routes.map((route, index) => ({
  name: `r${index}`,
  hosts: [],
  paths: [route.path],
  methods: [route.method],
  value: index,
}));
const router = buildRouter(routes);
const index = new RouteIndex<number>();
for (const route of routes) index.add(route);
const steps = index.sealSteps();
while (steps.next().done !== true);
const tree = index.anyHost as NonNullable<typeof index.anyHost>;
const state = index.state;

const ROUNDS = 2_000_000;
let sink = 0;

function time(label: string, run: () => unknown): void {
  for (let i = 0; i < ROUNDS / 10; i++) if (run() !== undefined) sink++;
  const started = process.cpuUsage();
  for (let i = 0; i < ROUNDS; i++) if (run() !== undefined) sink++;
  const used = process.cpuUsage(started);
  const ns = ((used.user + used.system) * 1000) / ROUNDS;
  process.stdout.write(`${label.padEnd(24)} ${ns.toFixed(1)} ns\n`);
}

const statics = tree.staticSlots;
const entry = tree.search(method, path, state);
time('find', () => router.find(method, 'api.example.com', path));
time('static object miss', () => statics[path]);
time('normalizeRequestPath', () => normalizeRequestPath(path));
time('tree search', () => tree.search(method, path, state));
if (entry !== null) {
  time('search + params', () => {
    const found = tree.search(method, path, state);
    return found === null ? null : extractParams(found, path, state.bounds);
  });
  time('params', () => extractParams(entry, path, state.bounds));
}
time('find', () => router.find(method, 'api.example.com', path));
process.stdout.write(`${sink > 0 ? '' : 'none\n'}`);
