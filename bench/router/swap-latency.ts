// Measures request latency through a proxy while 100,000-route snapshots are
// swapped in back to back, against the same proxy and table without swaps.
// wrk (Debian package `wrk`) sends the load: one thread, a few connections,
// for a fixed time, to a route of the table whose upstream echoes a small body.
//
// Usage: npm run bench:router:swap [-- --json] [--seconds N] [--rounds N] [--semi-space MB]
//   [--change one|all] [--interval-ms N]
// --semi-space sets V8's --max-semi-space-size (MiB) for the proxy process. --change one
// (the default) changes one route per version, which the proxy applies as an update of its
// router; --change all changes every route, so each version is built anew. The proxy decodes
// each version from an encoded message, as it decodes what a control plane sends.
// --interval-ms waits that long after each swap before the next; 0 (the default) swaps back
// to back, so every request of the phase overlaps a swap.
import { execFile, fork } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

interface PhaseResult {
  phase: 'steady' | 'swapping';
  requests: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  swaps?: number;
  meanSwapMs?: number;
  /** Event-loop delay in the proxy process during the phase. */
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

interface ServerPhase {
  swaps: number;
  buildMs: number[];
  loopDelayP99Ms: number;
  loopDelayMaxMs: number;
}

const USAGE =
  'usage: npm run bench:router:swap [-- --json] [--seconds N] [--rounds N] [--semi-space MB]\n' +
  '  [--change one|all] [--interval-ms N]';
const argv = process.argv.slice(2);
checkOptions(argv);
const json = argv.includes('--json');
const seconds = numberOption('--seconds', 8);
const rounds = numberOption('--rounds', 2);
const semiSpaceMiB = argv.includes('--semi-space') ? numberOption('--semi-space', 0) : undefined;
const change = argv.includes('--change') ? argv[argv.indexOf('--change') + 1] : 'one';
const intervalMs = argv.includes('--interval-ms') ? numberOption('--interval-ms', 0) : 0;
if (change !== 'one' && change !== 'all') {
  throw new Error(`--change must be one or all (got ${String(change)})`);
}
const CONNECTIONS = 8;

/** Exits with the usage on `--help` and with an error on an option this benchmark does not take. */
function checkOptions(args: readonly string[]): void {
  const flags = new Set(['--json']);
  const valued = new Set(['--seconds', '--rounds', '--semi-space', '--change', '--interval-ms']);
  for (let index = 0; index < args.length; index++) {
    const arg = args[index];
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    if (valued.has(arg) && index + 1 < args.length) {
      index++;
    } else if (!flags.has(arg)) {
      const problem = valued.has(arg) ? `${arg} needs a value` : `unknown option ${arg}`;
      process.stderr.write(`swap-latency: ${problem}\n${USAGE}\n`);
      process.exit(2);
    }
  }
}

function numberOption(name: string, fallback: number): number {
  const index = argv.indexOf(name);
  if (index === -1) return fallback;
  const value = Number(argv[index + 1]);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer (got ${argv[index + 1]})`);
  }
  return value;
}

/** Parses wrk's --latency output into milliseconds. */
function parseWrk(output: string): {
  requests: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
} {
  const toMs = (value: string, unit: string): number => {
    const scale = ({ us: 0.001, ms: 1, s: 1000, m: 60_000 } as Record<string, number>)[unit];
    return Number((Number(value) * scale).toFixed(3));
  };
  const percentile = (label: string): number => {
    const match = new RegExp(`^\\s*${label}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(output);
    if (match === null) throw new Error(`wrk printed no ${label}% latency:\n${output}`);
    return toMs(match[1], match[2]);
  };
  const max = /Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)/.exec(output);
  const requests = /(\d+) requests in/.exec(output);
  if (max === null || requests === null) throw new Error(`unexpected wrk output:\n${output}`);
  return {
    requests: Number(requests[1]),
    p50Ms: percentile('50'),
    p99Ms: percentile('99'),
    maxMs: toMs(max[1], max[2]),
  };
}

