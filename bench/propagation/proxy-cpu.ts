// Measures the CPU time one proxy spends per snapshot, in one process: decoding the
// StreamResponse bytes that the control plane sends, with the proxy's decoder, and
// `DataPlane.applySnapshot`. The snapshots are the propagation benchmark's: a base of N routes,
// then one-route changes. CPU time (`process.cpuUsage`) leaves out the time the process waits
// for a core on a shared machine.
// Usage: node [--expose-gc] --import tsx bench/propagation/proxy-cpu.ts [--routes 1000]
//   [--changes 20] [--gap-ms 0] [--gcs 0] [--warmup] [--json]
// --gap-ms idles between snapshots, as a proxy does between applies; --gcs runs that many full
// collections in each gap (needs --expose-gc), which ages unused bytecode as traffic would;
// --warmup runs `warmSnapshotPath` first.
import { cpus, loadavg } from 'node:os';

import { pino } from 'pino';

import { buildSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import { DataPlane } from '../../data-plane/data-plane.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { SnapshotDecoder } from '../../data-plane/snapshot-client/snapshot-decoder.js';
import { warmSnapshotPath } from './warm-snapshot-path.js';

const argv = process.argv.slice(2);
const ROUTES = numberOption('--routes', 1_000);
const CHANGES = numberOption('--changes', 20);
const GAP_MS = numberOption('--gap-ms', 0);
const GCS = numberOption('--gcs', 0);
const WARMUP = argv.includes('--warmup');

function numberOption(name: string, fallback: number): number {
  const index = argv.indexOf(name);
  if (index === -1) return fallback;
  const value = Number(argv[index + 1]);
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`invalid ${name} ${argv[index + 1]}: expected a whole number, such as 1000`);
  }
  return value;
}

const upstream: Upstream = { name: 'bench', targets: [{ url: 'http://127.0.0.1:9', weight: 1 }] };

/** Makes the routes of `run.ts`; route `changed` gets a path that names the generation. */
function makeRoutes(count: number, changed = -1, generation = 0): Route[] {
  return Array.from({ length: count }, (_, index) => ({
    name: `route-${index}`,
    hosts: [],
    paths: [index === changed ? `/r${index}/v${generation}/:id` : `/r${index}/:id`],
    methods: [],
    upstream: 'bench',
  }));
}

function cpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e3;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const encoded: Buffer[] = [];
for (let change = 0; change <= CHANGES; change++) {
  const routes = makeRoutes(ROUTES, change === 0 ? -1 : change % ROUTES, change);
  encoded.push(buildSnapshot('bench', change + 1, routes, [upstream]).encoded);
}

const dataPlane = new DataPlane({
  controlPlanes: ['127.0.0.1:1'],
  listen: '127.0.0.1:0',
  adminListen: '127.0.0.1:0',
  id: 'proxy-cpu',
  logger: pino({ level: 'silent' }),
});

const warmupStart = cpuMs();
if (WARMUP) await warmSnapshotPath(pino({ level: 'silent' }));
const warmupMs = cpuMs() - warmupStart;

// The decoder of `loom data-plane`'s snapshot client.
const decoder = new SnapshotDecoder();
const decodeMs: number[] = [];
const applyMs: number[] = [];
for (const bytes of encoded) {
  if (GAP_MS > 0) await new Promise((resolve) => setTimeout(resolve, GAP_MS));
  const collect = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < GCS && collect !== undefined; i++) collect();
  const start = cpuMs();
  const snapshot = decoder.decode(bytes).snapshot!;
  const decoded = cpuMs();
  await dataPlane.applySnapshot(snapshot);
  decodeMs.push(decoded - start);
  applyMs.push(cpuMs() - decoded);
}

const result = {
  machine: {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    loadAverage: Number(loadavg()[0].toFixed(1)),
    execArgv: process.execArgv.filter((arg) => arg !== '--import' && arg !== 'tsx'),
  },
  routes: ROUTES,
  changes: CHANGES,
  gapMs: GAP_MS,
  gcs: GCS,
  warmupMs: Number(warmupMs.toFixed(1)),
  firstDecodeMs: Number(decodeMs[0].toFixed(1)),
  firstApplyMs: Number(applyMs[0].toFixed(1)),
  changeDecodeMedianMs: Number(median(decodeMs.slice(1)).toFixed(1)),
  changeApplyMedianMs: Number(median(applyMs.slice(1)).toFixed(1)),
  changeTotalMs: Number(
    (
      decodeMs.slice(1).reduce((a, b) => a + b, 0) + applyMs.slice(1).reduce((a, b) => a + b, 0)
    ).toFixed(1),
  ),
  perChangeMs: decodeMs.slice(1).map((ms, index) => Number((ms + applyMs[index + 1]).toFixed(1))),
};
process.stdout.write(
  argv.includes('--json') ? `${JSON.stringify(result)}\n` : `${JSON.stringify(result, null, 2)}\n`,
);
await dataPlane.stop();
