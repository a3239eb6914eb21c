import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';

import { SNAPSHOT_SERVICE_DEFINITION } from '../../control-plane/stream/snapshot-service.js';
import { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { StreamResponse, type StreamRequest } from '../../proto/gen/loom/v1/data_plane.js';
import { waitFor } from '../../scripts/processes.js';
import { startProxy, type FleetProxy } from '../helpers/fleet.js';
import { findFreePort } from '../helpers/ports.js';
import { startUpstream } from './harness.js';

type Call = ServerDuplexStream<StreamRequest, Buffer>;

const EPOCH = 'e1';

/** Snapshot values that loomctl apply rejects but a value written with etcdctl may hold. */
const INVALID_VALUES: {
  label: string;
  routes: Partial<Route>[];
  upstream: Partial<Upstream>;
  /** Text the nack names; default `label`. */
  expected?: string;
  epoch?: string;
  version?: number;
}[] = [
  { label: 'epoch', epoch: '', version: 0, routes: [{}], upstream: {} },
  {
    label: 'duplicate route name',
    routes: [{}, { paths: ['/other/*rest'] }],
    upstream: {},
  },
  { label: 'methods[0]', routes: [{ methods: ['G ET'] }], upstream: {} },
  { label: 'empty name', expected: 'invalid name ""', routes: [{ name: '' }], upstream: {} },
  {
    label: 'long name',
    expected: `invalid name "${'a'.repeat(100)}...`,
    routes: [{ name: 'a'.repeat(129) }],
    upstream: {},
  },
  { label: 'stripPrefix', routes: [{ stripPrefix: 'api' }], upstream: {} },
  { label: 'addPrefix', routes: [{ addPrefix: 'v2' }], upstream: {} },
  { label: 'balancer', routes: [{}], upstream: { balancer: 'junk' } },
  { label: 'hashOn', routes: [{}], upstream: { balancer: 'hash', hashOn: 'header:a b' } },
  {
    label: 'long target URL',
    expected: 'too long: 2117 characters',
    routes: [{}],
    upstream: { targets: [{ url: `http://127.0.0.1/${'a'.repeat(2_100)}`, weight: 1 }] },
  },
  {
    label: 'target port 0',
    expected: 'port 0 cannot be connected to',
    routes: [{}],
    upstream: { targets: [{ url: 'http://127.0.0.1:0', weight: 1 }] },
  },
  { label: 'retries', routes: [{ retries: 4_294_967_295 }], upstream: {} },
  {
    label: 'requestHeaders',
    routes: [{ requestHeaders: { set: [{ name: 'bad name', value: 'x' }], remove: [] } }],
    upstream: {},
  },
  {
    label: 'responseHeaders',
    routes: [{ responseHeaders: { set: [{ name: 'x-a', value: 'a\r\nx-b: c' }], remove: [] } }],
    upstream: {},
  },
  {
    label: 'healthCheck.intervalMs',
    routes: [{}],
    upstream: {
      healthCheck: {
        path: '/health',
        intervalMs: 0,
        timeoutMs: 0,
        healthyThreshold: 0,
        unhealthyThreshold: 0,
      },
    },
  },
  {
    label: 'passiveHealth.consecutiveFailures',
    routes: [{}],
    upstream: { passiveHealth: { consecutiveFailures: 0, baseEjectionMs: 0, maxEjectionMs: 0 } },
  },
];

describe('proxy against a hostile control plane', { timeout: 60_000 }, () => {
  let server: Server;
  let call: Call | undefined;
  const requests: StreamRequest[] = [];
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let proxy: FleetProxy;
  let dir: string;

  before(async () => {
    upstream = await startUpstream('echo');
    server = new Server();
    server.addService(SNAPSHOT_SERVICE_DEFINITION, {
      Stream(stream: Call) {
        call = stream;
        stream.on('data', (request: StreamRequest) => requests.push(request));
        stream.on('error', () => undefined);
      },
    });
    const port = await findFreePort();
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (error) =>
        error ? reject(error) : resolve(),
      );
    });
    dir = mkdtempSync(join(tmpdir(), 'loom-hostile-cp-'));
    proxy = await startProxy(`127.0.0.1:${port}`, dir, 'target');
    await waitFor('the proxy hello', 15_000, () => call !== undefined);
  });

  after(async () => {
    await proxy?.process.stop();
    server?.forceShutdown();
    upstream?.server.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function send(
    version: number,
    routes: Partial<Route>[],
    fields: Partial<Upstream>,
    epoch = EPOCH,
  ): void {
    const { port } = upstream.server.address() as AddressInfo;
    const snapshot = {
      epoch,
      version,
      hash: `hash-${version}`,
      routes: routes.map((route) =>
        Route.fromPartial({ name: 'api', paths: ['/api/*rest'], upstream: 'echo', ...route }),
      ),
      upstreams: [
        Upstream.fromPartial({
          name: 'echo',
          targets: [{ url: `http://127.0.0.1:${port}`, weight: 1 }],
          ...fields,
        }),
      ],
    };
    call!.write(Buffer.from(StreamResponse.encode({ snapshot }).finish()));
  }

  function answer(version: number): StreamRequest['kind'] | undefined {
    return requests
      .map((request) => request.kind)
      .find(
        (kind) =>
          (kind?.$case === 'ack' && kind.ack.version === version) ||
          (kind?.$case === 'nack' && kind.nack.version === version),
      );
  }

  test('invalid values are nacked', async () => {
    send(1, [{}], {});
    await waitFor('the ack of version 1', 15_000, () => answer(1) !== undefined);
    assert.equal(answer(1)?.$case, 'ack');

    for (const [index, testCase] of INVALID_VALUES.entries()) {
      const { label, routes, upstream: fields } = testCase;
      const version = testCase.version ?? index + 2;
      send(version, routes, fields, testCase.epoch);
      await waitFor(
        `the answer to version ${version}`,
        15_000,
        () => answer(version) !== undefined,
      );

      const kind = answer(version);
      assert.equal(kind?.$case, 'nack', `${label}: ${JSON.stringify(kind)}`);
      const expected = testCase.expected ?? label;
      assert.ok(kind.nack.error.includes(expected), `${label}: ${kind.nack.error}`);
      const response = await fetch(proxy.url('/api/ping'));
      await response.arrayBuffer();
      assert.equal(response.status, 200, `${label}: the proxy stopped serving version 1`);
    }

    const log = readFileSync(join(dir, 'target.log'), 'utf8').split('\n');
    const rejected = log.filter((line) => line.includes('"msg":"snapshot rejected"'));
    assert.equal(rejected.length, INVALID_VALUES.length, rejected.join('\n'));
    assert.equal(proxy.process.child.exitCode, null);
  });
});
