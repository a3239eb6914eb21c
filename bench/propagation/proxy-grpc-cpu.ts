// Measures the CPU time one proxy spends per one-route change over a real gRPC stream: receiving
// and framing the message in grpc-js, decoding, `DataPlane.applySnapshot` and sending the ack.
// `snapshot-sender.ts` runs in a child process and sends the snapshots of `proxy-cpu.ts`, one
// after each ack plus --gap-ms, so the proxy is idle between changes as in a fleet. CPU time
// is `process.cpuUsage` of this process from the first change until 1 s after the last ack,
// minus what the process uses idle over as long, divided by the changes. Compare with
// `proxy-cpu.ts --gap-ms`, which leaves out gRPC and the work that runs after an apply.
// Usage: node --import tsx bench/propagation/proxy-grpc-cpu.ts [--routes 1000] [--changes 20]
//   [--gap-ms 20] [--snapshot-cache FILE] [--windows FILE] [--json]
// --snapshot-cache makes the proxy write each applied snapshot to FILE, as `loom data-plane
// --snapshot-cache` does.
// --windows writes the one window from the first change to 1 s after the last ack, in
// microseconds of the monotonic clock, for `profile-breakdown.ts`.
import { fork } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';

import { pino } from 'pino';

import { DataPlane } from '../../data-plane/data-plane.js';
import { checkOptions, numberOption, stringOption } from './options.js';
import { mainThreadMs, ownCpuMs } from './process-stats.js';

const argv = process.argv.slice(2);
checkOptions(
  argv,
  'usage: node --import tsx bench/propagation/proxy-grpc-cpu.ts [--routes 1000]\n' +
    '  [--changes 20] [--gap-ms 20] [--snapshot-cache FILE] [--windows FILE] [--json]\n',
  ['--json'],
  ['--routes', '--changes', '--gap-ms', '--snapshot-cache', '--windows'],
);
const ROUTES = numberOption(argv, '--routes', 1_000);
const CHANGES = numberOption(argv, '--changes', 20);
const GAP_MS = numberOption(argv, '--gap-ms', 20);
/** Wait after the base snapshot and after the last change, for deferred work to run. */
const SETTLE_MS = 1_000;
/** Time over which the CPU use of the idle proxy is measured. */
const IDLE_MS = 1_000;
const WINDOWS_FILE = stringOption(argv, '--windows');
const SNAPSHOT_CACHE = stringOption(argv, '--snapshot-cache');

/** Returns `end - start`, or NaN when either is undefined. */
function difference(end: number | undefined, start: number | undefined): number {
  return end === undefined || start === undefined ? Number.NaN : end - start;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

type SenderMessage = { port: number } | { acked: number } | { nacked: number; error: string };

const sender = fork(
  join(import.meta.dirname, 'snapshot-sender.ts'),
  [String(ROUTES), String(CHANGES), String(GAP_MS)],
  { execArgv: ['--import', 'tsx'] },
);
const messages: SenderMessage[] = [];
let wake: (() => void) | undefined;
sender.on('message', (message: SenderMessage) => {
  messages.push(message);
  wake?.();
});

/** Waits for the next message of the sender that `accept` takes. */
async function nextMessage<T extends SenderMessage>(accept: (m: SenderMessage) => m is T) {
  for (;;) {
    const index = messages.findIndex(accept);
    if (index >= 0) return messages.splice(index, 1)[0] as T;
    await new Promise<void>((resolve) => (wake = resolve));
  }
}
const isPort = (m: SenderMessage): m is { port: number } => 'port' in m;
const isAck = (m: SenderMessage): m is { acked: number } | { nacked: number; error: string } =>
  'acked' in m || 'nacked' in m;

const { port } = await nextMessage(isPort);
const dataPlane = new DataPlane({
  controlPlanes: [`127.0.0.1:${port}`],
  listen: '127.0.0.1:0',
  adminListen: '127.0.0.1:0',
  id: 'proxy-grpc-cpu',
  logger: pino({ level: 'silent' }),
  snapshotCache: SNAPSHOT_CACHE,
});
await dataPlane.start();

// CPU time of the proxy without changes, over IDLE_MS once the base snapshot settled.
const base = await nextMessage(isAck);
if ('nacked' in base) throw new Error(`proxy nacked the base snapshot: ${base.error}`);
await sleep(SETTLE_MS);
const idleStart = ownCpuMs();
const idleMainStart = mainThreadMs();
await sleep(IDLE_MS);
const idleCpuPerMs = (ownCpuMs() - idleStart) / IDLE_MS;
const idleMainPerMs = difference(mainThreadMs(), idleMainStart) / IDLE_MS;

const startCpu = ownCpuMs();
const startMain = mainThreadMs();
const startUs = monotonicUs();
sender.send({ go: true });
for (let version = 2; version <= CHANGES + 1; version++) {
  const response = await nextMessage(isAck);
  if ('nacked' in response) {
    throw new Error(`proxy nacked version ${response.nacked}: ${response.error}`);
  }
}
// Work that the changes left behind, such as collecting old tables, counts too.
await sleep(SETTLE_MS);
const elapsedMs = (monotonicUs() - startUs) / 1e3;
const totalMs = ownCpuMs() - startCpu - idleCpuPerMs * elapsedMs;
const mainMs = difference(mainThreadMs(), startMain) - idleMainPerMs * elapsedMs;
if (WINDOWS_FILE !== undefined) {
  writeFileSync(WINDOWS_FILE, JSON.stringify([[startUs, monotonicUs()]]));
}

const result = {
  machine: {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    loadAverage: Number(loadavg()[0].toFixed(1)),
  },
  routes: ROUTES,
  changes: CHANGES,
  gapMs: GAP_MS,
  snapshotCache: SNAPSHOT_CACHE !== undefined,
  changeCpuMeanMs: Number((totalMs / CHANGES).toFixed(2)),
  // The part of changeCpuMeanMs that the main thread used. V8's other threads used the rest.
  changeMainThreadMeanMs: Number.isNaN(mainMs) ? undefined : Number((mainMs / CHANGES).toFixed(2)),
  idleCpuMsPerSecond: Number((idleCpuPerMs * 1e3).toFixed(1)),
};
process.stdout.write(
  argv.includes('--json') ? `${JSON.stringify(result)}\n` : `${JSON.stringify(result, null, 2)}\n`,
);
sender.disconnect();
await dataPlane.stop();
