import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { loomctl } from '../helpers/cli.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';
import { httpGet } from '../helpers/net.js';

const ROUTES = 100_000;

describe('large configuration', { timeout: 240_000 }, () => {
  let fleet: Fleet;
  let upstream: Server;

  before(async () => {
    upstream = await startEchoUpstream(0, 'bulk');
    fleet = await startFleet({ proxies: 1 });
  });

  after(async () => {
    await fleet?.stop();
    upstream?.close();
  });

  test('100,000 routes apply end to end', async () => {
    const port = (upstream.address() as AddressInfo).port;
    // About 60 bytes per route on the wire, so the snapshot is far above gRPC's 4 MiB default.
    const routes = Array.from({ length: ROUTES }, (_, index) => ({
      name: `route-${index}`,
      hosts: ['api.example.com'],
      paths: [`/r${index}/:id`],
      upstream: 'bulk',
    }));
    const file = join(fleet.dir, 'large.json');
    writeFileSync(
      file,
      JSON.stringify({
        apiVersion: 'loom/v1',
        upstreams: [{ name: 'bulk', targets: [{ url: `http://127.0.0.1:${port}` }] }],
        routes,
      }),
    );

    const started = Date.now();
    const result = await loomctl(fleet.controlPlane, [
      'apply',
      '-f',
      file,
      '--wait',
      '--timeout',
      '120s',
    ]);
    const applyMs = Date.now() - started;
    assert.equal(result.code, 0, result.stdout + result.stderr + fleet.logs());
    assert.match(result.stdout, /^100000 routes created$/m);
    assert.match(result.stdout, /applied by 1 of 1 proxies/);
    const bytes = /"routes":100000,"upstreams":1,"bytes":(\d+)/.exec(fleet.logs())?.[1];
    assert.ok(Number(bytes) > 4 * 1024 * 1024, `snapshot of ${bytes} bytes`);
    process.stdout.write(`# apply of ${ROUTES} routes with --wait took ${applyMs} ms\n`);

    const response = await httpGet(fleet.proxies[0].url(`/r${ROUTES - 1}/42`), {
      host: 'api.example.com',
    });
    assert.equal(response.status, 200);
    assert.equal((JSON.parse(response.body) as { url: string }).url, `/r${ROUTES - 1}/42`);
  });
});
