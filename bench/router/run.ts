// Compares Loom's router with find-my-way, rou3 and memoirist. Every
// measurement runs in a fresh process (see measure.ts), and the routers of one
// cell run back to back, round after round, so that load from other processes
// on the machine hits them alike. A cell reports the lowest of its rounds,
// since noise only ever adds time.
//
// A measurement that fails or times out is reported as failed, and the others still print.
// The exit code is then 1.
//
// Usage: npm run bench:router [-- --json] [--rounds N (default 1)] [--tables github,10,...]
//   (--help prints the options)
import { spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';

import { ADAPTERS } from './adapters.js';
import { LOOKUP_KINDS, TABLE_NAMES } from './tables.js';

const KINDS = [...LOOKUP_KINDS, 'build'] as const;

interface Options {
  json: boolean;
  rounds: number;
  tables: string[];
  routers: string[];
  kinds: string[];
  timeoutMs: number;
}

/**
 * One cell of the report: a router's numbers on one table. A number is null when no round of
 * its measurement finished, or when the measurement was not run.
 */
interface Row {
  router: string;
  table: string;
  staticNs: number | null;
  paramsNs: number | null;
  missNs: number | null;
  buildMs: number | null;
  firstBuildMs: number | null;
  retainedMB: number | null;
}

type Column = Exclude<keyof Row, 'router' | 'table'>;

/** A measurement that printed no result. */
interface Failure {
  router: string;
  table: string;
  kind: string;
  round: number;
  error: string;
}

const MEASURE = fileURLToPath(new URL('./measure.ts', import.meta.url));
/** Default upper bound for one measurement process, in seconds. */
const DEFAULT_TIMEOUT_SECONDS = 120;

const USAGE = `Usage: npx tsx bench/router/run.ts [--json] [--rounds N] [--tables A,B]
         [--routers A,B] [--kinds A,B] [--timeout SECONDS]

Compares Loom's router with find-my-way, rou3 and memoirist. Every number comes
from a fresh process running bench/router/measure.ts. A measurement that fails
or times out shows as "failed", the others still print, and the exit code is 1.

  --json         print one JSON object instead of a Markdown table
  --rounds N     repeat every measurement N times and keep the lowest
                 (default 1)
  --tables A,B   tables to measure, from ${TABLE_NAMES.join(', ')}
                 (default all)
  --routers A,B  routers to measure, from ${ADAPTERS.map((adapter) => adapter.name).join(', ')}
                 (default all)
  --kinds A,B    measurements, from ${KINDS.join(', ')} (default all)
  --timeout S    seconds one measurement may take before it counts as failed
                 (default ${DEFAULT_TIMEOUT_SECONDS})
  --help         print this message

Run it under the benchmark lock on a shared machine:
  flock /tmp/loom-bench.lock npx tsx bench/router/run.ts --json \\
    --tables 10,github,10000
`;

function parseOptions(argv: string[]): Options {
  const options: Options = {
    json: false,
    rounds: 1,
    tables: [...TABLE_NAMES],
    routers: ADAPTERS.map((adapter) => adapter.name),
    kinds: [...KINDS],
    timeoutMs: DEFAULT_TIMEOUT_SECONDS * 1000,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help') {
      process.stdout.write(USAGE);
      process.exit(0);
    } else if (arg === '--json') options.json = true;
    else if (arg === '--rounds') options.rounds = Number(argv[++i]);
    else if (arg === '--tables') options.tables = listOption(arg, argv[++i], TABLE_NAMES);
    else if (arg === '--routers') {
      options.routers = listOption(
        arg,
        argv[++i],
        ADAPTERS.map((adapter) => adapter.name),
      );
    } else if (arg === '--kinds') options.kinds = listOption(arg, argv[++i], KINDS);
    else if (arg === '--timeout') options.timeoutMs = parseTimeout(argv[++i]);
    else throw new Error(`unknown option "${arg}"; see --help`);
  }
  if (!Number.isInteger(options.rounds) || options.rounds < 1) {
    throw new Error(`--rounds must be a positive integer (got ${options.rounds})`);
  }
  return options;
}

