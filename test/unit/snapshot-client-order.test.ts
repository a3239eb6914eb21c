import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';

import { createLogger } from '../../common/logger.js';
import { SnapshotClient } from '../../data-plane/snapshot-client/snapshot-client.js';
import {
  SnapshotServiceService,
  type StreamRequest,
  type StreamResponse,
} from '../../proto/gen/loom/v1/data_plane.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';

const snapshot = (epoch: string, version: number): Snapshot => ({
  epoch,
  version,
  hash: `${epoch}-${version}`,
  routes: [],
  upstreams: [],
});

/**
 * Serves one stream that records what the client sends. It sends the first
 * snapshot after the Hello and each next one after an ack or nack, so every
 * snapshot arrives after the previous one was applied.
 */
async function serve(snapshots: Snapshot[]) {
  const answers: StreamRequest[] = [];
  const server = new Server();
  server.addService(SnapshotServiceService, {
    stream(call: ServerDuplexStream<StreamRequest, StreamResponse>) {
      let next = 0;
      call.on('data', (request: StreamRequest) => {
        answers.push(request);
        if (next < snapshots.length) call.write({ snapshot: snapshots[next++] });
      });
      call.on('error', () => undefined);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return { address: `127.0.0.1:${port}`, answers, stop: () => server.forceShutdown() };
}

async function runClient(snapshots: Snapshot[], expectedAnswers: number) {
  const server = await serve(snapshots);
  const applied: Snapshot[] = [];
  let held = { epoch: '', version: 0 };
  const client = new SnapshotClient({
    addresses: [server.address],
    proxyId: 'p',
    proxyAddress: 'test',
    logger: createLogger({ name: 'test', level: 'silent' }),
    held: () => held,
    apply: async (next) => {
      applied.push(next);
      held = { epoch: next.epoch, version: next.version };
    },
  });
  client.start();
  try {
    const deadline = Date.now() + 5_000;
    while (server.answers.length < expectedAnswers && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    // Give a wrongly applied snapshot time to show up.
    await new Promise((resolve) => setTimeout(resolve, 100));
  } finally {
    client.stop();
    server.stop();
  }
  return { applied, answers: server.answers };
}

describe('snapshot client order', () => {
  test('older version in one epoch is ignored', async () => {
    const { applied, answers } = await runClient([snapshot('a', 5), snapshot('a', 3)], 2);
    assert.deepEqual(
      applied.map((item) => item.version),
      [5],
    );
    const acks = answers.filter((answer) => answer.kind?.$case === 'ack');
    assert.equal(acks.length, 1);
  });

  test('version already served is acked again', async () => {
    const { applied, answers } = await runClient([snapshot('a', 5), snapshot('a', 5)], 3);
    assert.deepEqual(
      applied.map((item) => item.version),
      [5],
    );
    const acks = answers.filter((answer) => answer.kind?.$case === 'ack');
    assert.equal(acks.length, 2);
    for (const ack of acks) assert.equal(ack.kind?.$case === 'ack' && ack.kind.ack.version, 5);
  });

  test('new epoch is accepted at a lower version', async () => {
    const { applied } = await runClient([snapshot('a', 5), snapshot('b', 2)], 3);
    assert.deepEqual(applied.map((item) => `${item.epoch}/${item.version}`).at(-1), 'b/2');
  });
});
