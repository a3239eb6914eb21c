import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { waitFor } from '../../scripts/processes.js';
import { readyz, type Member, type Workspace } from '../faults/harness.js';
import {
  answersBySlot,
  applyRouteA,
  get,
  startProxy,
  startUpstreamAndControlPlane,
} from './workers-harness.js';

const RESTART_MESSAGE = 'worker exited unexpectedly, restarting';

/** Restarts of slot 2 needed before the checks; each one costs a fork and a backoff. */
const CRASHES = 3;

/** The `workers` field of the primary's `/readyz` body. */
interface WorkerCounts {
  listening: number;
  configured: number;
  restarts: number;
}

async function workerCounts(adminPort: number): Promise<{ status: number; workers: WorkerCounts }> {
  const ready = await readyz(adminPort);
  return { status: ready.status, workers: (ready.body as { workers: WorkerCounts }).workers };
}

/** Parsed lines of the proxy log at warn level or above that name worker slot 2. */
function slot2Warnings(file: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => line.worker === 2 && Number(line.level) >= 40);
}

/** Reads one sample of the proxy's `/metrics`; undefined when the line is missing. */
async function sample(adminPort: number, series: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

describe('proxy workers crash loop', { timeout: 180_000 }, () => {
  let upstream: Server;
  let ws: Workspace;
  let cp: Member;
  let proxy: Member;
  let crashFile: string;

  before(async () => {
    let upstreamPort: number;
    ({ upstream, upstreamPort, ws, cp } = await startUpstreamAndControlPlane());
    crashFile = join(ws.dir, 'crash');
    proxy = await startProxy(ws, cp, 'crashy', {
      LOOM_FAULT_WORKER: '2',
      LOOM_FAULT_CRASH_FILE: crashFile,
    });
    await applyRouteA(cp.address, 'crashy', upstreamPort);
  });

  after(async () => {
    await ws?.close();
    upstream?.close();
  });

  test('crashing worker restarts with backoff', async () => {
    const victim = (await answersBySlot(proxy.port, '/a/x')).get('2')?.worker ?? '';
    assert.notEqual(victim, '');
    writeFileSync(crashFile, '');
    process.kill(Number(victim.split('-')[1]), 'SIGKILL');
    await waitFor(`${CRASHES} restarts of worker 2`, 60_000, () => {
      return slot2Warnings(proxy.logFile).length >= CRASHES;
    });

    // The primary serves through worker 1 all along.
    for (let i = 0; i < 6; i++) {
      const answer = await get(proxy.port, '/a/x');
      assert.equal(answer.status, 200);
      assert.match(answer.worker, /^1-/);
    }
    // One warning per exit and nothing else; each exit is a new process.
    const warnings = slot2Warnings(proxy.logFile).slice(0, CRASHES);
    assert.deepEqual(
      warnings.map((line) => line.msg),
      Array<string>(CRASHES).fill(RESTART_MESSAGE),
    );
    assert.equal(new Set(warnings.map((line) => line.workerPid)).size, CRASHES);
    assert.deepEqual(
      warnings.map((line) => line.restarts),
      Array.from({ length: CRASHES }, (_, i) => i + 1),
    );
    assert.equal(warnings[0].signal, 'SIGKILL');
    assert.ok(warnings.slice(1).every((line) => line.code === 1));
    // Backoff with jitter: the k-th delay is in [100, 200] ms times 2^k.
    const delays = warnings.map((line) => Number(line.restartInMs));
    delays.forEach((delay, k) => {
      assert.ok(delay >= 100 * 2 ** k, `delay ${k}: ${delay} ms`);
      assert.ok(delay <= 200 * 2 ** k, `delay ${k}: ${delay} ms`);
    });
    assert.ok(
      delays.some((delay, k) => delay !== 100 * 2 ** k && delay !== 200 * 2 ** k),
      `no jitter in ${delays.join(', ')}`,
    );
  });

  test('readiness and metrics show restarts', async () => {
    const { status, workers } = await workerCounts(proxy.adminPort);
    assert.equal(status, 200);
    assert.equal(workers.configured, 2);
    assert.equal(workers.listening, 1);
    assert.ok(workers.restarts >= CRASHES, `restarts: ${workers.restarts}`);

    const restarts = await sample(proxy.adminPort, 'loom_proxy_worker_restarts_total{worker="2"}');
    assert.notEqual(restarts, undefined);
    assert.ok(Number(restarts) >= CRASHES, `restarts metric: ${restarts}`);
    assert.equal(await sample(proxy.adminPort, 'loom_proxy_worker_restarts_total{worker="1"}'), 0);
    assert.equal(await sample(proxy.adminPort, 'loom_proxy_workers{state="listening"}'), 1);
  });

  test('slot recovers once crashes stop', async () => {
    rmSync(crashFile);
    await waitFor('worker 2 to listen again', 30_000, async () => {
      return (await workerCounts(proxy.adminPort)).workers.listening === 2;
    });

    assert.deepEqual([...(await answersBySlot(proxy.port, '/a/x')).keys()].sort(), ['1', '2']);
    assert.equal(await sample(proxy.adminPort, 'loom_proxy_workers{state="listening"}'), 2);
  });
});
