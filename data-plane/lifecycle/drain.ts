import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

import type { Logger } from '../../common/logger.js';

/** Default time in-flight requests get to finish on shutdown: 30 seconds. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

/** Outcome of {@link HttpDrainer.drain}. */
export interface DrainResult {
  /** True when every request finished before the deadline. */
  completed: boolean;
  /** Requests still running at the deadline, whose connections were closed. */
  abandoned: number;
}

/**
 * A client connection of a `node:http` server. `_httpMessage` is the response that owns the
 * socket until it finishes, the field that Node.js's own `closeIdleConnections` reads.
 */
// NOTE: `_httpMessage` is not a documented API. Node.js 20 to 24 set it in
// `ServerResponse.assignSocket` and clear it when the response finishes.
interface HttpSocket extends Socket {
  _httpMessage?: ServerResponse | null;
}

/**
 * Shuts a `node:http` server down gracefully: the listener stops accepting, idle keep-alive
 * connections close at once, busy ones close as soon as their response ends (responses not
 * yet started carry `Connection: close`), and whatever still runs at the deadline is cut.
 *
 * Until a drain starts it costs nothing per request: it keeps a set of client connections
 * and finds the requests in flight through the response that each connection serves.
 *
 * Connections taken over by an Upgrade (WebSocket tunnels) leave the HTTP server's bookkeeping
 * but not its count of open connections, so the drain lets them run until the deadline and then
 * destroys them.
 */
export class HttpDrainer {
  #draining = false;
  readonly #sockets = new Set<HttpSocket>();
  /** Responses that close their connection when they end. */
  readonly #closing = new WeakSet<ServerResponse>();
  readonly #server: Server;
  readonly #logger: Logger;

  /** Starts tracking connections; create it before the server listens. */
  constructor(server: Server, logger: Logger) {
    this.#server = server;
    this.#logger = logger.child({ component: 'drain' });
    server.on('connection', (socket: HttpSocket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
  }

  /** Requests whose response has not finished yet. */
  get inFlight(): number {
    let count = 0;
    for (const socket of this.#sockets) {
      if (isBusy(socket)) count++;
    }
    return count;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Stops accepting, waits up to `timeoutMs` for requests in flight, then
   * closes every connection.
   */
  async drain(timeoutMs: number): Promise<DrainResult> {
    this.#draining = true;
    const start = performance.now();
    this.#logger.info({ inFlight: this.inFlight, timeoutMs }, 'drain started');
    const onRequest = (_req: IncomingMessage, res: ServerResponse) => this.#closeAfter(res);
    // Requests that arrive on busy connections from now on; they run before the proxy
    // handler, which may send the whole response within the same call.
    this.#server.prependListener('request', onRequest);
    // A 'checkContinue' listener changes how Node.js handles `Expect: 100-continue`, so one is
    // added only next to an existing one.
    if (this.#server.listenerCount('checkContinue') > 0) {
      this.#server.prependListener('checkContinue', onRequest);
    }
    for (const socket of this.#sockets) {
      const res = socket._httpMessage;
      if (res) this.#closeAfter(res);
    }
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeIdleConnections();

    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const outcome = await Promise.race([closed, deadline]);
    clearTimeout(timer);

    let abandoned = 0;
    let tunnels = 0;
    if (outcome === 'timeout') {
      abandoned = this.inFlight;
      this.#server.closeAllConnections();
      // What is left open is upgraded connections, which the server no longer closes itself.
      for (const socket of this.#sockets) {
        if (socket.destroyed) continue;
        tunnels++;
        socket.destroy();
      }
      abandoned += tunnels;
      await closed;
    }
    const fields = { abandoned, tunnels, drainMs: Math.round(performance.now() - start) };
    if (abandoned > 0) this.#logger.warn(fields, 'drain timed out');
    else this.#logger.info(fields, 'drain finished');
    return { completed: outcome !== 'timeout', abandoned };
  }

  /**
   * Asks for the connection of `res` to close after it: `Connection: close` when its headers
   * are not sent yet, and a close of every idle connection once it ends.
   */
  #closeAfter(res: ServerResponse): void {
    if (this.#closing.has(res)) return;
    this.#closing.add(res);
    if (!res.headersSent) res.setHeader('connection', 'close');
    const socket = res.socket as HttpSocket | null;
    res.once('close', () => {
      // A pipelined request's response takes over the socket when this one finishes.
      const next = socket?._httpMessage;
      if (next) this.#closeAfter(next);
      // The connection counts as idle only after the response is detached from it.
      setImmediate(() => this.#server.closeIdleConnections());
    });
  }
}

function isBusy(socket: HttpSocket): boolean {
  const res = socket._httpMessage;
  return res !== undefined && res !== null && !res.writableFinished;
}
