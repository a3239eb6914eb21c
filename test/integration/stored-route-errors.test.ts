import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { Etcd3 } from 'etcd3';

import { loomctl } from '../helpers/cli.js';
import { runEtcdctl, type EtcdProcess } from '../helpers/etcd.js';
import { startEtcdFleet, type EtcdBackedFleet } from '../helpers/etcd-fleet.js';
import type { Fleet } from '../helpers/fleet.js';

const BASELINE = `upstreams:
  - name: users
    targets: [{url: "http://127.0.0.1:9001"}]
  - name: u-b
    targets: [{url: "http://127.0.0.1:9002"}]
routes:
  - name: get-user
    paths: [/users/:id]
    upstream: users
`;

/** A route that names no stored upstream, written with etcdctl, which skips the control plane's checks. */
const ORPHAN = '{"name":"orphan","hosts":[],"paths":["/orphan"],"methods":[],"upstream":"missing"}';

describe('broken route written to etcd', { timeout: 60_000 }, () => {
  let setup: EtcdBackedFleet;
  let etcd: EtcdProcess;
  let client: Etcd3;
  let fleet: Fleet;

  before(async () => {
    setup = await startEtcdFleet({ proxies: 0 });
    ({ etcd, client, fleet } = setup);
    const baseline = join(fleet.dir, 'baseline.yaml');
    writeFileSync(baseline, BASELINE);
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', baseline]);
    assert.equal(applied.code, 0, applied.stderr);
    await runEtcdctl([`--endpoints=${etcd.endpoint}`, 'put', '/loom/routes/orphan', ORPHAN]);
  });

  after(async () => {
    await setup?.stop();
  });

  async function storedConfig(): Promise<string> {
    const got = await loomctl(fleet.controlPlane, ['get', '-o', 'json']);
    assert.equal(got.code, 0, got.stderr);
    return got.stdout;
  }

  test('unrelated apply names the stored route', async () => {
    const storedBefore = await storedConfig();
    const revision = (await client.get('/loom/routes/orphan').exec()).header.revision;
    const file = join(fleet.dir, 'extra.yaml');
    writeFileSync(file, 'routes:\n  - name: extra\n    paths: [/extra]\n    upstream: users\n');

    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file]);

    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: invalid configuration, nothing was written:$/m);
    const issues = result.stderr.split('\n').filter((line) => line.startsWith('  '));
    assert.deepEqual(issues, [
      '  route "orphan" upstream: this route is stored but not in the applied files: ' +
        'unknown upstream; upstreams in the files or the store: u-b, users. ' +
        'To fix it, run "loomctl delete route orphan", add upstream "missing", ' +
        'or include route "orphan" with a declared upstream in the files (got "missing")',
    ]);
    assert.equal(await storedConfig(), storedBefore);
    assert.equal((await client.get('/loom/routes/orphan').exec()).header.revision, revision);
    assert.equal(await client.get('/loom/routes/extra').string(), null);
  });

  test('deleting the stored route unblocks apply', async () => {
    const deleted = await loomctl(fleet.controlPlane, ['delete', 'route', 'orphan']);
    assert.equal(deleted.code, 0, deleted.stderr);
    const file = join(fleet.dir, 'extra.yaml');
    writeFileSync(file, 'routes:\n  - name: extra\n    paths: [/extra]\n    upstream: users\n');

    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file]);

    assert.equal(result.code, 0, result.stderr);
    assert.notEqual(await client.get('/loom/routes/extra').string(), null);
  });
});
