// Lightweight snapshot subscribers for the propagation benchmark: COUNT
// streams in one process that each receive, decode and ack every snapshot,
// without building a router. Prints "ready" once every stream got a snapshot.
// NOTE: streams decode with the generated decoder, not the proxy's `SnapshotDecoder`, because
// 1,000 decoders in one process would keep 1,000 decoded copies of the last snapshot.
// Usage: tsx bench/propagation/subscribers.ts CONTROL_PLANE COUNT
import { credentials } from '@grpc/grpc-js';

import { SNAPSHOT_FLOW_CONTROL_WINDOW } from '../../data-plane/snapshot-client/snapshot-client.js';
import {
  SnapshotServiceClient,
  type StreamRequest,
  type StreamResponse,
} from '../../proto/gen/loom/v1/data_plane.js';

const [address, countText] = process.argv.slice(2);
const count = Number(countText);
/** Streams per HTTP/2 connection; a proxy fleet would use one connection each. */
const STREAMS_PER_CHANNEL = 50;

let ready = 0;
const channels: SnapshotServiceClient[] = [];
for (let index = 0; index < count; index++) {
  if (index % STREAMS_PER_CHANNEL === 0) {
    channels.push(
      new SnapshotServiceClient(address, credentials.createInsecure(), {
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
  call.on('error', () => undefined);
  call.write({
    kind: {
      $case: 'hello',
      hello: { proxyId: `subscriber-${index}`, epoch: '', version: 0, address: 'bench' },
    },
  });
}
process.on('SIGTERM', () => {
  for (const channel of channels) channel.close();
  process.exit(0);
});
