// Profiles one Loom data plane under wrk load: an nginx upstream and wrk on core 0, Loom alone
// on core 1 (both cores with --workers above 1) under `node --cpu-prof`. Prints the CPU time
// per request and, for each process, the functions and files with the most self time. With
// --out DIR the .cpuprofile files are kept there for Chrome DevTools.
// Usage: tsx bench/proxy/profile.ts [--duration 10s] [--out DIR] [--no-access-log] [--no-profile]
//                                   [--workers N] [--top 30]
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';

import { ROOT } from '../../scripts/processes.js';
import { findFreePort } from '../../test/helpers/ports.js';
import {
  BenchProcesses,
  loadAverage,
  processTree,
  runWrk,
  startLoomProxy,
  startNginxUpstream,
} from './harness.js';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

interface CpuProfile {
  nodes: CpuProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
}

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '10s' },
    out: { type: 'string' },
    'no-access-log': { type: 'boolean', default: false },
    'no-profile': { type: 'boolean', default: false },
    workers: { type: 'string', default: '1' },
    top: { type: 'string', default: '30' },
  },
});

const dir = mkdtempSync(join(tmpdir(), 'loom-profile-'));
const out = values.out ?? join(dir, 'profiles');
mkdirSync(out, { recursive: true });
const processes = new BenchProcesses();

/** Shortens a script URL to a path relative to the repository. */
function where(url: string, line: number): string {
  const path = url.startsWith('file://') ? relative(ROOT, new URL(url).pathname) : url;
  return path === '' ? '(native)' : `${path}:${line + 1}`;
}

/** Prints the functions and the files with the most self time in one profile. */
function summarize(file: string, top: number): void {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byFunction = new Map<string, number>();
  const byFile = new Map<string, number>();
  let total = 0;
  for (const node of profile.nodes) {
    const hits = node.hitCount ?? 0;
    const { functionName, url, lineNumber } = node.callFrame;
    // Idle samples are time spent waiting in the event loop; percentages are of busy time.
    if (hits === 0 || functionName === '(idle)') continue;
    total += hits;
    const name = `${functionName || '(anonymous)'} ${where(url, lineNumber)}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + hits);
    const fileName = where(url, lineNumber).replace(/:\d+$/, '');
    const group = fileName.includes('node_modules/')
      ? fileName.replace(/^.*node_modules\/((@[^/]+\/)?[^/]+).*$/, 'node_modules/$1')
      : fileName;
    byFile.set(group, (byFile.get(group) ?? 0) + hits);
  }
  const print = (title: string, counts: Map<string, number>) => {
    process.stdout.write(`\n${title}\n`);
    for (const [name, hits] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      process.stdout.write(`${((hits / total) * 100).toFixed(1).padStart(5)}%  ${name}\n`);
    }
  };
  process.stdout.write(`\n${relative(process.cwd(), file)}: ${total} busy samples\n`);
  print('self time by function', byFunction);
  print('self time by file or package', byFile);
}

async function main(): Promise<void> {
  const [upA, upB] = [await findFreePort(), await findFreePort()];
  await startNginxUpstream(processes, dir, [upA, upB], 0);
  const loom = await startLoomProxy(processes, {
    dir,
    upstreamPorts: [upA, upB],
    // Several workers get both cores, as in production; one process gets core 1 to itself.
    core: values.workers === '1' ? 1 : '0-1',
    controlPlaneCore: 0,
    nodeArgs: values['no-profile'] ? [] : ['--cpu-prof', '--cpu-prof-dir', out],
    accessLog: values['no-access-log'] ? undefined : join(dir, 'access.log'),
    extraArgs: values.workers === '1' ? [] : ['--workers', values.workers ?? '1'],
  });
  const pids = processTree(loom.child.pid ?? 0);

  const load = loadAverage();
  runWrk('loom', loom.url, pids, '3s');
  const sample = runWrk('loom', loom.url, pids, values.duration ?? '10s');
  process.stdout.write(
    `load average before ${load.join(' ')}, after ${loadAverage().join(' ')}\n` +
      `loom: ${Math.round(sample.rps)} req/s, p50 ${sample.p50Ms} ms, p99 ${sample.p99Ms} ms, ` +
      `${sample.cpuUsPerRequest.toFixed(1)} µs CPU per request, RSS ${sample.rssMb.toFixed(0)} MB\n`,
  );

  const exited = once(loom.child, 'exit');
  loom.child.kill('SIGTERM');
  await exited;
  if (values['no-profile']) return;
  // Main threads only (thread id 0 in the file name); the others are tsx's loader threads.
  const files = readdirSync(out).filter((name) => /\.\d+\.0\.\d+\.cpuprofile$/.test(name));
  for (const file of files) {
    summarize(join(out, file), Number(values.top));
  }
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`profile failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    processes.stopAll();
    setTimeout(() => rmSync(dir, { recursive: true, force: true }), 500);
  });
