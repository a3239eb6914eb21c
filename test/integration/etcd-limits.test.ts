import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';

describe('apply beyond etcd limits', { timeout: 60_000 }, () => {
  let etcd: EtcdProcess;
  let fleet: Fleet;

  before(async () => {
    etcd = await startEtcd();
    fleet = await startFleet({ etcd: etcd.endpoint, proxies: 0 });
  });

  after(async () => {
    await fleet?.stop();
    await etcd?.stop();
  });

  test('too many resources names the limit', async () => {
    const routes = Array.from(
      { length: 200 },
      (_, index) => `  - {name: r${index}, paths: [/r${index}], upstream: u}`,
    );
    const file = join(fleet.dir, 'many.yaml');
    writeFileSync(
      file,
      `upstreams:\n  - {name: u, targets: [{url: "http://127.0.0.1:9"}]}\nroutes:\n${routes.join('\n')}\n`,
    );

    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
    const stored = await loomctl(fleet.controlPlane, ['get', '-o', 'json']);

    assert.equal(result.code, 1, result.stdout);
    assert.match(result.stderr, /--max-txn-ops/);
    assert.deepEqual((JSON.parse(stored.stdout) as { routes: unknown[] }).routes, []);
  });
});
