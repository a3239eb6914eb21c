import { randomUUID } from 'node:crypto';

import type { ProxyStream } from '../../control-plane/stream/proxy-registry.js';

/**
 * Returns a registry stream of a proxy process at `address`, with a new instance id unless one
 * is given. `ended` collects the reasons the registry's caller ended it for.
 */
export function testStream(
  address: string,
  instanceId: string = randomUUID(),
  peerHost = '127.0.0.1',
): ProxyStream & { ended: string[] } {
  const ended: string[] = [];
  return { instanceId, address, peerHost, ended, end: (reason) => ended.push(reason) };
}
