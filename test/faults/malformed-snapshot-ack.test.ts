import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';
import { pino } from 'pino';

import { SNAPSHOT_SERVICE_DEFINITION } from '../../control-plane/stream/snapshot-service.js';
import { SnapshotClient } from '../../data-plane/snapshot-client/snapshot-client.js';
import { Route } from '../../proto/gen/loom/v1/config.js';
import { StreamRequest, StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import { waitFor } from '../../scripts/processes.js';

/** Routes of the valid snapshot, enough that its decode spans several slices. */
const ROUTE_COUNT = 30_000;

describe('acks around a malformed snapshot', { timeout: 30_000 }, () => {
  test('malformed message after valid keeps ack', async () => {
    // The first stream gets a large valid snapshot and, right behind it, a truncated message.
    const acks: Array<{ stream: number; version: number }> = [];
    let streams = 0;
    const routes = Array.from({ length: ROUTE_COUNT }, (_, i) =>
      Route.fromPartial({ name: `r${i}`, paths: [`/r${i}`], upstream: 'up' }),
    );
    const encode = (version: number, list: Route[]): Buffer =>
      Buffer.from(
        StreamResponse.encode({
          snapshot: { version, epoch: 'e1', hash: `h${version}`, routes: list, upstreams: [] },
        }).finish(),
      );
    const valid = encode(1, routes);
    const server = new Server();
    server.addService(SNAPSHOT_SERVICE_DEFINITION, {
      Stream(call: ServerDuplexStream<StreamRequest, Buffer>) {
        const stream = ++streams;
        call.on('data', (request: StreamRequest) => {
          const kind = request.kind;
          if (kind?.$case === 'ack') acks.push({ stream, version: kind.ack.version });
          if (kind?.$case !== 'hello' || stream !== 1) return;
          call.write(valid);
          call.write(valid.subarray(0, valid.length - 3));
        });
        call.on('error', () => {});
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) =>
        error ? reject(error) : resolve(bound),
      ),
    );
    const applied: number[] = [];
    let served = { epoch: '', version: 0 };
    const client = new SnapshotClient({
      addresses: [`127.0.0.1:${port}`],
      proxyId: 'p',
      proxyAddress: '127.0.0.1:0',
      logger: pino({ enabled: false }),
      held: () => served,
      apply: async (snapshot) => {
        applied.push(snapshot.version);
        served = { epoch: snapshot.epoch, version: snapshot.version };
      },
    });
    try {
      client.start();
      await waitFor('second stream', 10_000, () => streams >= 2);
      await waitFor('ack of version 1', 2_000, () => acks.length > 0).catch(() => undefined);

      assert.deepEqual(applied, [1]);
      assert.deepEqual(acks, [{ stream: 1, version: 1 }], 'applied version 1 was never acked');
    } finally {
      client.stop();
      server.forceShutdown();
    }
  });
});
