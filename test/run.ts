// Runs every test file under test/ with node's test runner. Node 20 cannot
// expand globs itself, so this script finds the files.
// Usage: tsx test/run.ts [FILTER]  (FILTER keeps files whose path contains it)
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';

import { ROOT } from '../scripts/processes.js';
import { describeProcesses, killAll, listProcesses } from './helpers/process-tree.js';

function findTests(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return findTests(path);
    return entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

const filter = process.argv[2] ?? '';
const files = findTests(join(ROOT, 'test'))
  .map((file) => relative(ROOT, file))
  .filter((file) => file.includes(filter))
  .sort();
if (files.length === 0) {
  process.stderr.write(`no test files match "${filter}"\n`);
  process.exit(1);
}

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
  { cwd: ROOT, stdio: 'inherit', detached: true },
);

// The runner is no longer in the terminal's foreground group, so Ctrl-C reaches it from here.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => killGroup(signal));
}

child.on('exit', (code, signal) => {
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
