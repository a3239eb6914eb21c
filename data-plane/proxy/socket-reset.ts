import { Socket } from 'node:net';

/**
 * Ends a client connection with a TCP reset instead of a FIN, so that a client reading a body
 * delimited by the connection close detects the truncation. A TLS socket is reset through the
 * TCP socket under it, since Node.js 20 resets only TCP handles.
 */
// NOTE: `_parent` is not a documented API. Node.js 20 sets it to the net.Socket that a
// server-side TLSSocket wraps, which keeps the TCP handle. Without it the socket is destroyed.
export function resetConnection(socket: Socket): void {
  const parent = (socket as Socket & { _parent?: unknown })._parent;
  try {
    if (parent instanceof Socket) {
      parent.resetAndDestroy();
    } else {
      socket.resetAndDestroy();
      return;
    }
  } catch {
    // A socket without a TCP handle (a pipe, or one already closed) is only destroyed.
  }
  socket.destroy();
}
