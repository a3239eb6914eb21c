import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { workerCount } from '../../cli/proxy-options.js';
import { parseConfigTexts, type DeclaredConfig } from '../../config/load.js';
import { waitFor } from '../../scripts/processes.js';
import { applyConfig, countLogLines, readyz, Workspace, type Member } from '../faults/harness.js';
import {
  answersBySlot,
  get,
  NONE,
  proxyStatus,
  startProxy,
  statuses,
  waitForAck,
} from './workers-harness.js';

/** An upstream that responds to paths with `/hold/{ms}` after that many milliseconds. */
async function startUpstream(): Promise<{ server: Server; port: number; delayed: () => number }> {
  let delayed = 0;
  const server = createServer((req, res) => {
    const delay = Number(/\/hold\/(\d+)/.exec(req.url ?? '')?.[1] ?? 0);
    if (delay > 0) delayed++;
    setTimeout(() => res.end('ok'), delay);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, delayed: () => delayed };
}

/** Routes `/{name}/*rest` for each name, all to one upstream. */
function config(upstreamPort: number, routes: string[]): DeclaredConfig {
  const text = [
    'upstreams:',
    `  - {name: up, targets: [{url: 'http://127.0.0.1:${upstreamPort}'}]}`,
    'routes:',
    ...routes.map((name) => `  - {name: ${name}, paths: ['/${name}/*rest'], upstream: up}`),
  ].join('\n');
  return parseConfigTexts([{ file: 'workers.yaml', text }]);
}

describe('proxy workers', { timeout: 120_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let ws: Workspace;
  let cp: Member;
  let proxy: Member;
  let version = 0;

  before(async () => {
    upstream = await startUpstream();
    ws = new Workspace();
    cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
    proxy = await startProxy(ws, cp, 'workers', {});
    version = await applyConfig(cp.address, config(upstream.port, ['a']));
    await waitForAck(cp.address, 'workers', version);
  });

  after(async () => {
    await ws?.close();
    upstream?.server.close();
  });

  test('two workers serve one port', async () => {
    const bySlot = await answersBySlot(proxy.port, '/a/x');

    assert.deepEqual([...bySlot.keys()].sort(), ['1', '2'], ws.logs());
    const pids = [...bySlot.values()].map((answer) => Number(answer.worker.split('-')[1]));
    assert.notEqual(pids[0], pids[1]);
    assert.ok(!pids.includes(proxy.process.child.pid ?? 0), 'the primary served a request');
  });

  test('metrics sum every worker', async () => {
    const before = await requestsOf(proxy.adminPort, 'a');
    await statuses(proxy.port, '/a/x', 8);

    assert.equal(await requestsOf(proxy.adminPort, 'a'), before + 8);
    const text = await (await fetch(`http://127.0.0.1:${proxy.adminPort}/metrics`)).text();
    assert.match(text, new RegExp(`^loom_proxy_snapshot_version ${version}$`, 'm'));
    assert.match(text, /^loom_proxy_control_plane_connected 1$/m);
    const ready = await readyz(proxy.adminPort);
    assert.equal(ready.status, 200);
    assert.deepEqual((ready.body as { workers?: unknown }).workers, {
      listening: 2,
      configured: 2,
      restarts: 0,
    });
  });

  test('killed worker is replaced', async () => {
    const victim = (await answersBySlot(proxy.port, '/a/x')).get('2');
    assert.ok(victim !== undefined);
    process.kill(Number(victim.worker.split('-')[1]), 'SIGKILL');

    // A connection that node:cluster handed to the killed worker just before it died never
    // gets a response, so these requests give up early.
    await waitFor('a new worker in slot 2', 20_000, async () => {
      const attempts = [1, 2, 3, 4].map(() => get(proxy.port, '/a/x', 1_000).catch(() => NONE));
      const answers = await Promise.all(attempts);
      return answers.some(
        (answer) => answer.worker.startsWith('2-') && answer.worker !== victim.worker,
      );
    });
    assert.equal(countLogLines(proxy.logFile, 'worker exited unexpectedly, restarting'), 1);
    // The replacement got the current snapshot before it listened.
    version = await applyConfig(cp.address, config(upstream.port, ['a', 'b']));
    await waitForAck(cp.address, 'workers', version);
    assert.deepEqual([...(await answersBySlot(proxy.port, '/b/x')).keys()].sort(), ['1', '2']);
  });

  test('SIGTERM drains every worker', async () => {
    const delayedBefore = upstream.delayed();
    const slowRequest = get(proxy.port, '/a/hold/1500').catch((error: Error) => error);
    await waitFor('the upstream to receive the slow request', 10_000, () => {
      return upstream.delayed() > delayedBefore;
    });
    const exited = once(proxy.process.child, 'exit');
    proxy.process.child.kill('SIGTERM');

    const answer = await slowRequest;
    assert.ok(!(answer instanceof Error), `slow request failed: ${String(answer)}`);
    assert.equal(answer.status, 200);
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0);
    const log = readFileSync(proxy.logFile, 'utf8');
    assert.equal(countLogLines(proxy.logFile, 'worker stopped'), 2, log.slice(-2000));
    assert.match(log, /"msg":"proxy stopped"/);
  });
});