/** Converts the seconds of `--timeout` to milliseconds. */
function parseTimeout(value: string | undefined): number {
  const seconds = Number(value);
  if (value === undefined || value.trim() === '' || !Number.isFinite(seconds) || seconds <= 0) {
    throw new Error(`invalid --timeout "${value ?? ''}"; expected seconds above 0, such as 120`);
  }
  return seconds * 1000;
}

/** Splits a comma-separated option value and checks each name against `known`. */
function listOption(option: string, value: string | undefined, known: readonly string[]): string[] {
  const names = (value ?? '').split(',').filter((name) => name !== '');
  const unknown = names.filter((name) => !known.includes(name));
  if (names.length === 0 || unknown.length > 0) {
    throw new Error(
      `invalid ${option} "${value ?? ''}"; expected a comma-separated list of ${known.join(', ')}`,
    );
  }
  return names;
}

/** Runs one measurement process. Returns its result, or the reason it printed none. */
function measure(
  router: string,
  table: string,
  kind: string,
  timeoutMs: number,
): { result: Record<string, number> } | { error: string } {
  const child = spawnSync(
    process.execPath,
    ['--expose-gc', '--import', 'tsx', MEASURE, router, table, kind],
    { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  if (child.stderr) process.stderr.write(child.stderr);
  // An uncaught error prints its stack and then the Node.js version, so the error line is
  // the last one that names an error.
  const lines = (child.stderr ?? '').trim().split('\n');
  const errorLine = lines.findLast((line) => /^\w*Error\b/.test(line)) ?? lines.at(-1) ?? '';
  const detail = errorLine === '' ? '' : `: ${errorLine}`;
  if ((child.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') {
    return { error: `timed out after ${timeoutMs} ms` };
  }
  if (child.error) return { error: `did not start: ${child.error.message}` };
  if (child.status !== 0) {
    return { error: `exited with ${child.status ?? child.signal}${detail}` };
  }
  try {
    return { result: JSON.parse(child.stdout) as Record<string, number> };
  } catch {
    return { error: `printed no JSON result: ${JSON.stringify(child.stdout.slice(0, 200))}` };
  }
}

/** Returns the lower of two values; a null value is one not measured. */
function lowest(known: number | null, value: number | undefined): number | null {
  if (value === undefined || !Number.isFinite(value)) return known;
  return known === null ? value : Math.min(known, value);
}

function collect(options: Options): { rows: Row[]; failures: Failure[] } {
  const rows = new Map<string, Row>();
  for (const table of options.tables) {
    for (const router of options.routers) {
      rows.set(`${router}/${table}`, {
        router,
        table,
        staticNs: null,
        paramsNs: null,
        missNs: null,
        buildMs: null,
        firstBuildMs: null,
        retainedMB: null,
      });
    }
  }

  const failures: Failure[] = [];
  for (let round = 0; round < options.rounds; round++) {
    for (const table of options.tables) {
      for (const kind of options.kinds) {
        for (const router of options.routers) {
          if (!options.json)
            process.stderr.write(`round ${round + 1}: ${router} ${table} ${kind}\n`);
          const outcome = measure(router, table, kind, options.timeoutMs);
          if ('error' in outcome) {
            failures.push({ router, table, kind, round: round + 1, error: outcome.error });
            process.stderr.write(`FAILED ${router} ${table} ${kind}: ${outcome.error}\n`);
            continue;
          }
          const result = outcome.result;
          const row = rows.get(`${router}/${table}`) as Row;
          if (kind === 'build') {
            row.buildMs = lowest(row.buildMs, result.buildMs);
            row.firstBuildMs = lowest(row.firstBuildMs, result.firstBuildMs);
            row.retainedMB = lowest(row.retainedMB, result.retainedMB);
          } else {
            const key = `${kind}Ns` as 'staticNs' | 'paramsNs' | 'missNs';
            row[key] = lowest(row[key], result.nsPerLookup);
          }
        }
      }
    }
  }
  return { rows: [...rows.values()], failures };
}

const COLUMNS: readonly (readonly [Column, string])[] = [
  ['staticNs', 'static ns'],
  ['paramsNs', 'params ns'],
  ['missNs', 'miss ns'],
  ['buildMs', 'build ms'],
  ['firstBuildMs', 'first build ms'],
  ['retainedMB', 'heap MB'],
];

/**
 * Returns Loom's value divided by the best peer's, per column and table; null where Loom or
 * every peer has no value. Tables without a Loom row or without peers get no entry.
 */
function ratios(rows: Row[]): Record<string, Record<string, number | null>> {
  const result: Record<string, Record<string, number | null>> = {};
  for (const table of new Set(rows.map((row) => row.table))) {
    const loom = rows.find((row) => row.table === table && row.router === 'loom');
    const peers = rows.filter((row) => row.table === table && row.router !== 'loom');
    if (loom === undefined || peers.length === 0) continue;
    result[table] = {};
    for (const [key] of COLUMNS) {
      const values = peers.flatMap((row) => (row[key] === null ? [] : [row[key]]));
      const own = loom[key];
      result[table][key] =
        own === null || values.length === 0
          ? null
          : Math.round((own / Math.min(...values)) * 100) / 100;
    }
  }
  return result;
}

/** Formats a cell: "failed" when a failed measurement left it empty, "-" when none ran. */
function formatCell(row: Row, key: Column, failures: Failure[]): string {
  const value = row[key];
  if (value !== null) return String(value);
  const kind = key.endsWith('Ns') ? key.slice(0, -2) : 'build';
  const failed = failures.some(
    (failure) =>
      failure.router === row.router && failure.table === row.table && failure.kind === kind,
  );
  return failed ? 'failed' : '-';
}

function formatMarkdown(
  rows: Row[],
  ratio: Record<string, Record<string, number | null>>,
  failures: Failure[],
): string {
  const header = ['table', 'router', ...COLUMNS.map(([, label]) => label)];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map(() => ' --- |').join('')}`];
  for (const row of rows) {
    const cells = COLUMNS.map(([key]) => formatCell(row, key, failures));
    lines.push(`| ${row.table} | ${row.router} | ${cells.join(' | ')} |`);
  }
  for (const [table, values] of Object.entries(ratio)) {
    const cells = COLUMNS.map(([key]) => (values[key] === null ? '-' : `${values[key]}x`));
    lines.push(`| ${table} | loom / best peer | ${cells.join(' | ')} |`);
  }
  if (failures.length > 0) {
    lines.push('', 'Failed measurements:');
    for (const failure of failures) {
      const { router, table, kind, round, error } = failure;
      lines.push(`- ${router} ${table} ${kind} (round ${round}): ${error}`);
    }
  }
  return lines.join('\n');
}

const options = parseOptions(process.argv.slice(2));
const started = Date.now();
const { rows, failures } = collect(options);
const ratio = ratios(rows);
const machine = {
  cpus: cpus().length,
  cpuModel: cpus()[0]?.model ?? 'unknown',
  node: process.version,
};
if (options.json) {
  const seconds = Math.round((Date.now() - started) / 1000);
  const report = { machine, rounds: options.rounds, seconds, rows, ratio, failures };
  process.stdout.write(JSON.stringify(report));
  process.stdout.write('\n');
} else {
  process.stdout.write(`${machine.cpus} x ${machine.cpuModel}, Node ${machine.node}\n\n`);
  process.stdout.write(formatMarkdown(rows, ratio, failures) + '\n');
}
if (failures.length > 0) process.exitCode = 1;
