import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { buildConnector } from 'undici';

/** Error code of an upstream connection that reached one of the proxy's own listeners. */
export const REQUEST_LOOP_CODE = 'LOOM_REQUEST_LOOP';

/**
 * Bound addresses of this process's proxy listeners, by port. Workers of one proxy share the
 * port, so each of them finds a connection to any of them.
 */
const ownListeners = new Map<number, Set<string>>();

/** Returns `address` without the `::ffff:` prefix of an IPv4-mapped IPv6 address. */
function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.');
}

/** Records the address of `server` from 'listening' until 'close'. */
export function registerOwnListener(server: Server): void {
  server.on('listening', () => {
    const bound = server.address();
    if (bound === null || typeof bound === 'string') return;
    const address = plainAddress(bound.address);
    let addresses = ownListeners.get(bound.port);
    if (addresses === undefined) {
      addresses = new Set();
      ownListeners.set(bound.port, addresses);
    }
    addresses.add(address);
    server.once('close', () => {
      addresses.delete(address);
      if (addresses.size === 0 && ownListeners.get(bound.port) === addresses) {
        ownListeners.delete(bound.port);
      }
    });
  });
}

// Only connections to this host's own listeners are found here. A loop through another host,
// such as a load balancer in front of the proxies, is found by its Via entries (prepare-request.ts).
/**
 * Returns an error with code {@link REQUEST_LOOP_CODE} when `socket`, a connected upstream
 * connection to `origin`, reached a listener of this proxy, else undefined. A request sent on
 * it would come back to the proxy and be forwarded again, until file descriptors run out.
 */
export function requestLoopError(socket: Socket, origin: string): Error | undefined {
  const port = socket.remotePort;
  const remote = socket.remoteAddress;
  if (port === undefined || remote === undefined) return undefined;
  const addresses = ownListeners.get(port);
  if (addresses === undefined) return undefined;
  const peer = plainAddress(remote);
  const local = plainAddress(socket.localAddress ?? '');
  const wildcard = addresses.has('0.0.0.0') || addresses.has('::');
  // A connection to one of the host's own addresses gets that address as its local one.
  if (addresses.has(peer) || (wildcard && (isLoopback(peer) || peer === local))) {
    return Object.assign(
      new Error(
        `target ${origin} is this proxy's own listener (${peer}:${port}); point the ` +
          'upstream target at the upstream server',
      ),
      { code: REQUEST_LOOP_CODE },
    );
  }
  return undefined;
}

/** Wraps `connect` so that a connection to `origin` that reaches the proxy itself fails. */
export function loopGuardConnector(
  connect: buildConnector.connector,
  origin: string,
): buildConnector.connector {
  return (connectOptions, callback) => {
    connect(connectOptions, (err, socket) => {
      if (err !== null) {
        callback(err, null);
        return;
      }
      const loop = requestLoopError(socket as Socket, origin);
      if (loop !== undefined) {
        socket.destroy();
        callback(loop, null);
        return;
      }
      callback(null, socket);
    });
  };
}