async function wrk(url: string): Promise<ReturnType<typeof parseWrk>> {
  const { stdout } = await run(
    'wrk',
    ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--latency', url],
    { timeout: (seconds + 30) * 1000 },
  );
  return parseWrk(stdout);
}

const upstream = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('ok');
});
upstream.listen(0, '127.0.0.1');
await once(upstream, 'listening');
const upstreamPort = (upstream.address() as AddressInfo).port;

const server = fork(
  fileURLToPath(new URL('./swap-server.ts', import.meta.url)),
  [`http://127.0.0.1:${upstreamPort}`, change, String(intervalMs)],
  {
    execArgv: [
      ...(semiSpaceMiB === undefined ? [] : [`--max-semi-space-size=${semiSpaceMiB}`]),
      '--import',
      'tsx',
    ],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  },
);
try {
  const [ready] = (await once(server, 'message')) as [{ port: number; path: string }];
  const url = `http://127.0.0.1:${ready.port}${ready.path}`;
  const results: PhaseResult[] = [];
  for (let round = 0; round < rounds; round++) {
    if (!json) process.stderr.write(`round ${round + 1}: steady\n`);
    const idle = once(server, 'message') as Promise<[ServerPhase]>;
    server.send({ idleForMs: seconds * 1000 });
    const steadyLoad = await wrk(url);
    const [steady] = await idle;
    results.push({
      phase: 'steady',
      ...steadyLoad,
      loopDelayP99Ms: steady.loopDelayP99Ms,
      loopDelayMaxMs: steady.loopDelayMaxMs,
    });

    if (!json) process.stderr.write(`round ${round + 1}: swapping\n`);
    const swapped = once(server, 'message') as Promise<[ServerPhase]>;
    server.send({ swapForMs: seconds * 1000 });
    const load = await wrk(url);
    const [phase] = await swapped;
    const total = phase.buildMs.reduce((sum, ms) => sum + ms, 0);
    results.push({
      phase: 'swapping',
      ...load,
      swaps: phase.swaps,
      meanSwapMs: Number((total / Math.max(phase.swaps, 1)).toFixed(2)),
      loopDelayP99Ms: phase.loopDelayP99Ms,
      loopDelayMaxMs: phase.loopDelayMaxMs,
    });
  }

  const machine = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    node: process.version,
    loadAverage: Number(loadavg()[0].toFixed(1)),
    semiSpaceMiB: semiSpaceMiB ?? 'default',
    change,
    intervalMs,
  };
  if (json) {
    process.stdout.write(
      JSON.stringify({ machine, seconds, connections: CONNECTIONS, results }) + '\n',
    );
  } else {
    process.stdout.write(
      `${machine.cpus} x ${machine.cpuModel}, Node ${machine.node}, load average ` +
        `${machine.loadAverage} at the end, semi-space ${machine.semiSpaceMiB} MiB, ` +
        `change ${change}, interval ${intervalMs} ms\n`,
    );
    process.stdout.write(`wrk -t1 -c${CONNECTIONS} -d${seconds}s per phase\n\n`);
    const header = ['phase', 'requests', 'p50 ms', 'p99 ms', 'max ms', 'swaps', 'mean swap ms'];
    header.push('loop delay p99 / max ms');
    process.stdout.write(`| ${header.join(' | ')} |\n|${header.map(() => ' --- |').join('')}\n`);
    for (const r of results) {
      const cells = [r.phase, r.requests, r.p50Ms, r.p99Ms, r.maxMs, r.swaps ?? '-'];
      cells.push(r.meanSwapMs ?? '-', `${r.loopDelayP99Ms} / ${r.loopDelayMaxMs}`);
      process.stdout.write(`| ${cells.join(' | ')} |\n`);
    }
  }
} finally {
  server.send({ stop: true });
  await Promise.race([once(server, 'exit'), new Promise((resolve) => setTimeout(resolve, 5000))]);
  if (server.exitCode === null) server.kill();
  upstream.close();
}
