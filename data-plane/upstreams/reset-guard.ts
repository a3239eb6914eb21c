import type { Socket } from 'node:net';
import { buildConnector } from 'undici';

/** Maximum wait, in milliseconds, for the read side after a write to the upstream failed. */
const WRITE_FAILURE_GRACE_MS = 1_000;

/** Error codes of a connection that the upstream reset or closed under a write. */
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE']);

/** True while a pool socket emits the 'error' or 'end' event of a reset connection. */
let reportingReset = false;

/**
 * Tells whether the undici callback running now runs inside the 'error' or 'end' event of an
 * upstream connection that was reset. undici 7 takes the end of a connection without keep-alive
 * as the end of the response body. That happens at a reset reported by a read
 * (`onHttpSocketError` in client-h1.js), and at the end of input after a reset reported by a
 * write (`onHttpSocketEnd`). So a close-delimited body that the upstream cut with a reset
 * reaches `onComplete` inside one of those events.
 */
export function isReportingReset(): boolean {
  return reportingReset;
}

function clearReportingReset(): void {
  reportingReset = false;
}

/** Marks the reset whose 'error' event runs; added before undici's own listener. */
function markReset(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ECONNRESET') return;
  reportingReset = true;
  queueMicrotask(clearReportingReset);
}

const kWriteReset = Symbol('loom.writeReset');

interface GuardedSocket extends Socket {
  /** Set when a write failed with a reset, after which the read side ends the connection. */
  [kWriteReset]?: boolean;
}

/**
 * Tells whether a write on `socket` failed with a reset. The end of its input then comes from
 * the reset, so a body delimited by the close was cut.
 */
export function hadWriteReset(socket: Socket | null | undefined): boolean {
  return (socket as GuardedSocket | null | undefined)?.[kWriteReset] === true;
}

/** Marks the end of input of a connection whose write was reset; added before undici's. */
function markEndAfterReset(this: GuardedSocket): void {
  if (this[kWriteReset] !== true) return;
  reportingReset = true;
  queueMicrotask(clearReportingReset);
}

/** The part of a socket's readable state that a failed write sets. */
interface ReadableState {
  errored: Error | null;
}

/**
 * Builds an undici connector whose sockets keep an upstream response that arrives right before
 * a connection reset; see {@link keepResponseOnReset}. `options` are those of undici's
 * `buildConnector`: TLS settings and the connect `timeout`.
 */
export function buildResetSafeConnector(
  options: buildConnector.BuildOptions,
): buildConnector.connector {
  const connect = buildConnector(options);
  return (connectOptions, callback) => {
    connect(connectOptions, (err, socket) => {
      if (err !== null) {
        callback(err, null);
        return;
      }
      keepResponseOnReset(socket as Socket);
      // undici adds its listeners in the callback, so these run ahead of them.
      socket.on('error', markReset);
      socket.on('end', markEndAfterReset);
      callback(null, socket as Socket);
    });
  };
}

/**
 * Makes `socket` hand the bytes it received to its reader before a reset destroys it.
 *
 * An upstream that responds to an upload early (a 413 or 401) and closes without reading the rest
 * of the body makes its kernel reset the connection. The response is then in the proxy's
 * receive buffer, but Node.js drops it: a failed write marks the readable side as failed too,
 * which discards everything read afterwards, and destroys the socket before the response is
 * read. A read error destroys the socket before the 'readable' event that would hand the
 * buffered bytes to undici.
 *
 * So a reset that a write reports leaves the read side working and waits until it has seen
 * the response and the reset, at most {@link WRITE_FAILURE_GRACE_MS}. A reset that a read
 * reports first emits 'readable' for the bytes already buffered. Every other destroy passes
 * straight through.
 */
// NOTE: this replaces the socket's own `destroy` method and clears `_readableState.errored`,
// which is not a documented API; Node.js 20 to 24 set it on a failed write of a duplex stream.
// `ErrnoException.syscall` distinguishes write errors from read errors.
export function keepResponseOnReset(socket: Socket): void {
  const destroy = socket.destroy;
  let deferred: NodeJS.Timeout | undefined;
  socket.destroy = function destroyAfterResponse(this: Socket, err?: Error): Socket {
    const failure = err as NodeJS.ErrnoException | undefined;
    if (this.destroyed || failure?.code === undefined || !RESET_CODES.has(failure.code)) {
      clearTimeout(deferred);
      return destroy.call(this, err);
    }
    if (failure.syscall === 'write' && !this.readableEnded) {
      (this as GuardedSocket)[kWriteReset] = true;
      const readable = (this as unknown as { _readableState: ReadableState })._readableState;
      if (readable.errored === err) readable.errored = null;
      if (deferred === undefined) {
        deferred = setTimeout(() => destroy.call(this, err), WRITE_FAILURE_GRACE_MS);
        deferred.unref();
      }
      return this;
    }

    clearTimeout(deferred);
    if (this.readableLength > 0) this.emit('readable');
    return destroy.call(this, err);
  };
}
