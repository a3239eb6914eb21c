import type { Socket } from 'node:net';
import type { Logger } from '../../common/logger.js';
import { resetConnection } from './socket-reset.js';

/** The watchdog's record of one client connection. */
interface SendState {
  /** Bytes whose write completed when the current wait started or last moved on. */
  sent: number;
  /** When the connection was last seen taking bytes while some waited; -1 when none waited. */
  since: number;
}

/** The fields of a connection that a check reads. */
export type WatchedSocket = Pick<Socket, 'writableLength' | 'bytesWritten' | 'destroyed'>;

/**
 * Cuts off client connections that take no bytes for `timeoutMs` while bytes wait to be sent
 * to them, from any writer: a proxied response, an error response of the proxy, a
 * 103, or the rejection of a pipelined request. While a client reads nothing, the proxy stops
 * reading the upstream body, and undici's body timeout does not run. Without this check, such
 * a client keeps its upstream connection, and every request pipelined behind it, as long as it
 * stays connected. A connection with nothing waiting is never cut, so a response that waits
 * for a slow upstream keeps its client.
 *
 * One timer checks every connection every quarter of the timeout (at most once a second), so
 * a connection is cut between `timeoutMs` and `timeoutMs` plus one period after it last took
 * bytes. A check reads `bytesWritten - writableLength`, the bytes whose writes completed; it
 * grows only when the kernel takes bytes, which Linux allows once about half of a full send
 * buffer has left.
 */
export class SendWatchdog {
  readonly #timeoutMs: number;
  readonly #logger: Logger;
  readonly #onCut: () => void;
  readonly #connections = new Map<WatchedSocket, SendState>();
  #timer: NodeJS.Timeout | undefined;

  /** Creates a watchdog; `onCut` runs for each connection cut off, for the metrics. */
  constructor(timeoutMs: number, logger: Logger, onCut: () => void = () => {}) {
    this.#timeoutMs = timeoutMs;
    this.#logger = logger;
    this.#onCut = onCut;
  }

  /** Time between two checks, in milliseconds. */
  get periodMs(): number {
    return Math.max(10, Math.min(1_000, Math.floor(this.#timeoutMs / 4)));
  }

  /** Watches `socket` until it closes; does nothing when the timeout is 0. */
  readonly track = (socket: Socket): void => {
    if (this.#timeoutMs <= 0) return;
    this.#connections.set(socket, { sent: 0, since: -1 });
    socket.once('close', () => this.#connections.delete(socket));
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.check(performance.now()), this.periodMs);
      // Open connections keep the process running, so the timer need not.
      this.#timer.unref();
    }
  };

  /** Stops the checks once the listener closes. */
  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Checks every connection at time `now` (`performance.now()`), and cuts those that have had
   * bytes waiting with none taken for the timeout. Returns how many it cut.
   */
  check(now: number): number {
    let cut = 0;
    for (const [socket, state] of this.#connections) {
      const waiting = socket.writableLength;
      if (waiting === 0 || socket.destroyed) {
        state.since = -1;
        continue;
      }
      const sent = socket.bytesWritten - waiting;
      if (state.since === -1 || sent !== state.sent) {
        state.since = now;
        state.sent = sent;
        continue;
      }
      if (now - state.since < this.#timeoutMs) continue;

      this.#connections.delete(socket);
      cut++;
      if (this.#logger.isLevelEnabled('debug')) {
        this.#logger.debug(
          { timeoutMs: this.#timeoutMs, waiting },
          'client connection cut off: it took no response bytes within the send timeout',
        );
      }
      resetConnection(socket as Socket);
      this.#onCut();
    }
    return cut;
  }

  /** Number of connections watched, for tests. */
  get size(): number {
    return this.#connections.size;
  }
}
