// Measures what a swap of the 100,000-route table costs the proxy process, without load: CPU
// time per swap, and the garbage-collection pauses during it (count, sum and longest, by kind).
// Pauses block the event loop, so they bound the request latency that a swap adds. CPU time and
// pause lengths move less with other work on the machine than request latency does.
// Usage: node [--max-semi-space-size=MiB] --import tsx bench/router/swap-gc.ts [--swaps 8]
import { cpus, loadavg } from 'node:os';
import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';

import { pino } from 'pino';

import { DataPlane } from '../../data-plane/data-plane.js';
import { swapSnapshots } from './swap-snapshots.js';

const argv = process.argv.slice(2);
const swapsIndex = argv.indexOf('--swaps');
const SWAPS = swapsIndex === -1 ? 8 : Number(argv[swapsIndex + 1]);

// The versions of `swap-server.ts` with one route changed each.
const nextSnapshot = swapSnapshots('http://127.0.0.1:9', 'one');

const KINDS: Record<number, string> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};
let pauses: { kind: string; ms: number }[] = [];
const observer = new PerformanceObserver((list) => {
  for (const entry of list.getEntries() as (PerformanceEntry & { detail?: { kind: number } })[]) {
    pauses.push({ kind: KINDS[entry.detail?.kind ?? 0] ?? 'other', ms: entry.duration });
  }
});
observer.observe({ entryTypes: ['gc'] });

const dataPlane = new DataPlane({
  controlPlanes: ['127.0.0.1:1'],
  listen: '127.0.0.1:0',
  adminListen: '127.0.0.1:0',
  id: 'swap-gc',
  logger: pino({ level: 'silent' }),
});
await dataPlane.applySnapshot(await nextSnapshot());
// Entries arrive after the collection, so let the first build's entries land before resetting.
await new Promise((resolve) => setTimeout(resolve, 50));

const cpuMs: number[] = [];
pauses = [];
for (let swap = 0; swap < SWAPS; swap++) {
  const before = process.cpuUsage();
  await dataPlane.applySnapshot(await nextSnapshot());
  const used = process.cpuUsage(before);
  cpuMs.push((used.user + used.system) / 1e3);
}
await new Promise((resolve) => setTimeout(resolve, 50));
observer.disconnect();

const byKind: Record<string, { count: number; perSwapMs: number; maxMs: number }> = {};
for (const pause of pauses) {
  const entry = (byKind[pause.kind] ??= { count: 0, perSwapMs: 0, maxMs: 0 });
  entry.count += 1;
  entry.perSwapMs += pause.ms / SWAPS;
  entry.maxMs = Math.max(entry.maxMs, pause.ms);
}
for (const entry of Object.values(byKind)) {
  entry.perSwapMs = Number(entry.perSwapMs.toFixed(1));
  entry.maxMs = Number(entry.maxMs.toFixed(1));
}
const sorted = [...cpuMs].sort((a, b) => a - b);
process.stdout.write(
  `${JSON.stringify({
    machine: {
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? 'unknown',
      node: process.version,
      loadAverage: Number(loadavg()[0].toFixed(1)),
      v8Flags: process.execArgv.filter((arg) => arg.startsWith('--max-semi')),
    },
    swaps: SWAPS,
    cpuMsMedian: Number(sorted[Math.floor(sorted.length / 2)].toFixed(1)),
    gc: byKind,
  })}\n`,
);
await dataPlane.stop();
