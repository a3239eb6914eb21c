// Compares the CPU time per request of this checkout's data plane with other checkouts', in
// one run: an nginx upstream and wrk on core 0, every proxy on core 1, measured in turns.
// Usage: tsx bench/proxy/compare.ts --baseline DIR [--baseline DIR2 ...] [--duration 5s]
//                                   [--runs 5] [--no-access-log] [--connections 50]
//                                   [--node-arg ARG ...]
// --node-arg passes a flag to node for this checkout's data plane only, such as a V8 heap
// setting. With `--baseline .`, the run compares the flag against the same code without it.
// Each checkout is named after its folder; this one is `current`.
// With --connections 1 each request runs alone, so the CPU time per request does not depend on
// how many requests share an event-loop turn, which other load on the machine changes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

import { ROOT } from '../../scripts/processes.js';
import { findFreePort } from '../../test/helpers/ports.js';
import {
  BenchProcesses,
  loadAverage,
  median,
  processTree,
  runWrk,
  startLoomProxy,
  startNginxUpstream,
  type Sample,
} from './harness.js';

const USAGE = `usage: tsx bench/proxy/compare.ts --baseline DIR [--baseline DIR2 ...]
  --baseline DIR     another checkout to measure against this one (repeatable)
  --duration 5s      length of one wrk run per checkout and round
  --runs 5           rounds; each round measures every checkout once, in turns
  --connections 50   wrk connections; 1 runs each request alone
  --no-access-log    start every proxy without its access log
  --node-arg ARG     node flag for this checkout's data plane only (repeatable)
  --help             print this text
`;

const { values } = parseArgs({
  options: {
    baseline: { type: 'string', multiple: true },
    duration: { type: 'string', default: '5s' },
    runs: { type: 'string', default: '5' },
    'no-access-log': { type: 'boolean', default: false },
    connections: { type: 'string', default: '50' },
    'node-arg': { type: 'string', multiple: true },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
if (values.baseline === undefined || values.baseline.length === 0) {
  process.stderr.write(`missing --baseline DIR\n${USAGE}`);
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'loom-compare-'));
const processes = new BenchProcesses();

async function main(baselines: string[]): Promise<void> {
  const [upA, upB] = [await findFreePort(), await findFreePort()];
  await startNginxUpstream(processes, dir, [upA, upB], 0);
  const contenders = [];
  const checkouts = baselines.map((root, index) => [checkoutName(root, index), root]);
  for (const [name, root] of [...checkouts, ['current', ROOT]]) {
    const proxy = await startLoomProxy(processes, {
      dir,
      root,
      upstreamPorts: [upA, upB],
      core: 1,
      controlPlaneCore: 0,
      accessLog: values['no-access-log'] ? undefined : join(dir, `${name}-access.log`),
      nodeArgs: name === 'current' ? values['node-arg'] : undefined,
    });
    contenders.push({
      name,
      proxy,
      pids: processTree(proxy.child.pid ?? 0),
      samples: [] as Sample[],
    });
  }

  const load = loadAverage();
  const connections = Number(values.connections);
  for (const contender of contenders) {
    runWrk(contender.name, contender.proxy.url, contender.pids, '3s', connections);
  }
  for (let round = 0; round < Number(values.runs); round++) {
    // Alternating the order keeps a load change during the run from favouring one checkout.
    const order = round % 2 === 0 ? contenders : [...contenders].reverse();
    for (const contender of order) {
      const sample = runWrk(
        contender.name,
        contender.proxy.url,
        contender.pids,
        values.duration ?? '5s',
        connections,
      );
      contender.samples.push(sample);
      process.stdout.write(
        `${contender.name}: ${Math.round(sample.rps)} req/s, ${sample.cpuUsPerRequest.toFixed(1)} µs/req\n`,
      );
    }
  }
  process.stdout.write(`load average before ${load.join(' ')}, after ${loadAverage().join(' ')}\n`);
  for (const contender of contenders) {
    const cpuValues = contender.samples.map((sample) => sample.cpuUsPerRequest);
    const cpu = median(cpuValues);
    const rps = median(contender.samples.map((sample) => sample.rps));
    const p99 = median(contender.samples.map((sample) => sample.p99Ms));
    const rss = median(contender.samples.map((sample) => sample.rssMb));
    process.stdout.write(
      `${contender.name} median: ${cpu.toFixed(1)} µs CPU per request (lowest ${Math.min(...cpuValues).toFixed(1)}), ` +
        `${Math.round(rps)} req/s, p99 ${p99} ms, RSS ${rss.toFixed(1)} MB\n`,
    );
  }
  // Samples of one round ran back to back, so their difference is less exposed to load changes
  // than the difference of two medians.
  const current = contenders[contenders.length - 1];
  for (const contender of contenders.slice(0, -1)) {
    const differences = current.samples.map(
      (sample, round) => sample.cpuUsPerRequest - contender.samples[round].cpuUsPerRequest,
    );
    const faster = differences.filter((difference) => difference < 0).length;
    process.stdout.write(
      `current minus ${contender.name}, median of rounds: ${median(differences).toFixed(1)} µs ` +
        `(current lower in ${faster} of ${differences.length} rounds)\n`,
    );
  }
}

/** Names a baseline after its folder, or `baseline` and its position when folders repeat. */
function checkoutName(root: string, index: number): string {
  const name = basename(resolve(root));
  const unique = values.baseline?.filter((other) => basename(resolve(other)) === name).length === 1;
  return unique && name !== 'current' ? name : `baseline${index + 1}`;
}

main(values.baseline)
  .catch((err: unknown) => {
    process.stderr.write(`compare failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    processes.stopAll();
    setTimeout(() => rmSync(dir, { recursive: true, force: true }), 500);
  });
