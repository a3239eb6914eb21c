import type { Socket } from 'node:net';

/**
 * Ends a client connection with a TCP reset instead of a FIN, so that a client reading a body
 * delimited by the connection close detects the truncation.
 */
// NOTE: Node.js 20 cannot reset a TLS socket (`resetAndDestroy` throws ERR_INVALID_HANDLE_TYPE),
// so on an https listener the connection is only destroyed, which some clients take as a clean end.
export function resetConnection(socket: Socket): void {
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}
