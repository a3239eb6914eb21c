// Measures how long a committed apply takes to reach every proxy: from the
// control plane's commit to the ack of the last proxy, both as the control
// plane records them. Fleets of real proxy processes and of lightweight
// subscribers in one process, at several configuration sizes. `--help` prints the options.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { AdminClient } from '../../cli/admin-client.js';
import type { Route } from '../../proto/gen/loom/v1/config.js';
import {
  ROOT,
  startLoom,
  waitFor,
  waitForPort,
  type LoomProcess,
} from '../../scripts/processes.js';
import { findFreePort } from '../../test/helpers/ports.js';
import { availableMiB, cpuMs, rssMiB } from './process-stats.js';
import { benchUpstream, makeRoutes } from './bench-routes.js';

const USAGE = `Usage: npm run bench:propagation -- [--json] [--quick] [--fleets 1,10,50]
  [--routes 100,1000] [--subscribers N] [--changes N] [--warmup N] [--cp-prof DIR]
Lists replace the defaults; --subscribers 0 skips the subscribers; --changes sets the most
changes measured per row (default 20, fewer once 8 s passed); --warmup sets the most changes
applied before them and reported apart (default 50, 3 with --quick, fewer once 15 s passed);
--cp-prof writes a V8 CPU profile of the control plane to DIR.
`;
const FLAGS = new Set(['--json', '--quick', '--help']);
const VALUED_OPTIONS = new Set([
  '--fleets',
  '--routes',
  '--subscribers',
  '--changes',
  '--warmup',
  '--cp-prof',
]);

const argv = process.argv.slice(2);
checkArguments(argv);
const args = new Set(argv);
if (args.has('--help')) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const QUICK = args.has('--quick');
const ROUTE_COUNTS =
  listOption('--routes') ?? (QUICK ? [100, 1_000] : [100, 1_000, 10_000, 100_000]);
const FLEET_SIZES = listOption('--fleets') ?? (QUICK ? [1, 10] : [1, 10, 50]);
const SUBSCRIBERS = listOption('--subscribers')?.[0] ?? (QUICK ? 200 : 1_000);
/** One-route changes per row: up to MAX_CHANGES, but no more once TIME_BUDGET_MS passed. */
const MAX_CHANGES = listOption('--changes')?.[0] ?? 20;
/**
 * Most changes applied before the measured ones in each row and reported apart. V8 optimizes
 * the code of a one-route change only after a proxy has applied dozens of them. At 1,000
 * routes it compiles the router's `add` and `Buffer.prototype.compare` at about the 40th
 * change, and the pattern parser and the decoder's run matcher at about the 45th. Every proxy of a fleet
 * reaches those counts on the same change, so 50 proxies on 2 cores compile at once and that
 * change takes 3 to 5 times the median. A proxy that has run for a while did so long ago.
 */
const WARMUP_CHANGES = listOption('--warmup')?.[0] ?? (QUICK ? 3 : 50);
/** Wall time after which the warm-up stops, so that rows of large tables stay short. */
const WARMUP_BUDGET_MS = 15_000;
const CP_PROFILE_DIR = argv.includes('--cp-prof') ? argv[argv.indexOf('--cp-prof') + 1] : undefined;

/** Exits with the usage and status 2 on an unknown option or an option without its value. */
function checkArguments(list: string[]): void {
  for (let i = 0; i < list.length; i++) {
    const arg = list[i];
    if (FLAGS.has(arg)) continue;
    if (VALUED_OPTIONS.has(arg) && i + 1 < list.length) {
      i++;
      continue;
    }
    const problem = VALUED_OPTIONS.has(arg)
      ? `missing value after ${arg}`
      : `unknown option ${arg}`;
    process.stderr.write(`error: ${problem}\n${USAGE}`);
    process.exit(2);
  }
}

