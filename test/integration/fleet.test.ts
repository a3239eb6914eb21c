import assert from 'node:assert/strict';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, waitForEveryProxy, type Fleet } from '../helpers/fleet.js';
import { fleetStatus } from '../helpers/fleet-status.js';
import { httpGet, httpRequest } from '../helpers/net.js';
import { findFreePort } from '../helpers/ports.js';
import { startLoom, waitFor, waitForPort } from '../../scripts/processes.js';
import { Etcd3 } from 'etcd3';

function configYaml(options: {
  usersUpstream: string;
  extraRoute?: boolean;
  ports: Record<string, number>;
}): string {
  return `
apiVersion: loom/v1
upstreams:
  - name: alpha
    targets:
      - url: http://127.0.0.1:${options.ports.alpha}
  - name: beta
    targets:
      - url: http://127.0.0.1:${options.ports.beta}
routes:
  - name: get-user
    hosts: [api.example.com]
    paths: [/users/:id]
    methods: [GET]
    upstream: ${options.usersUpstream}
  - name: catch-all
    paths: [/files/*rest]
    upstream: alpha
${
  options.extraRoute
    ? `  - name: orders
    paths: [/orders/:id]
    upstream: beta
`
    : ''
}`;
}

async function upstreamOf(url: string, host?: string): Promise<string | undefined> {
  const response = await httpGet(url, host ? { host } : {});
  if (response.status !== 200) return undefined;
  return (JSON.parse(response.body) as { upstream: string }).upstream;
}

