import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startLoom, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { findFreePort } from '../helpers/ports.js';

describe('apply over the message size limit', { timeout: 60_000 }, () => {
  let dir: string;
  let controlPlane: string;
  let server: LoomProcess;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-message-size-'));
    const port = await findFreePort();
    controlPlane = `127.0.0.1:${port}`;
    server = startLoom(
      'control-plane',
      [
        'control-plane',
        '--listen',
        controlPlane,
        '--admin-listen',
        `127.0.0.1:${await findFreePort()}`,
        '--data-dir',
        join(dir, 'store'),
        '--max-message-bytes',
        '100000',
      ],
      join(dir, 'control-plane.log'),
    );
    await waitForPort('127.0.0.1', port);
  });

  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('error names both limits and the fix', async () => {
    const routes = Array.from(
      { length: 5_000 },
      (_, index) => `  - {name: r${index}, paths: [/r/${index}], upstream: users}`,
    );
    const file = join(dir, 'large.yaml');
    writeFileSync(
      file,
      [
        'upstreams:',
        '  - {name: users, targets: [{url: "http://127.0.0.1:9001"}]}',
        'routes:',
        ...routes,
      ].join('\n'),
    );
    const result = await loomctl(controlPlane, ['apply', '-f', file]);
    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      /^error: a gRPC message of \d+ bytes is over the limit of 100000 bytes \(the control plane's --max-message-bytes, or loomctl's 268435456 bytes\); apply the configuration in smaller parts, or raise --max-message-bytes of "loom control-plane"\n$/,
    );
    const stored = await loomctl(controlPlane, ['get', '-o', 'json']);
    assert.equal(stored.code, 0, stored.stderr);
    assert.deepEqual(JSON.parse(stored.stdout).routes, []);
  });
});
