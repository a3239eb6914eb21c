import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';

/** Default time in-flight requests get to finish on shutdown: 30 seconds. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

/**
 * Default time idle keep-alive connections stay open once a drain starts: 1 second. A client
 * that sends a request on one meanwhile gets its response with `Connection: close`.
 */
export const DEFAULT_IDLE_GRACE_MS = 1_000;

/** Grace periods of a drain, both inside the drain timeout. */
export interface DrainGrace {
  /**
   * Time the listener keeps accepting new connections once a drain starts, in milliseconds;
   * default 0. Readiness is already false meanwhile, so that a load balancer or a Kubernetes
   * Service stops sending new connections before the port closes, instead of seeing refused
   * connections for as long as it takes to notice.
   */
  acceptMs?: number;
  /**
   * Time idle keep-alive connections stay open once the listener has closed, in milliseconds;
   * default `DEFAULT_IDLE_GRACE_MS`.
   */
  idleMs?: number;
}

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
 * Shuts a `node:http` server down gracefully. Every response not yet started carries
 * `Connection: close`, so a connection closes once its response ends, also when its request
 * arrived during the drain. The listener keeps accepting for the accept grace period (none by
 * default), then closes. Idle keep-alive connections stay open for the idle grace period after
 * that, so that a client that sends a request on one meanwhile gets a response instead of a
 * closed connection, and are then closed. Whatever still runs at the deadline is cut.
 *
 * A client that sends a request on an idle connection at the moment the grace period closes it
 * loses that request (a reset or an empty read). No server can prevent it, because the request
 * and the close cross on the network. The grace period makes that rare, because a client that is
 * sending requests gets `Connection: close` first and stops using the connection.
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
  /** True once idle connections may be closed: the grace period ended. */
  #closingIdle = false;
  readonly #sockets = new Set<HttpSocket>();
  /** Responses that close their connection when they end. */
  readonly #closing = new WeakSet<ServerResponse>();
  readonly #server: Server;
  readonly #logger: Logger;
  readonly #idleGraceMs: number;
  readonly #acceptGraceMs: number;

  /**
   * Starts tracking connections; create it before the server listens. Both grace periods are
   * capped by the drain timeout.
   */
  constructor(server: Server, logger: Logger, grace: DrainGrace = {}) {
    this.#server = server;
    this.#logger = logger.child({ component: 'drain' });
    this.#idleGraceMs = checkGrace('idleMs', grace.idleMs ?? DEFAULT_IDLE_GRACE_MS);
    this.#acceptGraceMs = checkGrace('acceptMs', grace.acceptMs ?? 0);
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
   * Sends every later response with `Connection: close`, stops accepting after the accept
   * grace period, closes idle connections after the idle grace period, waits until `timeoutMs`
   * after the start for requests in flight, then closes every connection.
   */
  async drain(timeoutMs: number): Promise<DrainResult> {
    this.#draining = true;
    const start = performance.now();
    const acceptGraceMs = Math.min(this.#acceptGraceMs, timeoutMs);
    const graceMs = Math.min(this.#idleGraceMs, timeoutMs - acceptGraceMs);
    this.#logger.info(
      {
        inFlight: this.inFlight,
        connections: this.#sockets.size,
        timeoutMs,
        acceptGraceMs,
        idleGraceMs: graceMs,
      },
      'drain started',
    );
    const onRequest = (_req: IncomingMessage, res: ServerResponse) => this.#closeAfter(res);
    // Requests that arrive from now on. The listener runs before the proxy handler, which may
    // send the whole response within the same call.
    this.#server.prependListener('request', onRequest);
    // A 'checkContinue' or 'checkExpectation' listener changes how Node.js handles `Expect`,
    // so one is added only next to an existing one.
    for (const event of ['checkContinue', 'checkExpectation']) {
      if (this.#server.listenerCount(event) > 0) this.#server.prependListener(event, onRequest);
    }
    for (const socket of this.#sockets) {
      const res = socket._httpMessage;
      if (res) this.#closeAfter(res);
    }
    if (acceptGraceMs > 0) {
      await new Promise((resolve) => setTimeout(resolve, acceptGraceMs));
      this.#logger.info(
        { inFlight: this.inFlight, connections: this.#sockets.size },
        'drain accept grace period ended, listener closing',
      );
    }
    const closed = new Promise<void>((resolve) => this.#stopAccepting(resolve));

    let graceTimer: NodeJS.Timeout | undefined;
    if (graceMs > 0) {
      graceTimer = setTimeout(() => this.#closeIdle(), graceMs);
    } else {
      this.#closeIdle();
    }
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs - acceptGraceMs);
    });
    const outcome = await Promise.race([closed, deadline]);
    clearTimeout(timer);
    clearTimeout(graceTimer);

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
   * Closes the listener and calls `onClosed` once every connection is gone. Node.js 20's
   * `Server.close` also closes idle connections at once, which would cut the grace period
   * short, so its call of `closeIdleConnections` is skipped.
   */
  // NOTE: relies on `Server.close` calling `this.closeIdleConnections()` through the instance,
  // as Node.js 19 to 24 do. Were it to close idle connections another way, they would close at
  // the start of the drain, as they did before the grace period.
  #stopAccepting(onClosed: () => void): void {
    const server = this.#server;
    server.closeIdleConnections = skipIdleClose;
    try {
      server.close(() => onClosed());
    } finally {
      delete (server as Partial<Server>).closeIdleConnections;
    }
  }

  /** Ends the grace period: closes the idle connections now and each one that turns idle. */
  #closeIdle(): void {
    if (this.#closingIdle) return;
    this.#closingIdle = true;
    const open = [...this.#sockets].filter((socket) => !socket.destroyed);
    this.#server.closeIdleConnections();
    // `closeIdleConnections` destroys each idle connection at once.
    const idle = open.filter((socket) => socket.destroyed).length;
    this.#logger.info(
      { idle, open: open.length - idle, inFlight: this.inFlight },
      'drain grace period ended, idle connections closed',
    );
  }

  /**
   * Asks for the connection of `res` to close after it: `Connection: close` when its headers
   * are not sent yet. Once the grace period is over, the end of `res` also closes every idle
   * connection.
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
      if (this.#closingIdle) setImmediate(() => this.#server.closeIdleConnections());
    });
  }
}

/** Returns `ms` when it is a valid grace period, named `name` in the error. */
function checkGrace(name: keyof DrainGrace, ms: number): number {
  if (!Number.isInteger(ms) || ms < 0) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${name} ${ms}: expected an integer of 0 or more milliseconds, such as 1000`,
    );
  }
  return ms;
}

function skipIdleClose(): void {
  // The drain closes idle connections itself, after the grace period.
}

function isBusy(socket: HttpSocket): boolean {
  const res = socket._httpMessage;
  return res !== undefined && res !== null && !res.writableFinished;
}
