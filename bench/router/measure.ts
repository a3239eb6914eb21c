// Runs one measurement in this process and prints it as one line of JSON.
// run.ts starts a fresh process for each, because the order in which one
// process measures things moves the results by up to 3x (JIT and inline caches).
//
// Usage: node --expose-gc --import tsx bench/router/measure.ts ROUTER TABLE KIND
//   KIND is static, params or miss (ns per lookup) or build (build time and retained heap).
import { adapterNamed, type LookupFunction } from './adapters.js';
import { createTable, LOOKUP_KINDS, type LookupKind } from './tables.js';

/** Lookups per timed batch, and batches measured after warm-up. */
const BATCH = 50_000;
const BATCHES = 12;
const WARMUP_BATCHES = 4;
/** Routes built in all timed builds together, so small tables repeat more. */
const BUILD_WORK = 300_000;

const [routerName, tableName, kind] = process.argv.slice(2);

// Test-only switches, each naming one measurement as ROUTER/TABLE/KIND, so that a test can see
// how run.ts reports a measurement that fails or one that never finishes.
const cell = `${routerName}/${tableName}/${kind}`;
if (process.env.LOOM_FAULT_BENCH_FAIL === cell) {
  throw new Error(`${cell} failed because LOOM_FAULT_BENCH_FAIL names it`);
}
if (process.env.LOOM_FAULT_BENCH_HANG === cell) {
  await new Promise<never>(() => setInterval(() => undefined, 60_000));
}
const adapter = adapterNamed(routerName);
const table = createTable(tableName);
const gc = globalThis.gc;
if (gc === undefined) throw new Error('run with node --expose-gc');

if (kind === 'build') {
  print(measureBuild());
} else if ((LOOKUP_KINDS as readonly string[]).includes(kind)) {
  print({ nsPerLookup: measureLookup(kind as LookupKind) });
} else {
  throw new Error(`unknown kind "${kind}"; use build, ${LOOKUP_KINDS.join(', ')}`);
}

function print(result: Record<string, number>): void {
  process.stdout.write(JSON.stringify({ router: routerName, table: tableName, kind, ...result }));
  process.stdout.write('\n');
}

/**
 * Returns the CPU time this process has used, in nanoseconds. Other processes
 * share the 2 cores of the benchmark machine, and CPU time leaves out the time
 * this one waits for a core, which wall time would count.
 */
function cpuNanoseconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) * 1000;
}

/** Returns the median CPU nanoseconds per lookup over the timed batches. */
function measureLookup(lookupKind: LookupKind): number {
  const lookup = adapter.build(table.routes);
  const { method, path, hit } = table.lookups[lookupKind];
  if (lookup(method, path) !== hit) {
    throw new Error(`${routerName} ${hit ? 'missed' : 'matched'} ${method} ${path}`);
  }

  const samples: number[] = [];
  let matched = 0;
  for (let batch = 0; batch < WARMUP_BATCHES + BATCHES; batch++) {
    const started = cpuNanoseconds();
    for (let i = 0; i < BATCH; i++) if (lookup(method, path)) matched++;
    const elapsed = cpuNanoseconds() - started;
    if (batch >= WARMUP_BATCHES) samples.push(elapsed / BATCH);
  }
  // Using the count keeps the loop from being optimised away.
  if (matched % BATCH !== 0) throw new Error('lookups disagreed between batches');
  return round(median(samples));
}

/**
 * Returns the CPU time of the first build, the median of the builds after it,
 * and the heap one built table retains: heap used with the table alive minus
 * heap used after dropping it, each after full collections.
 */
function measureBuild(): Record<string, number> {
  const rounds = Math.min(50, Math.max(2, Math.round(BUILD_WORK / table.routes.length)));
  const times: number[] = [];
  let first = 0;
  for (let round = 0; round <= rounds; round++) {
    const started = cpuNanoseconds();
    adapter.build(table.routes);
    const elapsed = (cpuNanoseconds() - started) / 1e6;
    if (round === 0) first = elapsed;
    else times.push(elapsed);
  }

  let kept: LookupFunction | undefined = adapter.build(table.routes);
  const withTable = settledHeap();
  if (typeof kept !== 'function') throw new Error('build returned no lookup');
  kept = undefined;
  const withoutTable = settledHeap();

  return {
    firstBuildMs: round(first),
    buildMs: round(median(times)),
    retainedMB: round((withTable - withoutTable) / 1024 / 1024),
  };
}

function settledHeap(): number {
  for (let i = 0; i < 3; i++) gc?.();
  return process.memoryUsage().heapUsed;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