for (const storeKind of ['etcd', 'embedded'] as const) {
  describe(`fleet on the ${storeKind} store`, { timeout: 120_000, concurrency: 1 }, () => {
    let etcd: EtcdProcess | undefined;
    let fleet: Fleet;
    const upstreams: Server[] = [];
    const ports: Record<string, number> = {};
    let configFile: string;

    before(async () => {
      for (const name of ['alpha', 'beta']) {
        const server = await startEchoUpstream(0, name);
        upstreams.push(server);
        ports[name] = (server.address() as AddressInfo).port;
      }
      if (storeKind === 'etcd') etcd = await startEtcd();
      fleet = await startFleet({ etcd: etcd?.endpoint, proxies: 2 });
      configFile = join(fleet.dir, 'loom.yaml');
    });

    after(async () => {
      await fleet?.stop();
      await etcd?.stop();
      for (const server of upstreams) server.close();
    });

    test('proxy without a control plane is not ready', async () => {
      const [port, adminPort, deadPort] = [
        await findFreePort(),
        await findFreePort(),
        await findFreePort(),
      ];
      const proxy = startLoom(
        'lonely',
        [
          'data-plane',
          '--control-plane',
          `127.0.0.1:${deadPort}`,
          '--listen',
          `127.0.0.1:${port}`,
          '--admin-listen',
          `127.0.0.1:${adminPort}`,
        ],
        join(fleet.dir, 'lonely.log'),
      );
      try {
        await waitForPort('127.0.0.1', adminPort);
        const ready = await httpGet(`http://127.0.0.1:${adminPort}/readyz`);
        const healthy = await httpGet(`http://127.0.0.1:${adminPort}/healthz`);
        const traffic = await httpGet(`http://127.0.0.1:${port}/users/1`);
        assert.equal(ready.status, 503);
        assert.equal(healthy.status, 200);
        assert.equal(traffic.status, 503);
      } finally {
        assert.equal(await proxy.stop(), 0);
      }
    });

    test('apply reaches both proxies', async () => {
      writeFileSync(configFile, configYaml({ usersUpstream: 'alpha', ports }));
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', configFile]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /route\/get-user created/);
      assert.match(result.stdout, /upstream\/alpha created/);

      await waitForEveryProxy(fleet, 'ready', async (proxy) => {
        const ready = await httpGet(`http://127.0.0.1:${proxy.adminPort}/readyz`);
        return ready.status === 200;
      });
      for (const proxy of fleet.proxies) {
        const response = await httpGet(proxy.url('/users/42?full=1'), { host: 'api.example.com' });
        assert.equal(response.status, 200, fleet.logs());
        const echoed = JSON.parse(response.body) as {
          upstream: string;
          url: string;
          headers: Record<string, string>;
        };
        assert.equal(echoed.upstream, 'alpha');
        assert.equal(echoed.url, '/users/42?full=1');
        assert.equal(echoed.headers['x-forwarded-host'], 'api.example.com');
        assert.equal(echoed.headers['x-forwarded-proto'], 'http');
        assert.match(echoed.headers['x-forwarded-for'] ?? '', /127\.0\.0\.1/);
      }
    });

    test('unmatched requests get JSON errors', async () => {
      const proxy = fleet.proxies[0];
      const notFound = await httpGet(proxy.url('/nothing-here'));
      assert.equal(notFound.status, 404);
      assert.match(notFound.headers['content-type'] as string, /application\/json/);
      const otherHost = await httpGet(proxy.url('/users/42'), { host: 'other.example.com' });
      assert.equal(otherHost.status, 404);
      const wrongMethod = await httpRequest('DELETE', proxy.url('/users/42'), {
        host: 'api.example.com',
      });
      assert.equal(wrongMethod.status, 405);
      assert.equal(wrongMethod.headers.allow, 'GET, HEAD');
    });

    test('second identical apply changes nothing', async () => {
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', configFile]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /no changes/);
    });

    test('partial file uses a stored upstream', async () => {
      const partial = join(fleet.dir, 'partial.yaml');
      writeFileSync(
        partial,
        'routes:\n  - name: partial\n    paths: [/partial]\n    upstream: alpha\n',
      );
      const applied = await loomctl(fleet.controlPlane, ['apply', '-f', partial]);
      assert.equal(applied.code, 0, applied.stderr);
      assert.match(applied.stdout, /route\/partial created/);
      assert.match(applied.stderr, /not declared in these files/);

      const pruned = await loomctl(fleet.controlPlane, [
        'apply',
        '-f',
        partial,
        '--prune',
        '--dry-run',
      ]);
      assert.equal(pruned.code, 1);
      assert.match(pruned.stderr, /partial\.yaml:4: route "partial" upstream: unknown upstream/);

      const missing = join(fleet.dir, 'missing.yaml');
      writeFileSync(
        missing,
        'routes:\n  - name: lost\n    paths: [/lost]\n    upstream: nowhere\n',
      );
      const rejected = await loomctl(fleet.controlPlane, ['apply', '-f', missing]);
      assert.equal(rejected.code, 1);
      assert.match(rejected.stderr, /route "lost" upstream: unknown upstream/);

      const deleted = await loomctl(fleet.controlPlane, ['delete', 'route', 'partial']);
      assert.equal(deleted.code, 0, deleted.stderr);
    });

    test('get output applies back unchanged', async () => {
      const got = await loomctl(fleet.controlPlane, ['get']);
      const file = join(fleet.dir, 'exported.yaml');
      writeFileSync(file, got.stdout);
      const applied = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
      assert.equal(applied.code, 0, applied.stderr);
      assert.match(applied.stdout, /no changes/);
    });

    test('invalid config is rejected and nothing is written', async () => {
      const before = await loomctl(fleet.controlPlane, ['get', '-o', 'json']);
      const badFile = join(fleet.dir, 'bad.yaml');
      writeFileSync(
        badFile,
        'upstreams:\n  - name: gamma\n    targets:\n      - url: ftp://nowhere\nroutes:\n  - name: broken\n    paths: [users/:id]\n    upstream: gamma\n',
      );
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', badFile]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /bad\.yaml:4: upstream "gamma" targets\[0\]\.url/);
      assert.match(result.stderr, /ftp:\/\/nowhere/);
      assert.match(result.stderr, /bad\.yaml:7: route "broken" paths\[0\]: .*"users\/:id"/);
      const afterGet = await loomctl(fleet.controlPlane, ['get', '-o', 'json']);
      assert.equal(afterGet.stdout, before.stdout);
    });

    test('config change reaches both proxies', async () => {
      writeFileSync(configFile, configYaml({ usersUpstream: 'beta', extraRoute: true, ports }));
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', configFile]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /route\/get-user configured/);
      assert.match(result.stdout, /route\/orders created/);

      await waitForEveryProxy(fleet, 'serves the new routes', async (proxy) => {
        const users = await upstreamOf(proxy.url('/users/7'), 'api.example.com');
        const orders = await upstreamOf(proxy.url('/orders/9'));
        return users === 'beta' && orders === 'beta';
      });
    });

    test(
      'snapshot a proxy cannot build is nacked',
      { skip: storeKind !== 'etcd' && 'needs a store that other tools can write to' },
      async () => {
        // A write straight into etcd bypasses loomctl's validation; proxies must reject it, not crash.
        const client = new Etcd3({ hosts: etcd!.endpoint });
        try {
          await client.put('/loom/routes/shadow').value(
            JSON.stringify({
              name: 'shadow',
              hosts: ['api.example.com'],
              paths: ['/users/:name'],
              methods: ['GET'],
              upstream: 'alpha',
            }),
          );
          let status:
            | {
                version: number;
                proxies: {
                  id: string;
                  ackedVersion: number;
                  nackedVersion: number;
                  nackError: string;
                }[];
              }
            | undefined;
          await waitFor('both proxies to nack', 15_000, async () => {
            status = await fleetStatus(fleet.controlPlane);
            return status!.proxies.every((proxy) => proxy.nackedVersion === status!.version);
          });
          for (const proxy of status!.proxies) {
            assert.match(proxy.nackError, /shadow/);
            assert.ok(proxy.ackedVersion < status!.version);
          }
          const table = await loomctl(fleet.controlPlane, ['status']);
          assert.match(table.stdout, /proxy-1 .* yes .*: .*shadow/);
          for (const proxy of fleet.proxies) {
            assert.equal(await upstreamOf(proxy.url('/users/7'), 'api.example.com'), 'beta');
          }

          await client.delete().key('/loom/routes/shadow');
          await waitFor('both proxies to ack the repaired version', 15_000, async () => {
            const repaired = await fleetStatus(fleet.controlPlane);
            return repaired.proxies.every((proxy) => proxy.ackedVersion === repaired.version);
          });
        } finally {
          client.close();
        }
      },
    );

    test('stop ends every proxy stream', async () => {
      await fleet.stopControlPlane();
      const reason = 'snapshot stream closed because the control plane is shutting down';
      const disconnects = readFileSync(join(fleet.dir, 'control-plane.log'), 'utf8')
        .split('\n')
        .filter((line) => line.includes('"msg":"proxy disconnected"'));
      for (const proxy of fleet.proxies) {
        const line = disconnects.find((entry) => entry.includes(`"proxyId":"${proxy.id}"`));
        assert.match(line ?? '', /"reason":"closed because the control plane is shutting down"/);
        const proxyLog = join(fleet.dir, `${proxy.id}.log`);
        await waitFor(`${proxy.id} to log the end of its stream`, 5_000, () =>
          readFileSync(proxyLog, 'utf8').includes(`UNAVAILABLE: ${reason}`),
        );
      }
    });

    test('proxies keep serving without the control plane', async () => {
      for (let round = 0; round < 5; round++) {
        for (const proxy of fleet.proxies) {
          assert.equal(await upstreamOf(proxy.url('/orders/1')), 'beta', fleet.logs());
          assert.equal(await upstreamOf(proxy.url('/files/a/b.txt')), 'alpha');
        }
      }
    });

    test('proxies reconnect and catch up after restart', async () => {
      await fleet.startControlPlane();
      writeFileSync(configFile, configYaml({ usersUpstream: 'alpha', extraRoute: true, ports }));
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', configFile]);
      assert.equal(result.code, 0, result.stderr);

      await waitForEveryProxy(
        fleet,
        'serves the change made after the restart',
        async (proxy) => (await upstreamOf(proxy.url('/users/1'), 'api.example.com')) === 'alpha',
        30_000,
      );
    });

    test('get and delete route', async () => {
      const got = await loomctl(fleet.controlPlane, ['get', '-o', 'json']);
      assert.equal(got.code, 0, got.stderr);
      const config = JSON.parse(got.stdout) as { routes: { name: string }[]; version: number };
      assert.deepEqual(
        config.routes.map((route) => route.name),
        ['catch-all', 'get-user', 'orders'],
      );
      const yaml = await loomctl(fleet.controlPlane, ['get']);
      assert.match(yaml.stdout, /name: get-user/);

      const deleted = await loomctl(fleet.controlPlane, ['delete', 'route', 'orders']);
      assert.equal(deleted.code, 0, deleted.stderr);
      assert.match(deleted.stdout, /route\/orders deleted/);
      await waitForEveryProxy(fleet, 'drops the deleted route', async (proxy) => {
        const response = await httpGet(proxy.url('/orders/1'));
        return response.status === 404;
      });

      const missing = await loomctl(fleet.controlPlane, ['delete', 'route', 'orders']);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /route "orders" not found/);
    });

    test('upstream in use cannot be deleted', async () => {
      const result = await loomctl(fleet.controlPlane, ['delete', 'upstream', 'alpha']);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /used by route\(s\) "catch-all", "get-user"/);
    });
  });
}
