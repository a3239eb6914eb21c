// Kills, when a test file's process exits, every process it started that still runs: etcd,
// control planes and proxies of a test that timed out or failed before its cleanup. test/run.ts
// loads it into every test process. The kill runs in the `exit` event, which also fires when
// --test-force-exit ends the file, and on SIGINT or SIGTERM, which would skip that event.
import { relative } from 'node:path';

import { ROOT } from '../../scripts/processes.js';
import { descendantsOf, describeProcesses, killAll } from './process-tree.js';

let done = false;

function killLeftovers(): void {
  if (done) return;
  done = true;
  // tsx runs esbuild as a service child of every process it loads, which exits with its parent.
  const leftovers = descendantsOf(process.pid).filter(
    (entry) => !/\besbuild\S* --service=/.test(entry.command),
  );
  if (leftovers.length === 0) return;
  killAll(leftovers);
  const file = relative(ROOT, process.argv[1] ?? '(unknown test file)');
  process.stderr.write(
    `${file} exited with ${leftovers.length} process(es) it started still running; ` +
      `killed them:\n${describeProcesses(leftovers)}\n`,
  );
}

if (process.env.NODE_TEST_CONTEXT !== undefined) {
  process.once('exit', killLeftovers);
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(signal, () => {
      killLeftovers();
      process.exit(code);
    });
  }
}
