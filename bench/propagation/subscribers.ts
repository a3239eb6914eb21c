// Lightweight snapshot subscribers for the propagation benchmark: COUNT
// streams in one process that each receive, decode and ack every snapshot,
// without building a router. Prints "ready" once every stream got a snapshot.
// Every stream decodes with one `SnapshotDecoder`, the proxy's decoder, shared by the process.
// The streams receive the same messages, so each decode finds every entry unchanged and costs
// about what a proxy's decode of a one-route change costs. One decoder per stream would keep
// 1,000 decoded copies of the last snapshot. The generated decoder decodes every route of every
// copy, about 8 ms of CPU per stream at 10,000 routes (`StreamResponse.decode` on a 2-core Xeon,
// Node 20), so with it this process, not the control plane, was the bottleneck.
// Usage: tsx bench/propagation/subscribers.ts CONTROL_PLANE COUNT
// A stream that ends with an error before its first snapshot, such as a rejected hello, stops
// the process with exit code 1 and the error, so the benchmark fails at once.
import { credentials } from '@grpc/grpc-js';

import {
  SNAPSHOT_FLOW_CONTROL_WINDOW,
  snapshotServiceClient,
  type SnapshotStreamClient,
} from '../../data-plane/snapshot-client/snapshot-client.js';
import { SnapshotDecoder } from '../../data-plane/snapshot-client/snapshot-decoder.js';
import type { StreamRequest, StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';

const [address, countText] = process.argv.slice(2);
const count = Number(countText);
/** Streams per HTTP/2 connection; a proxy fleet would use one connection each. */
const STREAMS_PER_CHANNEL = 50;

const decoder = new SnapshotDecoder();
const Client = snapshotServiceClient((bytes) => decoder.decode(bytes));
let ready = 0;
const channels: SnapshotStreamClient<StreamResponse>[] = [];
for (let index = 0; index < count; index++) {
  if (index % STREAMS_PER_CHANNEL === 0) {
    channels.push(
      new Client(address, credentials.createInsecure(), {
        'grpc.max_receive_message_length': 256 * 1024 * 1024,
        // The window of `loom data-plane`'s snapshot client.
        'grpc-node.flow_control_window': SNAPSHOT_FLOW_CONTROL_WINDOW,
        // Without this, grpc-js shares one connection among clients with equal options.
        'grpc.use_local_subchannel_pool': 1,
      }),
    );
  }
  const call = channels[channels.length - 1].stream();
  let first = true;
  call.on('data', (response: StreamResponse) => {
    const snapshot = response.snapshot;
    if (!snapshot) return;
    const { epoch, version, hash } = snapshot;
    const ack: StreamRequest = { kind: { $case: 'ack', ack: { epoch, version, hash } } };
    call.write(ack);
    if (first) {
      first = false;
      if (++ready === count) process.stdout.write('ready\n');
    }
  });
  call.on('error', (error: Error) => {
    if (!first) return;
    process.stderr.write(
      `subscriber-${index} failed before its first snapshot: ${error.message}\n`,
    );
    process.exit(1);
  });
  call.write({
    kind: {
      $case: 'hello',
      hello: {
        proxyId: `subscriber-${index}`,
        epoch: '',
        version: 0,
        // A traffic address that no proxy listens on, in the host:port form hellos need.
        address: '127.0.0.1:0',
        nacked: [],
        instanceId: `subscriber-${index}`,
      },
    },
  });
}
process.on('SIGTERM', () => {
  for (const channel of channels) channel.close();
  process.exit(0);
});
