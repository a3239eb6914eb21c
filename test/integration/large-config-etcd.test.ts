import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { waitFor } from '../../scripts/processes.js';
import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { loomctl } from '../helpers/cli.js';
import { startEtcd, type EtcdProcess } from '../helpers/etcd.js';
import { startFleet, waitForEveryProxy, type Fleet } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';

const ROUTES = 100_000;

/**
 * The limits README recommends for large configurations, because etcd's
 * defaults reject this apply. etcd fails a request that it has not applied
 * within 5 s plus two election timeouts, so the longer election timeout gives
 * the 100,000-put transaction 10 s on a loaded machine.
 */
const ETCD_FLAGS = [
  '--max-txn-ops=200000',
  '--max-request-bytes=134217728',
  '--heartbeat-interval=250',
  '--election-timeout=2500',
];

interface PublishedLine {
  version: number;
  routes: number;
  bytes: number;
}

/** Parses the log lines of `logFile` whose message is `message`. */
function logLines<T>(logFile: string, message: string): T[] {
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((line) => line.includes(`"msg":"${message}"`))
    .map((line) => JSON.parse(line) as T);
}

function publishedSnapshots(logFile: string): PublishedLine[] {
  return logLines<PublishedLine>(logFile, 'snapshot published');
}

async function proxyVersion(adminPort: number): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
  const body = (await response.json()) as { version?: number };
  return response.status === 200 ? (body.version ?? 0) : 0;
}

describe('large configuration on etcd', { timeout: 180_000 }, () => {
  let etcd: EtcdProcess;
  let fleet: Fleet;
  let upstream: Server;
  let upstreamPort: number;

  before(async () => {
    upstream = await startEchoUpstream(0, 'bulk');
    upstreamPort = (upstream.address() as AddressInfo).port;
    etcd = await startEtcd({ extraArgs: ETCD_FLAGS });
    fleet = await startFleet({ etcd: etcd.endpoint, proxies: 2 });
  });

  after(async () => {
    await fleet?.stop();
    await etcd?.stop();
    upstream?.close();
  });

  test('100,000 routes apply on etcd', async () => {
    const file = join(fleet.dir, 'large.json');
    writeFileSync(file, largeConfig(upstreamPort, ROUTES));

    const started = Date.now();
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file, '--wait']);
    const applyMs = Date.now() - started;
    assert.equal(result.code, 0, result.stdout + result.stderr + fleet.logs());
    assert.match(result.stdout, /^100000 routes created$/m);
    assert.match(result.stdout, /applied by 2 of 2 proxies/);
    const version = Number(/^version (\d+)$/m.exec(result.stdout)?.[1]);
    const published = publishedSnapshots(join(fleet.dir, 'control-plane.log')).at(-1);
    assert.equal(published?.version, version);
    assert.equal(published?.routes, ROUTES);
    assert.ok(published.bytes > 4 * 1024 * 1024, `snapshot of ${published.bytes} bytes`);
    process.stdout.write(`# etcd: apply of ${ROUTES} routes with --wait took ${applyMs} ms\n`);

    for (const proxy of fleet.proxies) {
      assert.equal(await proxyVersion(proxy.adminPort), version);
      const response = await httpGet(proxy.url(`/r${ROUTES - 1}/42`), {
        host: 'api.example.com',
      });
      assert.equal(response.status, 200, `${proxy.id}: ${response.body}`);
      assert.equal((JSON.parse(response.body) as { url: string }).url, `/r${ROUTES - 1}/42`);
    }
  });

  test('second apply changes one route', async () => {
    const config = JSON.parse(largeConfig(upstreamPort, ROUTES)) as {
      routes: { paths: string[] }[];
    };
    config.routes[0].paths = ['/changed/:id'];
    const file = join(fleet.dir, 'large-changed.json');
    writeFileSync(file, JSON.stringify(config));

    const started = Date.now();
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
    const applyMs = Date.now() - started;
    assert.equal(result.code, 0, result.stdout + result.stderr + fleet.logs());
    // Only the changed route is written: the other stored values show no phantom change.
    const changes = result.stdout
      .split('\n')
      .filter((line) => / (created|configured|deleted)$/.test(line));
    assert.deepEqual(changes, ['route/route-0 configured']);
    process.stdout.write(
      `# etcd: second apply of ${ROUTES} routes, one changed, took ${applyMs} ms\n`,
    );
  });

  test('restarted control plane reads 100,000 keys', async () => {
    const logFile = join(fleet.dir, 'control-plane.log');
    const before = publishedSnapshots(logFile).length;
    await fleet.stopControlPlane();
    const started = Date.now();
    await fleet.startControlPlane();
    await waitFor('snapshot from the initial read', 60_000, () => {
      return publishedSnapshots(logFile).length > before;
    });
    const readMs = Date.now() - started;
    const reread = publishedSnapshots(logFile).at(-1);
    assert.equal(reread?.routes, ROUTES);
    const paged = logLines<{ pages: number }>(logFile, 'range read in pages').at(-1);
    assert.ok((paged?.pages ?? 0) >= 10, `the initial read took ${paged?.pages} pages`);
    process.stdout.write(`# etcd: restart to snapshot of ${ROUTES} keys took ${readMs} ms\n`);

    // The watch that starts after the initial read delivers the next change.
    const file = join(fleet.dir, 'one-more.json');
    writeFileSync(
      file,
      JSON.stringify({
        routes: [{ name: 'late', paths: ['/late/:id'], upstream: 'bulk' }],
      }),
    );
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', file]);
    assert.equal(result.code, 0, result.stdout + result.stderr + fleet.logs());
    const version = Number(/^version (\d+)$/m.exec(result.stdout)?.[1]);
    await waitForEveryProxy(fleet, `version ${version}`, async (proxy) => {
      return (await proxyVersion(proxy.adminPort)) >= version;
    });
    const response = await httpGet(fleet.proxies[0].url('/late/7'));
    assert.equal(response.status, 200, response.body);
  });
});

/** Builds a JSON config of one upstream and `count` routes `/r{i}/:id` on one host. */
function largeConfig(upstreamPort: number, count: number): string {
  const routes = Array.from({ length: count }, (_, index) => ({
    name: `route-${index}`,
    hosts: ['api.example.com'],
    paths: [`/r${index}/:id`],
    upstream: 'bulk',
  }));
  return JSON.stringify({
    apiVersion: 'loom/v1',
    upstreams: [{ name: 'bulk', targets: [{ url: `http://127.0.0.1:${upstreamPort}` }] }],
    routes,
  });
}
