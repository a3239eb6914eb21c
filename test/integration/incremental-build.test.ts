import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { loomctl } from '../helpers/cli.js';
import { startFleet, waitForEveryProxy, type Fleet } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';

interface ConfigShape {
  /** Path of the route `moving`. */
  movingPath: string;
  /** Value of the response header that the route `decorated` sets. */
  headerValue: string;
  /** Upstream of the route `kept`. */
  keptUpstream: string;
  /** Port that the upstream `alpha` points at. */
  alphaPort: number;
  /** Whether the route `removable` exists. */
  removable: boolean;
}

function configYaml(shape: ConfigShape, betaPort: number): string {
  return `
apiVersion: loom/v1
upstreams:
  - name: alpha
    targets:
      - url: http://127.0.0.1:${shape.alphaPort}
  - name: beta
    targets:
      - url: http://127.0.0.1:${betaPort}
routes:
  - name: kept
    paths: [/kept/:id]
    upstream: ${shape.keptUpstream}
  - name: moving
    paths: [${shape.movingPath}]
    upstream: alpha
  - name: decorated
    paths: [/decorated]
    upstream: alpha
    responseHeaders:
      set: { x-version: "${shape.headerValue}" }
${shape.removable ? '  - name: removable\n    paths: [/removable]\n    upstream: beta\n' : ''}`;
}

async function upstreamOf(url: string): Promise<string | undefined> {
  const response = await httpGet(url);
  if (response.status !== 200) return undefined;
  return (JSON.parse(response.body) as { upstream: string }).upstream;
}

describe('incremental table builds', { timeout: 120_000, concurrency: 1 }, () => {
  let fleet: Fleet;
  const servers: Server[] = [];
  const ports: Record<string, number> = {};
  let shape: ConfigShape;
  let version = 0;

  /** Applies `shape` and waits until the proxy serves the new version. */
  async function apply(next: Partial<ConfigShape>): Promise<void> {
    shape = { ...shape, ...next };
    const file = join(fleet.dir, 'loom.yaml');
    writeFileSync(file, configYaml(shape, ports.beta));
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--prune']);
    assert.equal(result.code, 0, result.stderr);
    version = Number(/version (\d+)/.exec(result.stdout)?.[1]);
    await waitForEveryProxy(fleet, `version ${version}`, async (proxy) => {
      const metrics = await httpGet(`http://127.0.0.1:${proxy.adminPort}/metrics`);
      return new RegExp(`^loom_proxy_snapshot_version ${version}$`, 'm').test(metrics.body);
    });
  }

  before(async () => {
    for (const name of ['alpha', 'beta', 'gamma']) {
      const server = await startEchoUpstream(0, name);
      servers.push(server);
      ports[name] = (server.address() as AddressInfo).port;
    }
    fleet = await startFleet({ proxies: 1 });
    shape = {
      movingPath: '/moving/old',
      headerValue: '1',
      keptUpstream: 'alpha',
      alphaPort: ports.alpha,
      removable: true,
    };
  });

  after(async () => {
    await fleet?.stop();
    for (const server of servers) server.close();
  });

  test('first apply sets readiness, metrics', async () => {
    await apply({});
    const proxy = fleet.proxies[0];
    const ready = await httpGet(`http://127.0.0.1:${proxy.adminPort}/readyz`);
    const metrics = await httpGet(`http://127.0.0.1:${proxy.adminPort}/metrics`);
    assert.equal(ready.status, 200, ready.body);
    assert.match(metrics.body, /^loom_proxy_snapshot_routes 4$/m);
    // The empty snapshot of a new store, then version 1.
    assert.match(metrics.body, /^loom_proxy_snapshots_total\{result="applied"\} 2$/m);
    assert.match(metrics.body, /^loom_proxy_snapshots_total\{result="rejected"\} 0$/m);
  });

  test('path change swaps one route', async () => {
    const proxy = fleet.proxies[0];
    assert.equal(await upstreamOf(proxy.url('/moving/old')), 'alpha');
    await apply({ movingPath: '/moving/new' });
    assert.equal(await upstreamOf(proxy.url('/moving/new')), 'alpha');
    assert.equal((await httpGet(proxy.url('/moving/old'))).status, 404);
    assert.equal(await upstreamOf(proxy.url('/kept/1')), 'alpha');
    assert.equal(await upstreamOf(proxy.url('/removable')), 'beta');
  });

  test('action-only change rebuilds the route', async () => {
    const proxy = fleet.proxies[0];
    const before = await httpGet(proxy.url('/decorated'));
    assert.equal(before.headers['x-version'], '1');
    await apply({ headerValue: '2' });
    const afterChange = await httpGet(proxy.url('/decorated'));
    assert.equal(afterChange.status, 200);
    assert.equal(afterChange.headers['x-version'], '2');
    assert.equal(await upstreamOf(proxy.url('/kept/2')), 'alpha');
  });

  test('upstream change moves unchanged routes', async () => {
    const proxy = fleet.proxies[0];
    await apply({ keptUpstream: 'beta' });
    assert.equal(await upstreamOf(proxy.url('/kept/3')), 'beta');

    // Only the upstream's target changes; every route keeps its bytes.
    await apply({ alphaPort: ports.gamma });
    assert.equal(await upstreamOf(proxy.url('/moving/new')), 'gamma');
    assert.equal(await upstreamOf(proxy.url('/decorated')), 'gamma');
    assert.equal(await upstreamOf(proxy.url('/kept/4')), 'beta');
  });

  test('removed route drops its metrics', async () => {
    const proxy = fleet.proxies[0];
    const metricsUrl = `http://127.0.0.1:${proxy.adminPort}/metrics`;
    assert.equal(await upstreamOf(proxy.url('/removable')), 'beta');
    assert.match((await httpGet(metricsUrl)).body, /route="removable"/);

    await apply({ removable: false });
    const metrics = await httpGet(metricsUrl);
    assert.equal((await httpGet(proxy.url('/removable'))).status, 404);
    assert.doesNotMatch(metrics.body, /route="removable"/);
    assert.match(metrics.body, /route="kept"/);
    assert.match(metrics.body, /^loom_proxy_snapshot_routes 3$/m);
  });
});
