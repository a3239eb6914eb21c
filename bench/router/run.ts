// Compares Loom's router with find-my-way, rou3 and memoirist. Every
// measurement runs in a fresh process (see measure.ts), and the routers of one
// cell run back to back, round after round, so that load from other processes
// on the machine hits them alike. A cell reports the lowest of its rounds,
// since noise only ever adds time.
//
// Usage: npm run bench:router [-- --json] [--rounds N (default 1)] [--tables github,10,...]
//   (--help prints the options)
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

import { ADAPTERS } from './adapters.js';
import { LOOKUP_KINDS, TABLE_NAMES } from './tables.js';

interface Options {
  json: boolean;
  rounds: number;
  tables: string[];
}

/** One cell of the report: a router's numbers on one table. */
interface Row {
  router: string;
  table: string;
  staticNs: number;
  paramsNs: number;
  missNs: number;
  buildMs: number;
  firstBuildMs: number;
  retainedMB: number;
}

const MEASURE = fileURLToPath(new URL('./measure.ts', import.meta.url));
/** Upper bound for one measurement process. */
const MEASURE_TIMEOUT_MS = 120_000;

const USAGE = `Usage: npx tsx bench/router/run.ts [--json] [--rounds N] [--tables A,B]

Compares Loom's router with find-my-way, rou3 and memoirist. Every number comes
from a fresh process running bench/router/measure.ts.

  --json        print one JSON object instead of a Markdown table
  --rounds N    repeat every measurement N times and keep the lowest (default 1)
  --tables A,B  tables to measure, from ${TABLE_NAMES.join(', ')} (default all)
  --help        print this message

Run it under the benchmark lock on a shared machine:
  flock /tmp/loom-bench.lock npx tsx bench/router/run.ts --json --tables 10,github,10000
`;

function parseOptions(argv: string[]): Options {
  const options: Options = { json: false, rounds: 1, tables: [...TABLE_NAMES] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else if (arg === '--json') options.json = true;
    else if (arg === '--rounds') options.rounds = Number(argv[++i]);
    else if (arg === '--tables') options.tables = argv[++i].split(',');
    else throw new Error(`unknown option "${arg}"; use --json, --rounds N, --tables A,B or --help`);
  }
  if (!Number.isInteger(options.rounds) || options.rounds < 1) {
    throw new Error(`--rounds must be a positive integer (got ${options.rounds})`);
  }
  return options;
}

function measure(router: string, table: string, kind: string): Record<string, number> {
  const output = execFileSync(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', MEASURE, router, table, kind],
    { encoding: 'utf8', timeout: MEASURE_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  return JSON.parse(output) as Record<string, number>;
}

function collect(options: Options): Row[] {
  const rows = new Map<string, Row>();
  for (const table of options.tables) {
    for (const adapter of ADAPTERS) {
      rows.set(`${adapter.name}/${table}`, {
        router: adapter.name,
        table,
        staticNs: Infinity,
        paramsNs: Infinity,
        missNs: Infinity,
        buildMs: Infinity,
        firstBuildMs: Infinity,
        retainedMB: Infinity,
      });
    }
  }

  for (let round = 0; round < options.rounds; round++) {
    for (const table of options.tables) {
      for (const kind of [...LOOKUP_KINDS, 'build']) {
        for (const adapter of ADAPTERS) {
          if (!options.json)
            process.stderr.write(`round ${round + 1}: ${adapter.name} ${table} ${kind}\n`);
          const result = measure(adapter.name, table, kind);
          const row = rows.get(`${adapter.name}/${table}`) as Row;
          if (kind === 'build') {
            row.buildMs = Math.min(row.buildMs, result.buildMs);
            row.firstBuildMs = Math.min(row.firstBuildMs, result.firstBuildMs);
            row.retainedMB = Math.min(row.retainedMB, result.retainedMB);
          } else {
            const key = `${kind}Ns` as 'staticNs' | 'paramsNs' | 'missNs';
            row[key] = Math.min(row[key], result.nsPerLookup);
          }
        }
      }
    }
  }
  return [...rows.values()];
}

const COLUMNS = [
  ['staticNs', 'static ns'],
  ['paramsNs', 'params ns'],
  ['missNs', 'miss ns'],
  ['buildMs', 'build ms'],
  ['firstBuildMs', 'first build ms'],
  ['retainedMB', 'heap MB'],
] as const;

/** Returns Loom's value divided by the best peer's, per column and table. */
function ratios(rows: Row[]): Record<string, Record<string, number>> {
  const result: Record<string, Record<string, number>> = {};
  for (const table of new Set(rows.map((row) => row.table))) {
    const loom = rows.find((row) => row.table === table && row.router === 'loom') as Row;
    const peers = rows.filter((row) => row.table === table && row.router !== 'loom');
    result[table] = {};
    for (const [key] of COLUMNS) {
      const best = Math.min(...peers.map((row) => row[key]));
      result[table][key] = Math.round((loom[key] / best) * 100) / 100;
    }
  }
  return result;
}

function formatMarkdown(rows: Row[], ratio: Record<string, Record<string, number>>): string {
  const header = ['table', 'router', ...COLUMNS.map(([, label]) => label)];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => ' --- |').join('')}`];
  for (const row of rows) {
    const cells = COLUMNS.map(([key]) => String(row[key]));
    lines.push(`| ${row.table} | ${row.router} | ${cells.join(' | ')} |`);
  }
  for (const [table, values] of Object.entries(ratio)) {
    const cells = COLUMNS.map(([key]) => `${values[key]}x`);
    lines.push(`| ${table} | loom / best peer | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

const options = parseOptions(process.argv.slice(2));
const started = Date.now();
const rows = collect(options);
const ratio = ratios(rows);
const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? 'unknown',
  node: process.version,
};
if (options.json) {
  const seconds = Math.round((Date.now() - started) / 1000);
  process.stdout.write(JSON.stringify({ machine, rounds: options.rounds, seconds, rows, ratio }));
  process.stdout.write('\n');
} else {
  process.stdout.write(`${machine.cpus} x ${machine.cpuModel}, Node ${machine.node}\n\n`);
  process.stdout.write(formatMarkdown(rows, ratio) + '\n');
}
