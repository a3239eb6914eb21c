import type { IncomingMessage, Server, ServerResponse } from 'node:http';

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
 * Counts the requests in flight on an HTTP server and shuts it down
 * gracefully: the listener stops accepting, idle keep-alive connections close
 * at once, busy ones close as soon as their response ends (responses started
 * during the drain carry `Connection: close`), and whatever still runs at the
 * deadline is cut.
 *
 * NOTE: sockets taken over by an Upgrade (WebSocket tunnels) leave the HTTP
 * server's bookkeeping; the drain does not wait for them or close them.
 */
export class HttpDrainer {
  #draining = false;
  readonly #responses = new Set<ServerResponse>();
  readonly #server: Server;
  readonly #logger: Logger;

  /** Starts counting requests; create it before the server listens. */
  constructor(server: Server, logger: Logger) {
    this.#server = server;
    this.#logger = logger.child({ component: 'drain' });
    // Runs before the proxy handler, which may send the whole response within the same call.
    server.prependListener('request', (req, res) => this.#onRequest(req, res));
  }

  /** Requests whose response has not ended yet. */
  get inFlight(): number {
    return this.#responses.size;
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
    this.#logger.info({ inFlight: this.#responses.size, timeoutMs }, 'drain started');
    for (const res of this.#responses) {
      if (!res.headersSent) res.setHeader('connection', 'close');
    }
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeIdleConnections();

    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs);
    });
    const outcome = await Promise.race([closed, deadline]);
    clearTimeout(timer);

    const abandoned = outcome === 'timeout' ? this.#responses.size : 0;
    if (outcome === 'timeout') {
      this.#server.closeAllConnections();
      await closed;
    }
    const fields = { abandoned, drainMs: Math.round(performance.now() - start) };
    if (abandoned > 0) this.#logger.warn(fields, 'drain timed out');
    else this.#logger.info(fields, 'drain finished');
    return { completed: outcome !== 'timeout', abandoned };
  }

  #onRequest(_req: IncomingMessage, res: ServerResponse): void {
    this.#responses.add(res);
    if (this.#draining) res.setHeader('connection', 'close');
    res.once('close', () => {
      this.#responses.delete(res);
      // The connection counts as idle only after the response is detached from it.
      if (this.#draining) setImmediate(() => this.#server.closeIdleConnections());
    });
  }
}
