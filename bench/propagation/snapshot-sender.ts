// A stand-in for the control plane's snapshot stream, for `proxy-grpc-cpu.ts`: it serves one
// stream, sends a base snapshot of ROUTES routes after the Hello, then after each ack waits
// GAP_MS and sends the next one-route change, CHANGES times. Each snapshot is encoded before
// the stream opens and written as pre-encoded bytes, as the control plane does. It reports to
// its parent over IPC: `{ port }` once listening, `{ acked: version }` after each ack. After the
// base snapshot's ack it waits for `{ go: true }` from the parent before the first change.
// Usage: tsx bench/propagation/snapshot-sender.ts ROUTES CHANGES GAP_MS  (run with an IPC channel)
import { Server, ServerCredentials, type ServerDuplexStream } from '@grpc/grpc-js';

import { buildSnapshot } from '../../control-plane/snapshot/build-snapshot.js';
import { SNAPSHOT_SERVICE_DEFINITION } from '../../control-plane/stream/snapshot-service.js';
import type { StreamRequest } from '../../proto/gen/loom/v1/data_plane.js';
import { benchUpstream, makeRoutes } from './bench-routes.js';

const [routes, changes, gapMs] = process.argv.slice(2).map(Number);
if (![routes, changes, gapMs].every((value) => Number.isInteger(value) && value >= 0)) {
  throw new Error('usage: snapshot-sender.ts ROUTES CHANGES GAP_MS, each a whole number');
}
if (process.send === undefined) throw new Error('snapshot-sender.ts needs an IPC channel');
const send = process.send.bind(process);

const encoded: Buffer[] = [];
for (let change = 0; change <= changes; change++) {
  const changed = change === 0 ? -1 : change % routes;
  encoded.push(
    buildSnapshot('bench', change + 1, makeRoutes(routes, changed, change), [benchUpstream])
      .encoded,
  );
}

const go = new Promise<void>((resolve) => {
  process.on('message', (message: { go?: boolean }) => {
    if (message.go) resolve();
  });
});

const server = new Server({ 'grpc.max_send_message_length': 256 * 1024 * 1024 });
server.addService(SNAPSHOT_SERVICE_DEFINITION, {
  Stream(call: ServerDuplexStream<StreamRequest, Buffer>) {
    let next = 0;
    const sendNext = () => {
      if (next < encoded.length) call.write(encoded[next++]);
    };
    call.on('data', (request: StreamRequest) => {
      const kind = request.kind;
      if (kind?.$case === 'hello') {
        sendNext();
      } else if (kind?.$case === 'ack') {
        send({ acked: kind.ack.version });
        if (next === 1) go.then(sendNext, () => undefined);
        else setTimeout(sendNext, gapMs);
      } else if (kind?.$case === 'nack') {
        send({ nacked: kind.nack.version, error: kind.nack.error });
      }
    });
    call.on('error', () => undefined);
  },
});
server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  send({ port });
});
process.on('disconnect', () => server.forceShutdown());
