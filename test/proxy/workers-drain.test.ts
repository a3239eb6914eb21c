import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { parseConfigTexts } from '../../config/load.js';
import { waitFor } from '../../scripts/processes.js';
import { applyConfig, countLogLines, Workspace, type Member } from '../faults/harness.js';
import {
  openRawClient,
  startHttpServer,
  waitForText,
  within,
  type RunningServer,
} from './harness.js';
import { waitForAck } from './workers-harness.js';

const KEEP_ALIVE_GET = 'GET /a/x HTTP/1.1\r\nHost: a\r\n\r\n';

/** Returns the value of `x-loom-worker` in a raw response, such as `2-4242`. */
function workerOf(response: string): string {
  return /\r\nx-loom-worker: ([^\r]+)\r\n/i.exec(response)?.[1] ?? '';
}

describe('worker drain under keep-alive', { timeout: 120_000 }, () => {
  let upstream: RunningServer;
  let ws: Workspace;
  let cp: Member;
  let proxy: Member;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      req.resume();
      res.end('ok');
    });
    ws = new Workspace();
    cp = await ws.controlPlane('cp', ['--data-dir', join(ws.dir, 'store')]);
    // The grace period is long, so that the request below reaches the draining worker before
    // the idle connection closes, however slow the machine.
    proxy = await ws.proxy(
      'drain',
      [cp.address],
      ['--workers', '2', '--drain-timeout', '60s', '--drain-idle-grace', '30s'],
      { LOOM_TEST_WORKER_HEADER: '1' },
    );
    const config = parseConfigTexts([
      {
        file: 'drain.yaml',
        text: [
          'upstreams:',
          `  - {name: up, targets: [{url: 'http://127.0.0.1:${upstream.port}'}]}`,
          'routes:',
          "  - {name: a, paths: ['/a/*rest'], upstream: up}",
        ].join('\n'),
      },
    ]);
    const version = await applyConfig(cp.address, config);
    await waitForAck(cp.address, 'drain', version);
  });

  after(async () => {
    await ws?.close();
    await upstream?.close();
  });

  test('request on idle connection after SIGTERM', async () => {
    const client = openRawClient(proxy.port, KEEP_ALIVE_GET);
    await waitForText(client.text, /\r\n\r\nok$/);
    const worker = workerOf(client.text());
    assert.match(worker, /^\d+-\d+$/, client.text());

    process.kill(Number(worker.split('-')[1]), 'SIGTERM');
    await waitFor('the worker to start draining', 30_000, () => {
      return countLogLines(proxy.logFile, 'drain started') >= 1;
    });
    client.socket.write(KEEP_ALIVE_GET);
    await within(client.closed, 'the worker to close the connection', 30_000);

    const responses = client.text().split('HTTP/1.1 ').slice(1);
    assert.equal(responses.length, 2, client.text());
    assert.match(responses[1], /^200 OK\r\n/);
    assert.match(responses[1], /\r\nconnection: close\r\n/i);
    assert.equal(workerOf('\r\n' + responses[1]), worker);
    assert.equal(client.error(), undefined);
  });
});
