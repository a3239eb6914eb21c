// Measures the CPU time one proxy spends per snapshot, in one process: decoding the
// StreamResponse bytes that the control plane sends, with the proxy's decoder, and
// `DataPlane.applySnapshot`. The snapshots are the propagation benchmark's: a base of N routes,
// then one-route changes. CPU time (`process.cpuUsage`) leaves out the time the process waits
// for a core on a shared machine.
// Usage: node [--expose-gc] --import tsx bench/propagation/proxy-cpu.ts [--routes 1000]
//   [--changes 20] [--gap-ms 0] [--gcs 0] [--warmup] [--json] [--windows FILE]
//   [--snapshot-cache FILE]
// --gap-ms idles between snapshots, as a proxy does between applies; --gcs runs that many full
// collections in each gap (needs --expose-gc), which ages unused bytecode as traffic would;
// --snapshot-cache saves each applied snapshot to FILE, as `loom data-plane --snapshot-cache`
// does. --warmup runs `warmSnapshotPath` first. --windows writes the start and end of each change, in
// microseconds of the monotonic clock that V8 CPU profiles use, for `profile-breakdown.ts`.
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';

import { pino } from 'pino';

import { buildSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import { DataPlane } from '../../data-plane/data-plane.js';
import { SnapshotDecoder } from '../../data-plane/snapshot-client/snapshot-decoder.js';
import { warmSnapshotPath } from './warm-snapshot-path.js';
import { benchUpstream, makeRoutes } from './bench-routes.js';
import { checkOptions, numberOption, stringOption } from './options.js';
import { mainThreadMs, ownCpuMs } from './process-stats.js';

const argv = process.argv.slice(2);
checkOptions(
  argv,
  'usage: node [--expose-gc] --import tsx bench/propagation/proxy-cpu.ts [--routes 1000]\n' +
    '  [--changes 20] [--gap-ms 0] [--gcs 0] [--warmup] [--json] [--windows FILE]\n' +
    '  [--snapshot-cache FILE]\n',
  ['--warmup', '--json'],
  ['--routes', '--changes', '--gap-ms', '--gcs', '--windows', '--snapshot-cache'],
);
const ROUTES = numberOption(argv, '--routes', 1_000);
const CHANGES = numberOption(argv, '--changes', 20);
const GAP_MS = numberOption(argv, '--gap-ms', 0);
const GCS = numberOption(argv, '--gcs', 0);
const WARMUP = argv.includes('--warmup');
const WINDOWS_FILE = stringOption(argv, '--windows');
const SNAPSHOT_CACHE = stringOption(argv, '--snapshot-cache');

/** Microseconds of the monotonic clock, the clock of V8 CPU profile timestamps. */
function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const encoded: Buffer[] = [];
for (let change = 0; change <= CHANGES; change++) {
  const routes = makeRoutes(ROUTES, change === 0 ? -1 : change % ROUTES, change);
  encoded.push(buildSnapshot('bench', change + 1, routes, [benchUpstream]).encoded);
}

const dataPlane = new DataPlane({
  controlPlanes: ['127.0.0.1:1'],
  listen: '127.0.0.1:0',
  adminListen: '127.0.0.1:0',
  id: 'proxy-cpu',
  logger: pino({ level: 'silent' }),
  snapshotCache: SNAPSHOT_CACHE,
});

const warmupStart = ownCpuMs();
if (WARMUP) await warmSnapshotPath(pino({ level: 'silent' }));
const warmupMs = ownCpuMs() - warmupStart;

// The decoder of `loom data-plane`'s snapshot client.
const decoder = new SnapshotDecoder();
const decodeMs: number[] = [];
const applyMs: number[] = [];
const windowsUs: [number, number][] = [];
const mainMs: number[] = [];
for (const bytes of encoded) {
  if (GAP_MS > 0) await new Promise((resolve) => setTimeout(resolve, GAP_MS));
  const collect = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < GCS && collect !== undefined; i++) collect();
  const startUs = monotonicUs();
  const mainStart = mainThreadMs();
  const start = ownCpuMs();
  const snapshot = decoder.decode(bytes).snapshot!;
  const decoded = ownCpuMs();
  await dataPlane.applySnapshot(snapshot);
  decodeMs.push(decoded - start);
  applyMs.push(ownCpuMs() - decoded);
  const mainEnd = mainThreadMs();
  if (mainStart !== undefined && mainEnd !== undefined) mainMs.push(mainEnd - mainStart);
  windowsUs.push([startUs, monotonicUs()]);
}
// The first window is the base snapshot, not a change.
if (WINDOWS_FILE !== undefined) writeFileSync(WINDOWS_FILE, JSON.stringify(windowsUs.slice(1)));

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
  snapshotCache: SNAPSHOT_CACHE !== undefined,
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
  // CPU time of the main thread per change, and of every other thread over all changes.
  changeMainThreadMedianMs:
    mainMs.length === 0 ? undefined : Number(median(mainMs.slice(1)).toFixed(1)),
  changeOtherThreadsTotalMs:
    mainMs.length === 0
      ? undefined
      : Number(
          (
            decodeMs.slice(1).reduce((a, b) => a + b, 0) +
            applyMs.slice(1).reduce((a, b) => a + b, 0) -
            mainMs.slice(1).reduce((a, b) => a + b, 0)
          ).toFixed(1),
        ),
  perChangeMs: decodeMs.slice(1).map((ms, index) => Number((ms + applyMs[index + 1]).toFixed(1))),
};
process.stdout.write(
  argv.includes('--json') ? `${JSON.stringify(result)}\n` : `${JSON.stringify(result, null, 2)}\n`,
);
await dataPlane.stop();