/** Reads `name LIST` from the command line: comma-separated whole numbers, or undefined. */
function listOption(name: string): number[] | undefined {
  const index = argv.indexOf(name);
  if (index === -1) return undefined;
  const text = argv[index + 1] ?? '';
  const values = text.split(',').map(Number);
  if (text === '' || values.some((value) => !Number.isInteger(value) || value < 0)) {
    throw new Error(
      `invalid ${name} ${JSON.stringify(text)}: expected whole numbers separated by commas, such as 10,50`,
    );
  }
  return values;
}
const MIN_CHANGES = 3;
const TIME_BUDGET_MS = 8_000;
/**
 * Interval of the status polls that wait for acks. The times come from the control plane's
 * records, so the interval does not change them. Each poll lists every proxy, and at 20 ms with
 * 1,000 subscribers the polls took about a third of the control plane's CPU time.
 */
const STATUS_POLL_MS = 100;
/** Time over which the proxies' CPU use without changes is measured, to subtract it. */
const IDLE_MS = 2_000;
/** Proxies times routes above which a combination is skipped, to bound time and memory. */
const MAX_ROUTES_HELD = 500_000;
/** Estimated resident memory of one proxy per route held, in MiB (measured: about 2 KiB). */
const PROXY_MIB_PER_ROUTE = 2 / 1024;

interface Row {
  fleet: string;
  routes: number;
  changes: number;
  /** Time until the last proxy acked each warm-up change, in order. */
  warmupAllAckedMs?: number[];
  /** Time until the last proxy acked each measured change, in order. */
  allAckedMs?: number[];
  /** Time until the last proxy acked, per change: p50 and p99 over the changes. */
  allAckedP50Ms?: number;
  allAckedP99Ms?: number;
  /** Time until each proxy acked, over every proxy and change. */
  perProxyP50Ms?: number;
  perProxyP99Ms?: number;
  /** Control-plane CPU time per one-route change (build, encode, send, acks). */
  cpCpuMsPerSnapshot?: number;
  /**
   * CPU time of all proxy processes per change, divided by the proxies (receive, decode, build,
   * ack), minus what they use without changes over the same time.
   */
  proxyCpuMsPerSnapshot?: number;
  cpRssMiB?: number;
  skipped?: string;
}

/** Formats warm-up times as their count, median and maximum, or an empty cell without any. */
function warmupSummary(times: number[] | undefined): string {
  if (times === undefined || times.length === 0) return '';
  return `${times.length}: ${percentile(times, 50)} / ${Math.max(...times)}`;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)];
}

class Bench {
  readonly dir = mkdtempSync(join(tmpdir(), 'loom-bench-'));
  readonly proxies: LoomProcess[] = [];
  controlPlane!: ChildProcess;
  address = '';
  client!: AdminClient;

  async startControlPlane(): Promise<void> {
    const port = await findFreePort();
    this.address = `127.0.0.1:${port}`;
    this.controlPlane = spawn(
      process.execPath,
      [
        ...(CP_PROFILE_DIR === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', CP_PROFILE_DIR]),
        '--import',
        'tsx',
        join(ROOT, 'bench/propagation/control-plane.ts'),
        this.address,
        join(this.dir, 'store'),
      ],
      { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] },
    );
    await waitForPort('127.0.0.1', port, 30_000);
    this.client = new AdminClient(this.address);
  }

  async addProxies(total: number): Promise<void> {
    while (this.proxies.length < total) {
      const id = `proxy-${this.proxies.length + 1}`;
      // Port 0 lets each proxy bind a free port itself. Ports picked here in advance were
      // sometimes taken by another process before the proxy bound them, and the run waited
      // 5 minutes for the proxy that failed to start.
      this.proxies.push(
        startLoom(id, [
          'data-plane',
          '--control-plane',
          this.address,
          '--listen',
          '127.0.0.1:0',
          '--admin-listen',
          '127.0.0.1:0',
          '--id',
          id,
          '--log-level',
          'warn',
        ]),
      );
    }
    await this.waitForConnected(total);
  }

  async stopProxies(): Promise<void> {
    await Promise.all(this.proxies.splice(0).map((proxy) => proxy.stop()));
  }

