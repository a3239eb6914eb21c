import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { loomctl } from '../helpers/cli.js';
import { runEtcdctl, startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';
import { fleetStatus } from '../helpers/fleet-status.js';
import { httpGet } from '../helpers/net.js';
import { waitFor } from '../../scripts/processes.js';

const BASELINE = `upstreams:
  - name: users
    targets: [{url: "http://127.0.0.1:9001"}]
routes:
  - name: get-user
    paths: [/users/:id]
    upstream: users
`;

/**
 * Values written with etcdctl that the protocol's integer fields cannot carry, with the
 * reason `loomctl get` prints for each key.
 */
const OUT_OF_RANGE = [
  {
    key: '/loom/routes/huge-timeout',
    value: JSON.stringify({
      name: 'huge-timeout',
      paths: ['/huge'],
      upstream: 'users',
      timeouts: { connectMs: 1e12, responseHeaderMs: 0, idleBodyMs: 0 },
    }),
    reason: '"timeouts.connectMs" must be an integer from 0 to 4294967295 (got 1000000000000)',
  },
  {
    key: '/loom/routes/fractional-retries',
    value: JSON.stringify({ name: 'x', paths: ['/retries'], upstream: 'users', retries: 1.5 }),
    reason: '"retries" must be an integer from 0 to 4294967295 (got 1.5)',
  },
  {
    key: '/loom/upstreams/negative-weight',
    value: JSON.stringify({
      name: 'negative-weight',
      targets: [{ url: 'http://127.0.0.1:9002', weight: -1 }],
    }),
    reason: '"targets[0].weight" must be an integer from 0 to 4294967295 (got -1)',
  },
  {
    key: '/loom/upstreams/string-interval',
    value: JSON.stringify({
      name: 'string-interval',
      targets: [{ url: 'http://127.0.0.1:9003' }],
      healthCheck: { path: '/health', intervalMs: '5s' },
    }),
    reason: '"healthCheck.intervalMs" must be an integer from 0 to 4294967295 (got "5s")',
  },
  {
    key: '/loom/routes/null-value',
    value: 'null',
    reason: 'a stored route must be a JSON object (got null)',
  },
];

describe('stored numbers out of protocol range', { timeout: 90_000 }, () => {
  let etcd: EtcdProcess;
  let fleet: Fleet;

  before(async () => {
    etcd = await startEtcd();
    fleet = await startFleet({ etcd: etcd.endpoint, proxies: 1 });
    const baseline = join(fleet.dir, 'baseline.yaml');
    writeFileSync(baseline, BASELINE);
    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', baseline, '--wait']);
    assert.equal(applied.code, 0, applied.stderr);
    for (const { key, value } of OUT_OF_RANGE) {
      await runEtcdctl([`--endpoints=${etcd.endpoint}`, 'put', key, value]);
    }
  });

  after(async () => {
    await fleet?.stop();
    await etcd?.stop();
  });

  test('control plane keeps publishing', async () => {
    const file = join(fleet.dir, 'extra.yaml');
    writeFileSync(file, 'routes:\n  - name: extra\n    paths: [/extra]\n    upstream: users\n');

    const applied = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--wait']);

    assert.equal(applied.code, 0, `${applied.stderr}\n${fleet.logs()}`);
    assert.match(applied.stdout, /applied by 1 of 1 proxies/);
  });

  test('get names each field to fix', async () => {
    const got = await loomctl(fleet.controlPlane, ['get', 'routes']);

    assert.equal(got.code, 0, got.stderr);
    for (const { key, reason } of OUT_OF_RANGE.filter(({ key }) => key.includes('/routes/'))) {
      assert.ok(
        got.stderr.includes(`stored key "${key}" is not a valid route (${reason})`),
        got.stderr,
      );
    }
    const upstreams = await loomctl(fleet.controlPlane, ['get', 'upstreams']);
    for (const { key, reason } of OUT_OF_RANGE.filter(({ key }) => key.includes('/upstreams/'))) {
      assert.ok(
        upstreams.stderr.includes(`stored key "${key}" is not a valid upstream (${reason})`),
        upstreams.stderr,
      );
    }
  });

  test('null optional field reads as missing', async () => {
    const value = JSON.stringify({
      name: 'null-timeouts',
      paths: ['/null-timeouts'],
      upstream: 'users',
      timeouts: null,
      stripPrefix: null,
    });
    await runEtcdctl([`--endpoints=${etcd.endpoint}`, 'put', '/loom/routes/null-timeouts', value]);

    const got = await loomctl(fleet.controlPlane, ['get', 'route', 'null-timeouts', '-o', 'json']);

    assert.equal(got.code, 0, got.stderr);
    const route = (JSON.parse(got.stdout) as { routes: Record<string, unknown>[] }).routes[0];
    assert.deepEqual(route?.paths, ['/null-timeouts']);
    assert.equal(route?.timeouts, undefined);
    assert.equal(route?.stripPrefix, undefined);
  });

  test('oversized stored pattern is nacked', async () => {
    // Stored form, so the control plane serves it as written and the proxy must bound it.
    const path = '/a'.repeat(20_000);
    const value = JSON.stringify({ name: 'deep', hosts: [], paths: [path], upstream: 'users' });
    await runEtcdctl([`--endpoints=${etcd.endpoint}`, 'put', '/loom/routes/deep', value]);
    try {
      let nackError = '';
      await waitFor('the proxy to nack the deep route', 30_000, async () => {
        const status = await fleetStatus(fleet.controlPlane);
        const proxy = status.proxies[0];
        if (proxy === undefined || proxy.nackedVersion !== status.version) return false;
        nackError = proxy.nackError;
        return true;
      });
      assert.match(nackError, /route "deep": invalid path pattern starting "\/a\/a/);
      assert.match(nackError, /\(40000 characters\): at most 8192 characters are allowed/);
      assert.ok(nackError.length < 1_000, nackError);
      const served = await httpGet(fleet.proxies[0].url('/extra'));
      assert.notEqual(served.status, 404);
    } finally {
      await runEtcdctl([`--endpoints=${etcd.endpoint}`, 'del', '/loom/routes/deep']);
    }
  });
});
