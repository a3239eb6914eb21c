import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startLoom, waitFor, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { httpGet } from '../helpers/net.js';
import { findFreePort } from '../helpers/ports.js';

// One proxy per mode: a single process, and a primary with workers. Both serve the admin
// paths from the same module, so their responses must match. No control plane listens on the
// address they dial, so they stay without a table. The single process runs with the default
// --escaped-slashes and the primary with reject.
for (const workers of [1, 2]) {
  const escapedSlashes = workers === 1 ? 'keep' : 'reject';
  describe(`proxy admin paths, ${workers} worker(s)`, { timeout: 60_000 }, () => {
    let dir: string;
    let proxy: LoomProcess;
    let adminPort: number;
    const admin = (path: string) => httpGet(`http://127.0.0.1:${adminPort}${path}`);

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'loom-proxy-admin-'));
      const [trafficPort, deadPort] = [await findFreePort(), await findFreePort()];
      adminPort = await findFreePort();
      proxy = startLoom(
        'proxy',
        [
          'data-plane',
          '--control-plane',
          `127.0.0.1:${deadPort}`,
          '--listen',
          `127.0.0.1:${trafficPort}`,
          '--admin-listen',
          `127.0.0.1:${adminPort}`,
          '--workers',
          String(workers),
          ...(workers === 1 ? [] : ['--escaped-slashes', 'REJECT']),
        ],
        join(dir, 'proxy.log'),
      );
      await waitForPort('127.0.0.1', adminPort);
    });
    after(async () => {
      await proxy.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    test('healthz returns ok', async () => {
      const response = await admin('/healthz?probe=1');
      assert.equal(response.status, 200);
      assert.equal(response.headers['content-type'], 'application/json');
      assert.deepEqual(JSON.parse(response.body), { status: 'ok' });
    });

    test('readyz without a table', async () => {
      const response = await admin('/readyz');
      assert.equal(response.status, 503);
      assert.equal((JSON.parse(response.body) as { status: string }).status, 'not_ready');
    });

    test('readyz names escaped-slash action', async () => {
      const response = await admin('/readyz');
      const body = JSON.parse(response.body) as { escapedSlashes?: string };
      assert.equal(body.escapedSlashes, escapedSlashes);

      const log = join(dir, 'proxy.log');
      await waitFor('the proxy listening line', 15_000, () =>
        readFileSync(log, 'utf8').includes('"msg":"proxy listening"'),
      );
      const line = readFileSync(log, 'utf8')
        .split('\n')
        .find((text) => text.includes('"msg":"proxy listening"'));
      assert.equal(
        (JSON.parse(line ?? '{}') as { escapedSlashes?: string }).escapedSlashes,
        escapedSlashes,
      );
    });

    test('metrics in text format', async () => {
      // With workers, the primary collects their metrics, which needs them running.
      await waitFor('metrics of a running proxy', 15_000, async () => {
        const response = await admin('/metrics');
        return response.status === 200 && /loom_proxy_requests_total/.test(response.body);
      });
      const response = await admin('/metrics');
      assert.match(String(response.headers['content-type']), /^text\/plain/);
    });

    test('unknown path lists paths', async () => {
      const response = await admin('/nope');
      assert.equal(response.status, 404);
      assert.deepEqual(JSON.parse(response.body), {
        error: 'not_found',
        message: 'admin paths: /healthz, /readyz, /metrics',
      });
    });
  });
}