  async waitForConnected(count: number): Promise<void> {
    await waitFor(`${count} connected proxies`, 300_000, async () => {
      const status = await this.client.status();
      return status.proxies.filter((proxy) => proxy.connected).length >= count;
    });
  }

  /** Applies a configuration and returns the committed version once every connected proxy acked it. */
  async applyAndWait(routes: Route[]): Promise<{ version: number; perProxyMs: number[] }> {
    const response = await this.client.apply({
      routes,
      upstreams: [benchUpstream],
      prune: true,
      dryRun: false,
      includeValues: false,
    });
    const version = response.version;
    for (;;) {
      const status = await this.client.status({ version });
      const connected = status.proxies.filter((proxy) => proxy.connected);
      if (connected.every((proxy) => proxy.versionAckedAtMs > 0)) {
        const committed = status.versionCommittedAtMs;
        return {
          version,
          perProxyMs: connected.map((proxy) => proxy.versionAckedAtMs - committed),
        };
      }
      await new Promise((resolve) => setTimeout(resolve, STATUS_POLL_MS));
    }
  }

  async measure(fleet: string, routeCount: number): Promise<Row> {
    await this.applyAndWait(makeRoutes(routeCount));
    // Warm-up changes edit the routes from the end of the table, the measured ones from its
    // start, so no measured change repeats a warm-up one.
    const warmupAllAckedMs: number[] = [];
    const warmupStarted = Date.now();
    for (
      let change = 1;
      change <= WARMUP_CHANGES && Date.now() - warmupStarted < WARMUP_BUDGET_MS;
      change++
    ) {
      const index = routeCount - 1 - (change % routeCount);
      const result = await this.applyAndWait(makeRoutes(routeCount, index, -change));
      warmupAllAckedMs.push(Math.max(...result.perProxyMs));
    }
    const allAcked: number[] = [];
    const perProxy: number[] = [];
    const idleStart = this.#proxyCpuMs();
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
    const idleCpuPerMs = (this.#proxyCpuMs() - idleStart) / IDLE_MS;
    const cpuBefore = cpuMs(this.controlPlane.pid!);
    const proxyCpuBefore = this.#proxyCpuMs();
    const started = Date.now();
    let changes = 0;
    while (
      changes < MAX_CHANGES &&
      (changes < MIN_CHANGES || Date.now() - started < TIME_BUDGET_MS)
    ) {
      const change = ++changes;
      const result = await this.applyAndWait(makeRoutes(routeCount, change % routeCount, change));
      allAcked.push(Math.max(...result.perProxyMs));
      perProxy.push(...result.perProxyMs);
    }
    const cpuPerChange = (cpuMs(this.controlPlane.pid!) - cpuBefore) / changes;
    const proxyCpu = this.#proxyCpuMs() - proxyCpuBefore - idleCpuPerMs * (Date.now() - started);
    return {
      fleet,
      routes: routeCount,
      changes,
      warmupAllAckedMs,
      allAckedMs: allAcked,
      allAckedP50Ms: percentile(allAcked, 50),
      allAckedP99Ms: percentile(allAcked, 99),
      perProxyP50Ms: percentile(perProxy, 50),
      perProxyP99Ms: percentile(perProxy, 99),
      cpCpuMsPerSnapshot: Math.round(cpuPerChange),
      proxyCpuMsPerSnapshot:
        this.proxies.length === 0
          ? undefined
          : Number((proxyCpu / changes / this.proxies.length).toFixed(1)),
      cpRssMiB: Math.round(rssMiB(this.controlPlane.pid!)),
    };
  }

  /** CPU time of every proxy process so far, in milliseconds. */
  #proxyCpuMs(): number {
    let total = 0;
    for (const proxy of this.proxies) total += cpuMs(proxy.child.pid!);
    return total;
  }

