import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { startLoom, waitFor, waitForPort, type LoomProcess } from '../../scripts/processes.js';
import { loomctl } from '../helpers/cli.js';
import { startControlPlaneProcess } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';
import { findFreePort } from '../helpers/ports.js';
import { parseExposition, sampleValue, scrape, type MetricFamily } from './exposition.js';
import { checkGrpcHealth } from './grpc-health.js';

function configYaml(upstreamPort: number, extraRoutes: string[] = []): string {
  const extra = extraRoutes.map(
    (name) => `  - name: ${name}\n    paths: [/${name}/:id]\n    upstream: users\n`,
  );
  return `
upstreams:
  - name: users
    targets:
      - url: http://127.0.0.1:${upstreamPort}
routes:
  - name: get-user
    paths: [/users/:id]
    methods: [GET]
    upstream: users
${extra.join('')}`;
}

describe('metrics and health of a running fleet', { timeout: 60_000, concurrency: 1 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'loom-operations-'));
  const accessLogFile = join(dir, 'access.log');
  const processes: LoomProcess[] = [];
  let upstream: Server;
  let controlPlane: string;
  let cpAdmin: string;
  let proxyUrl: string;
  let proxyAdmin: string;
  let version = 0;
  let upstreamPort = 0;

  const logs = () =>
    ['control-plane.log', 'proxy.log']
      .map((file) => `--- ${file}\n${readLog(join(dir, file))}`)
      .join('\n');

  before(async () => {
    let cpPort: number, cpAdminPort: number, proxyPort: number, proxyAdminPort: number;
    [upstreamPort, cpPort, cpAdminPort, proxyPort, proxyAdminPort] = await Promise.all(
      [1, 2, 3, 4, 5].map(() => findFreePort()),
    );
    upstream = await startEchoUpstream(upstreamPort, 'users');
    controlPlane = `127.0.0.1:${cpPort}`;
    cpAdmin = `http://127.0.0.1:${cpAdminPort}`;
    proxyUrl = `http://127.0.0.1:${proxyPort}`;
    proxyAdmin = `http://127.0.0.1:${proxyAdminPort}`;
    writeFileSync(join(dir, 'config.yaml'), configYaml(upstreamPort));

    processes.push(
      startControlPlaneProcess(dir, {
        listen: controlPlane,
        adminListen: `127.0.0.1:${cpAdminPort}`,
      }),
    );
    await waitForPort('127.0.0.1', cpAdminPort);
    processes.push(
      startLoom(
        'proxy',
        [
          'data-plane',
          '--control-plane',
          controlPlane,
          '--listen',
          `127.0.0.1:${proxyPort}`,
          '--admin-listen',
          `127.0.0.1:${proxyAdminPort}`,
          '--id',
          'proxy-1',
          '--access-log',
          accessLogFile,
        ],
        join(dir, 'proxy.log'),
      ),
    );
    await waitFor('the proxy to be ready', 15_000, async () => {
      return (await httpGet(`${proxyAdmin}/readyz`)).status === 200;
    });
  });

  after(async () => {
    await Promise.all(processes.map((child) => child.stop()));
    upstream?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('control plane health endpoints', async () => {
    const health = await httpGet(`${cpAdmin}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(JSON.parse(health.body), { status: 'ok' });

    const ready = await httpGet(`${cpAdmin}/readyz`);
    assert.equal(ready.status, 200, ready.body);
    assert.equal((JSON.parse(ready.body) as { status: string }).status, 'ready');

    const missing = await httpGet(`${cpAdmin}/nope`);
    assert.equal(missing.status, 404);
  });

  test('grpc health reports serving', async () => {
    await waitFor('gRPC health to report SERVING', 10_000, async () => {
      return (await checkGrpcHealth(controlPlane)) === 'SERVING';
    });
    assert.equal(await checkGrpcHealth(controlPlane, 'loom.v1.SnapshotService'), 'SERVING');
    assert.equal(await checkGrpcHealth(controlPlane, 'loom.v1.AdminService'), 'SERVING');
    assert.equal(await checkGrpcHealth(controlPlane, 'no.such.Service'), 'NOT_FOUND');
  });

  test('apply moves control plane metrics', async () => {
    const before = await scrape(`${cpAdmin}/metrics`);
    const publishedBefore = sampleValue(before, 'loom_control_plane_snapshots_published_total');
    assert.equal(sampleValue(before, 'loom_control_plane_connected_proxies'), 1);

    const applied = await loomctl(controlPlane, ['apply', '-f', join(dir, 'config.yaml')]);
    assert.equal(applied.code, 0, applied.stderr);
    version = Number(/version (\d+)/.exec(applied.stdout)?.[1]);
    assert.ok(version > 0, applied.stdout);

    let families: Map<string, MetricFamily> = new Map();
    await waitFor(`an ack of version ${version} in the metrics`, 15_000, async () => {
      families = await scrape(`${cpAdmin}/metrics`);
      const acks = sampleValue(families, 'loom_control_plane_acks_total', {
        version: String(version),
      });
      return acks === 1;
    });
    assert.equal(families.get('loom_control_plane_acks_total')?.type, 'counter');
    assert.equal(sampleValue(families, 'loom_control_plane_snapshot_version'), version);
    assert.equal(sampleValue(families, 'loom_control_plane_proxies_current'), 1);
    assert.equal(
      sampleValue(families, 'loom_control_plane_applies_total', { result: 'committed' }),
      1,
    );
    assert.equal(
      sampleValue(families, 'loom_control_plane_snapshots_published_total'),
      (publishedBefore ?? 0) + 1,
    );
    assert.ok((sampleValue(families, 'loom_control_plane_snapshot_encoded_bytes') ?? 0) > 0);
    assert.ok((sampleValue(families, 'loom_control_plane_snapshot_build_seconds_count') ?? 0) > 0);
    assert.equal(sampleValue(families, 'loom_control_plane_store_up'), 1);
  });

  test('failed apply counts its code', async () => {
    const first = version;
    writeFileSync(join(dir, 'more.yaml'), configYaml(upstreamPort, ['get-order']));
    const second = await loomctl(controlPlane, ['apply', '-f', join(dir, 'more.yaml')]);
    assert.equal(second.code, 0, second.stderr);
    version = Number(/version (\d+)/.exec(second.stdout)?.[1]);

    writeFileSync(join(dir, 'stale.yaml'), configYaml(upstreamPort, ['get-order', 'get-item']));
    const stale = await loomctl(controlPlane, [
      'apply',
      '-f',
      join(dir, 'stale.yaml'),
      '--if-version',
      String(first),
    ]);
    assert.notEqual(stale.code, 0, stale.stdout);

    const families = await scrape(`${cpAdmin}/metrics`);
    assert.equal(
      sampleValue(families, 'loom_control_plane_applies_total', { result: 'committed' }),
      2,
    );
    assert.equal(sampleValue(families, 'loom_control_plane_applies_total', { result: 'error' }), 1);
    assert.equal(
      sampleValue(families, 'loom_control_plane_apply_errors_total', {
        code: 'LOOM_VERSION_CONFLICT',
      }),
      1,
    );
  });

  test('diff counts as dry run', async () => {
    const before = await scrape(`${cpAdmin}/metrics`);
    const dryRunsBefore =
      sampleValue(before, 'loom_control_plane_applies_total', { result: 'dry_run' }) ?? 0;
    const committedBefore = sampleValue(before, 'loom_control_plane_applies_total', {
      result: 'committed',
    });

    const diff = await loomctl(controlPlane, ['diff', '-f', join(dir, 'stale.yaml')]);
    assert.equal(diff.code, 2, diff.stderr);

    const families = await scrape(`${cpAdmin}/metrics`);
    assert.equal(
      sampleValue(families, 'loom_control_plane_applies_total', { result: 'dry_run' }),
      dryRunsBefore + 1,
    );
    assert.equal(
      sampleValue(families, 'loom_control_plane_applies_total', { result: 'committed' }),
      committedBefore,
    );
  });

  test('proxy metrics after a request', async () => {
    await waitFor(`the proxy to serve version ${version}`, 15_000, async () => {
      const families = await scrape(`${proxyAdmin}/metrics`);
      return sampleValue(families, 'loom_proxy_snapshot_version') === version;
    });
    const response = await httpGet(`${proxyUrl}/users/42?token=secret`);
    assert.equal(response.status, 200, `${response.body}\n${logs()}`);

    const families = await scrape(`${proxyAdmin}/metrics`);
    assert.equal(sampleValue(families, 'loom_proxy_snapshot_routes'), 2);
    assert.equal(sampleValue(families, 'loom_proxy_control_plane_connected'), 1);
    assert.ok((sampleValue(families, 'loom_proxy_connections_total') ?? 0) >= 1);
    assert.ok((sampleValue(families, 'loom_proxy_routing_tables_alive') ?? 0) >= 1);
    assert.equal(
      sampleValue(families, 'loom_proxy_snapshots_total', { result: 'applied' }),
      sampleValue(families, 'loom_proxy_snapshot_apply_seconds_count'),
    );
    assert.equal(
      sampleValue(families, 'loom_proxy_target_healthy', {
        upstream: 'users',
        target: `http://127.0.0.1:${(upstream.address() as { port: number }).port}`,
      }),
      1,
    );

    assert.equal(families.get('loom_proxy_requests_total')?.type, 'counter');
    assert.equal(
      sampleValue(families, 'loom_proxy_requests_total', {
        route: 'get-user',
        method: 'GET',
        status_class: '2xx',
      }),
      1,
    );
    assert.equal(
      sampleValue(families, 'loom_proxy_request_duration_seconds_count', { route: 'get-user' }),
      1,
    );
    assert.equal(
      sampleValue(families, 'loom_proxy_upstream_request_duration_seconds_count', {
        upstream: 'users',
      }),
      1,
    );
  });

  test('proxy admin endpoints', async () => {
    assert.equal((await httpGet(`${proxyAdmin}/healthz`)).status, 200);
    const ready = await httpGet(`${proxyAdmin}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal((JSON.parse(ready.body) as { version: number }).version, version);
    const metrics = await httpGet(`${proxyAdmin}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(String(metrics.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    assert.ok(parseExposition(metrics.body).has('nodejs_heap_size_used_bytes'));
  });

  test('access log file from the flag', async () => {
    assert.ok(existsSync(accessLogFile), 'the proxy creates the access log file at start');
    // Lines are written asynchronously; give the proxy a moment to write the request's line.
    const lines: string[] = [];
    await waitFor('an access log line', 5_000, () => {
      lines.splice(0, lines.length, ...readLog(accessLogFile).split('\n').filter(Boolean));
      return lines.length > 0;
    });
    const entry = JSON.parse(lines.at(-1) ?? '') as Record<string, unknown>;
    assert.equal(entry.route, 'get-user');
    assert.equal(entry.path, '/users/42');
    assert.equal(entry.status, 200);
    assert.doesNotMatch(lines.join('\n'), /secret/);
  });
});

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '(no log)';
  }
}