describe('proxy workers snapshot agreement', { timeout: 120_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let ws: Workspace;
  let cp: Member;
  let proxy: Member;
  let gate: string;
  let version = 0;

  before(async () => {
    upstream = await startUpstream();
    ws = new Workspace();
    gate = join(ws.dir, 'stage-gate');
    writeFileSync(gate, '');
    cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
    proxy = await startProxy(ws, cp, 'gated', {
      LOOM_FAULT_WORKER: '2',
      LOOM_FAULT_STAGE_GATE: gate,
      LOOM_FAULT_REJECT_ROUTE: 'poison',
    });
    version = await applyConfig(cp.address, config(upstream.port, ['a']));
    await waitForAck(cp.address, 'gated', version);
  });

  after(async () => {
    await ws?.close();
    upstream?.server.close();
  });

  test('ack waits for every worker', async () => {
    rmSync(gate);
    const next = await applyConfig(cp.address, config(upstream.port, ['a', 'b']));
    await waitFor('worker 1 to stage the new version', 20_000, () =>
      readFileSync(proxy.logFile, 'utf8')
        .split('\n')
        .some(
          (line) => line.includes('"msg":"snapshot staged"') && line.includes(`"version":${next}`),
        ),
    );

    // Worker 2 is still staging, so no worker serves the new version and nothing is acked.
    assert.equal((await proxyStatus(cp.address, 'gated'))?.ackedVersion, version);
    assert.deepEqual(await statuses(proxy.port, '/b/x'), [404, 404, 404, 404, 404, 404]);
    assert.equal((await readyz(proxy.adminPort)).body.version, version);

    writeFileSync(gate, '');
    await waitForAck(cp.address, 'gated', next);
    version = next;
    assert.deepEqual([...(await answersBySlot(proxy.port, '/b/x')).keys()].sort(), ['1', '2']);
  });

  test('one worker failure nacks', async () => {
    const poisoned = await applyConfig(cp.address, config(upstream.port, ['a', 'b', 'poison']));
    await waitFor(`a nack of version ${poisoned}`, 20_000, async () => {
      return (await proxyStatus(cp.address, 'gated'))?.nackedVersion === poisoned;
    });

    const status = await proxyStatus(cp.address, 'gated');
    assert.equal(status?.ackedVersion, version);
    assert.match(status?.nackError ?? '', /^worker 2: route "poison" rejected/);
    // Worker 1 staged the version and discarded it, so both still serve the previous one.
    assert.deepEqual(await statuses(proxy.port, '/poison/x'), [404, 404, 404, 404, 404, 404]);
    assert.deepEqual([...(await answersBySlot(proxy.port, '/b/x')).keys()].sort(), ['1', '2']);
    assert.equal((await readyz(proxy.adminPort)).body.version, version);
  });
});

describe('workers flag', () => {
  test('workerCount parses counts', () => {
    assert.equal(workerCount('4'), 4);
    assert.equal(workerCount('1'), 1);
    assert.ok(workerCount('auto') >= 1);
    assert.equal(workerCount('0'), workerCount('auto'));
  });

  test('workerCount rejects bad values', () => {
    for (const value of ['-1', 'two', '1.5', '']) {
      assert.throws(() => workerCount(value), /invalid --workers .*whole number/);
    }
  });
});

/** Reads `loom_proxy_requests_total` of `route` from the admin port, summed over labels. */
async function requestsOf(adminPort: number, route: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`loom_proxy_requests_total{route="${route}"`)) {
      total += Number(line.split(' ').at(-1));
    }
  }
  return total;
}
