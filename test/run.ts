// Runs every test file under test/ with node's test runner. Node 20 cannot
// expand globs itself, so this script finds the files.
// Usage: tsx test/run.ts [FILTER]  (FILTER keeps files whose path contains it)
import { spawn } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';

import { build } from 'esbuild';

import { PREBUILT_BIN_ENV, ROOT } from '../scripts/processes.js';
import { describeProcesses, killAll, listProcesses } from './helpers/process-tree.js';

function findTests(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return findTests(path);
    return entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

// node --test starts the files in the order given, two at a time. A slow file that starts near
// the end keeps one core busy after the other core has run out of files. So the files that take
// more than 20 s start first, slowest first, as ranked by the durations of a CI run (Node 20,
// 2 cores). The other files follow in path order.
const SLOWEST_FILES = [
  'test/faults/shared-status.test.ts',
  'test/integration/loomctl-operator.test.ts',
  'test/integration/fleet.test.ts',
  'test/integration/incremental-update-matches-fresh.test.ts',
  'test/integration/config-cli.test.ts',
  'test/integration/hostile-config-files.test.ts',
  'test/integration/convergence.test.ts',
  'test/integration/duplicate-proxy-id.test.ts',
  'test/integration/incremental-random.test.ts',
  'test/integration/large-config-etcd.test.ts',
  'test/integration/cli-usage.test.ts',
  'test/unit/table-update-differential.test.ts',
  'test/faults/stream.test.ts',
  'test/integration/cli-loomctl.test.ts',
  'test/faults/stale-fleet-record.test.ts',
  'test/integration/loom-flags.test.ts',
  'test/faults/lifecycle.test.ts',
  'test/faults/control-plane.test.ts',
  'test/integration/nack-fallback-edges.test.ts',
  'test/faults/etcd.test.ts',
  'test/integration/fallback-after-late-ack.test.ts',
];

function startRank(file: string): number {
  const rank = SLOWEST_FILES.indexOf(file);
  return rank === -1 ? SLOWEST_FILES.length : rank;
}

const filter = process.argv[2] ?? '';
const files = findTests(join(ROOT, 'test'))
  .map((file) => relative(ROOT, file))
  .filter((file) => file.includes(filter))
  .sort()
  .sort((a, b) => startRank(a) - startRank(b));
if (files.length === 0) {
  process.stderr.write(`no test files match "${filter}"\n`);
  process.exit(1);
}

// Each bundle is a bin/ script with the sources it imports, compiled once here, so the loom and
// loomctl processes that the tests start compile no TypeScript. Split chunks load only when a
// command imports them, as with tsx, so a run that stops at a usage error stays cheap. The
// folder is directly under the root, as bin/ is, because cli/version.ts reads ../package.json
// relative to its module, and is named after this process so that two runs never share it.
// compose.test.ts and one usage test still start the bin/ scripts.
const prebuiltBin = join(ROOT, `.test-bin-${process.pid}`);
await build({
  entryPoints: { loom: join(ROOT, 'bin', 'loom.js'), loomctl: join(ROOT, 'bin', 'loomctl.js') },
  outdir: prebuiltBin,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  logLevel: 'warning',
  plugins: [
    {
      // A bundle contains only JavaScript, so the tsx loader that the bin/ scripts register is
      // left out.
      name: 'without-tsx',
      setup(builder) {
        builder.onResolve({ filter: /^tsx\/esm\/api$/ }, () => ({
          path: 'tsx-register',
          namespace: 'without-tsx',
        }));
        builder.onLoad({ filter: /.*/, namespace: 'without-tsx' }, () => ({
          contents: 'export function register() {}',
          loader: 'js',
        }));
      },
    },
  ],
});

const child = spawn(
  process.execPath,
  [
    '--import',
    'tsx',
    // Keeps --test-force-exit from dropping a file's last results (see the file).
    '--import',
    './test/helpers/blocking-report.ts',
    // Kills what a test file started and left running when that file's process exits.
    '--import',
    './test/helpers/kill-leftovers.ts',
    '--test',
    '--test-concurrency=2',
    // A test that leaves a timer or socket open must not keep its file running forever.
    '--test-force-exit',
    '--test-timeout=300000',
    '--test-reporter=spec',
    ...files,
  ],
  // Its own process group, so that the processes of every test file can be found and killed
  // after the run, also those whose parent died first.
  {
    cwd: ROOT,
    env: { ...process.env, [PREBUILT_BIN_ENV]: prebuiltBin },
    stdio: 'inherit',
    detached: true,
  },
);

// The runner is no longer in the terminal's foreground group, so Ctrl-C reaches it from here.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => killGroup(signal));
}

child.on('exit', (code, signal) => {
  rmSync(prebuiltBin, { recursive: true, force: true });
  const leftovers = listProcesses().filter((entry) => entry.pgid === child.pid);
  if (leftovers.length > 0) {
    killAll(leftovers);
    process.stderr.write(
      `${leftovers.length} process(es) started by the tests outlived the test runner; ` +
        `killed them:\n${describeProcesses(leftovers)}\n`,
    );
  }
  process.exit(signal ? 1 : (code ?? 1));
});

function killGroup(signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // The group is empty.
  }
}
