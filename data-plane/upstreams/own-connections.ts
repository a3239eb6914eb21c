import type { Socket } from 'node:net';
import type { buildConnector } from 'undici';

/** Open upstream connection of this process, with both ends of its TCP connection. */
interface OwnConnection {
  readonly socket: Socket;
  readonly localAddress: string;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Origin of the target, for the log line. */
  readonly origin: string;
}

/**
 * Open upstream connections of this process by local port. A request that arrives on a
 * connection whose four ends match one of them was sent by this process to itself, so a
 * target URL of some upstream points at the proxy's own listener. Linux can give two
 * connections to different peers the same local port, so each port maps to a list.
 */
// NOTE: each process keeps its own map. Under `--workers` the primary hands connections to the
// workers in turn, so a loop whose requests keep moving to another worker is not found.
const ownConnections = new Map<number, OwnConnection[]>();

/** Returns `address` without the `::ffff:` prefix of an IPv4-mapped IPv6 address. */
function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/**
 * Records `socket`, an upstream connection to `origin`, until it closes. Call it once the
 * socket is connected, before the first request is written to it.
 */
export function trackOwnConnection(socket: Socket, origin: string): void {
  const { localPort, localAddress, remoteAddress, remotePort } = socket;
  if (
    localPort === undefined ||
    localAddress === undefined ||
    remoteAddress === undefined ||
    remotePort === undefined
  ) {
    return;
  }
  const connection: OwnConnection = {
    socket,
    localAddress: plainAddress(localAddress),
    remoteAddress: plainAddress(remoteAddress),
    remotePort,
    origin,
  };
  const list = ownConnections.get(localPort);
  if (list === undefined) {
    ownConnections.set(localPort, [connection]);
  } else {
    list.push(connection);
  }
  socket.once('close', () => {
    const remaining = ownConnections.get(localPort)?.filter((entry) => entry.socket !== socket);
    if (remaining === undefined || remaining.length === 0) {
      ownConnections.delete(localPort);
    } else {
      ownConnections.set(localPort, remaining);
    }
  });
}

/** Wraps `connect` so that every connection it opens to `origin` is tracked while open. */
export function trackingConnector(
  connect: buildConnector.connector,
  origin: string,
): buildConnector.connector {
  return (connectOptions, callback) => {
    connect(connectOptions, (err, socket) => {
      if (err !== null) {
        callback(err, null);
        return;
      }
      trackOwnConnection(socket as Socket, origin);
      callback(null, socket);
    });
  };
}

/**
 * Returns the target origin when `socket`, a client connection of the proxy, is the other end
 * of an upstream connection that this process opened, else undefined.
 */
export function ownConnectionOrigin(socket: Socket): string | undefined {
  const port = socket.remotePort;
  if (port === undefined) return undefined;
  const list = ownConnections.get(port);
  if (list === undefined) return undefined;
  const { remoteAddress, localAddress, localPort } = socket;
  if (remoteAddress === undefined || localAddress === undefined) return undefined;
  const peer = plainAddress(remoteAddress);
  const local = plainAddress(localAddress);
  for (const own of list) {
    if (own.localAddress === peer && own.remoteAddress === local && own.remotePort === localPort) {
      return own.origin;
    }
  }
  return undefined;
}
