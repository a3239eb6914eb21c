// Compares the CPU time per request of this checkout's data plane with another checkout's, in
// one run: an nginx upstream and wrk on core 0, both proxies on core 1, measured in turns.
// Usage: tsx bench/proxy/compare.ts --baseline DIR [--duration 5s] [--runs 5] [--no-access-log]
//                                   [--connections 50]
// With --connections 1 each request runs alone, so the CPU time per request does not depend on
// how many requests share an event-loop turn, which other load on the machine changes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

const { values } = parseArgs({
  options: {
    baseline: { type: 'string' },
    duration: { type: 'string', default: '5s' },
    runs: { type: 'string', default: '5' },
    'no-access-log': { type: 'boolean', default: false },
    connections: { type: 'string', default: '50' },
  },
});
if (values.baseline === undefined) {
  process.stderr.write('usage: tsx bench/proxy/compare.ts --baseline DIR [--duration 5s]\n');
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'loom-compare-'));
const processes = new BenchProcesses();

async function main(baseline: string): Promise<void> {
  const [upA, upB] = [await findFreePort(), await findFreePort()];
  await startNginxUpstream(processes, dir, [upA, upB], 0);
  const contenders = [];
  for (const [name, root] of [
    ['baseline', baseline],
    ['current', ROOT],
  ] as const) {
    const proxy = await startLoomProxy(processes, {
      dir,
      root,
      upstreamPorts: [upA, upB],
      core: 1,
      controlPlaneCore: 0,
      accessLog: values['no-access-log'] ? undefined : join(dir, `${name}-access.log`),
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
    // Alternating the order keeps a load change during the run from favouring one side.
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
    process.stdout.write(
      `${contender.name} median: ${cpu.toFixed(1)} µs CPU per request (lowest ${Math.min(...cpuValues).toFixed(1)}), ` +
        `${Math.round(rps)} req/s, p99 ${p99} ms\n`,
    );
  }
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