  async stop(): Promise<void> {
    await this.stopProxies();
    this.client?.close();
    this.controlPlane?.kill('SIGTERM');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function startSubscribers(address: string, count: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(ROOT, 'bench/propagation/subscribers.ts'), address, String(count)],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const lines = createInterface({ input: child.stdout! });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('subscribers not ready after 120 s')), 120_000);
    lines.on('line', (line) => {
      if (line === 'ready') {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return child;
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const bench = new Bench();
  const log = (text: string) => process.stderr.write(`${text}\n`);
  try {
    await bench.startControlPlane();
    for (const size of FLEET_SIZES) {
      await bench.addProxies(size);
      for (const routes of ROUTE_COUNTS) {
        const neededMiB = size * routes * PROXY_MIB_PER_ROUTE * 1.5;
        if (routes * size > MAX_ROUTES_HELD || neededMiB > availableMiB() / 2) {
          rows.push({
            fleet: `${size} proxies`,
            routes,
            changes: 0,
            skipped: `${size} proxies holding ${routes} routes need about ${Math.round(neededMiB)} MiB and ${size} rebuilds of ${routes} routes per change, seconds each on 2 cores`,
          });
          continue;
        }
        log(`measuring ${size} proxies at ${routes} routes`);
        rows.push(await bench.measure(`${size} proxies`, routes));
      }
    }
    await bench.stopProxies();

    if (SUBSCRIBERS > 0) rows.push(...(await measureSubscribers(bench, log)));
  } finally {
    await bench.stop();
  }
  report(rows);
}

/** Measures the lightweight subscribers at every route count. */
async function measureSubscribers(bench: Bench, log: (text: string) => void): Promise<Row[]> {
  const rows: Row[] = [];
  await bench.applyAndWait(makeRoutes(100));
  const subscribers = await startSubscribers(bench.address, SUBSCRIBERS);
  try {
    for (const routes of ROUTE_COUNTS) {
      if (routes * SUBSCRIBERS > 10_000_000) {
        rows.push({
          fleet: `${SUBSCRIBERS} subscribers`,
          routes,
          changes: 0,
          skipped:
            'one process would decode 1,000 copies of every 100,000-route snapshot, minutes per change',
        });
        continue;
      }
      log(`measuring ${SUBSCRIBERS} subscribers at ${routes} routes`);
      rows.push(await bench.measure(`${SUBSCRIBERS} subscribers`, routes));
    }
  } finally {
    subscribers.kill('SIGTERM');
  }
  return rows;
}

function report(rows: Row[]): void {
  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    /** 1-minute load average at the end: other work on the machine skews every number. */
    loadAverage: Number(loadavg()[0].toFixed(1)),
    command: `npm run bench:propagation${argv.length > 0 ? ` -- ${argv.join(' ')}` : ''}`,
  };
  if (args.has('--json')) {
    process.stdout.write(`${JSON.stringify({ machine, rows }, null, 2)}\n`);
    return;
  }
  process.stdout.write(
    `${machine.command} on ${machine.cpus} x ${machine.cpuModel}, Node ${machine.node}, ` +
      `load average ${machine.loadAverage} at the end\n\n`,
  );
  process.stdout.write(
    '| fleet | routes | changes | warm-up changes, all acked median / max (ms) | all acked p50 / p99 (ms) | per proxy p50 / p99 (ms) | CP CPU per snapshot (ms) | proxy CPU per snapshot (ms) | CP RSS (MiB) |\n',
  );
  process.stdout.write('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n');
  for (const row of rows) {
    if (row.skipped) {
      process.stdout.write(
        `| ${row.fleet} | ${row.routes} | skipped: ${row.skipped} | | | | | | |\n`,
      );
      continue;
    }
    process.stdout.write(
      `| ${row.fleet} | ${row.routes} | ${row.changes} | ${warmupSummary(row.warmupAllAckedMs)} | ` +
        `${row.allAckedP50Ms} / ${row.allAckedP99Ms} | ` +
        `${row.perProxyP50Ms} / ${row.perProxyP99Ms} | ${row.cpCpuMsPerSnapshot} | ` +
        `${row.proxyCpuMsPerSnapshot ?? '-'} | ${row.cpRssMiB} |\n`,
    );
  }
}

await main();
