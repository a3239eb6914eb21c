import { STATUS_CODES, type ClientRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { RoutingTable } from '../table.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import { classifyUpstreamError, type ProxyError } from './error-response.js';
import { resetConnection, type ForwardedRequest, type ProxyContext } from './exchange.js';
import { buildClientResponseHeaders, type ResponseHead } from './headers.js';
import { UNMATCHED } from './observer.js';
import { prepareRequest } from './prepare-request.js';
import { forwardedPath, openUpstreamRequest } from './upstream-request.js';

/** Default time a tunnel stays open after a table swap removed its route: 30 seconds. */
export const DEFAULT_TUNNEL_DRAIN_TIMEOUT_MS = 30_000;

/** Maximum time between two checks of the table in service while tunnels are open. */
const TABLE_CHECK_INTERVAL_MS = 1_000;

/**
 * Maximum bytes read from the client before the upstream responds to the handshake. Past it the
 * client socket is paused, and only the response header timeout ends a stalled handshake.
 */
const MAX_EARLY_CLIENT_BYTES = 64 * 1024;

/**
 * Proxies a request with `Upgrade` (a WebSocket handshake) that the server's 'upgrade' event
 * delivered with the raw client socket. The request is routed like any other and sent on a
 * connection of its own with its `Connection: upgrade` and `Upgrade` headers. A 101 answer
 * turns both connections into one tunnel that copies bytes both ways with backpressure; any
 * other answer is relayed as an ordinary response and the client connection closes after it.
 *
 * Until the upstream responds, the client's bytes are held back, and the client ending or
 * closing its side destroys both connections. Without an answer within the route's
 * `responseHeaderMs` (or the proxy's upstream headers timeout) the client gets 504. In a
 * tunnel, either side closing or failing destroys the other, a tunnel without traffic in
 * either direction for `tunnelIdleTimeoutMs` is closed, and `tunnels` closes tunnels whose
 * route a table swap removed. Nothing here throws on a request.
 */
export function proxyUpgrade(
  context: ProxyContext,
  tunnels: TunnelRegistry,
  table: RoutingTable | undefined,
  req: IncomingMessage,
  socket: Socket,
  head: Buffer,
): void {
  socket.on('error', ignoreError);
  const prepared = prepareRequest(context, table, req, 0);
  if (!prepared.ok) {
    writeRawError(socket, prepared.error, prepared.route, prepared.message);
    reportTunnel(context, req, prepared.route ?? UNMATCHED, prepared.error.status, undefined);
    return;
  }

  const handshake = new PendingUpgrade(context, tunnels, req, socket, prepared.request);
  handshake.start(prepared.target, prepared.head.host, head, table);
}

/** One upgrade request from the moment it is sent upstream until the upstream responds. */
class PendingUpgrade {
  readonly #context: ProxyContext;
  readonly #tunnels: TunnelRegistry;
  readonly #req: IncomingMessage;
  readonly #client: Socket;
  readonly #request: ForwardedRequest;
  #target!: UpstreamTarget;
  #upstream!: ClientRequest;
  #table: RoutingTable | undefined;
  #host: string | undefined;
  /** Client bytes that arrived before the answer; written upstream after a 101. */
  readonly #early: Buffer[] = [];
  #earlyBytes = 0;
  #headersTimer: NodeJS.Timeout | undefined;
  #settled = false;
  /** Cuts the client connection while a non-101 answer is relayed; undefined before that. */
  #cutRelay: (() => void) | undefined;
  readonly #onClientData = (chunk: Buffer): void => this.#holdClientBytes(chunk);
  readonly #onClientGone = (): void => this.#abandon();

  constructor(
    context: ProxyContext,
    tunnels: TunnelRegistry,
    req: IncomingMessage,
    client: Socket,
    request: ForwardedRequest,
  ) {
    this.#context = context;
    this.#tunnels = tunnels;
    this.#req = req;
    this.#client = client;
    this.#request = request;
  }

  /** Sends the handshake to `target`; `host` and `table` are what the request was routed on. */
  start(
    target: UpstreamTarget,
    host: string | undefined,
    head: Buffer,
    table: RoutingTable | undefined,
  ): void {
    const request = this.#request;
    const req = this.#req;
    this.#target = target;
    this.#host = host;
    this.#table = table;
    if (head.length > 0) this.#holdClientBytes(head);
    const headers = [
      ...request.headers,
      'connection',
      'upgrade',
      'upgrade',
      req.headers.upgrade ?? '',
    ];
    const actions = request.actions;
    const context = this.#context;
    const connectTimeout =
      actions.connectTimeoutMs > 0 ? actions.connectTimeoutMs : context.upstreamConnectTimeoutMs;
    const headersTimeout =
      actions.headersTimeoutMs > 0 ? actions.headersTimeoutMs : context.upstreamHeadersTimeoutMs;
    target.state.active++;
    const upstream = openUpstreamRequest(
      target,
      request.method,
      forwardedPath(target, request),
      headers,
      connectTimeout,
    );
    this.#upstream = upstream;

    // The server socket allows half-open connections, so a client that sends FIN emits 'end'
    // and never 'close'; reading the socket is the only way to see that FIN.
    const client = this.#client;
    client.on('data', this.#onClientData);
    client.on('end', this.#onClientGone);
    client.on('close', this.#onClientGone);
    upstream.on('upgrade', (response: IncomingMessage, socket: Socket, upstreamHead: Buffer) =>
      this.#switchProtocols(response, socket, upstreamHead),
    );
    upstream.on('response', (response: IncomingMessage) => this.#relay(response));
    upstream.on('error', (err: Error) => this.#fail(err));
    if (headersTimeout > 0) {
      this.#headersTimer = setTimeout(() => this.#timeOut(headersTimeout), headersTimeout);
    }
    upstream.end();
  }

  #holdClientBytes(chunk: Buffer): void {
    this.#early.push(chunk);
    this.#earlyBytes += chunk.length;
    if (this.#earlyBytes > MAX_EARLY_CLIENT_BYTES) this.#client.pause();
  }

  /** Ends the handshake; returns false when it had already ended. */
  #settle(): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    this.#table = undefined;
    clearTimeout(this.#headersTimer);
    this.#target.state.active--;
    const client = this.#client;
    client.off('data', this.#onClientData);
    client.off('end', this.#onClientGone);
    client.off('close', this.#onClientGone);
    return true;
  }

  #abandon(): void {
    if (!this.#settle()) return;
    this.#upstream.destroy();
    this.#client.destroy();
    reportTunnel(this.#context, this.#req, this.#request.route, 0, this.#target);
  }

  #timeOut(timeoutMs: number): void {
    this.#upstream.destroy(
      Object.assign(new Error(`no response headers within ${timeoutMs} ms`), {
        code: 'UND_ERR_HEADERS_TIMEOUT',
      }),
    );
  }

  #switchProtocols(response: IncomingMessage, upstream: Socket, upstreamHead: Buffer): void {
    const table = this.#table;
    if (!this.#settle()) {
      upstream.destroy();
      return;
    }

    this.#target.state.recordSuccess();
    const tunnel = new Tunnel(this.#context, this.#client, upstream, this.#request, this.#host);
    tunnel.open(response, this.#early, upstreamHead);
    this.#tunnels.add(tunnel, table);
    reportTunnel(this.#context, this.#req, this.#request.route, 101, this.#target);
  }

  #relay(response: IncomingMessage): void {
    if (!this.#settle()) {
      response.destroy();
      return;
    }

    // Later client bytes belong to no request, so they are read and dropped. Reading them lets
    // the client's FIN arrive, which closes the socket once the response is written.
    this.#client.resume();
    this.#cutRelay = relayResponse(this.#request, response, this.#client);
    reportTunnel(
      this.#context,
      this.#req,
      this.#request.route,
      response.statusCode ?? 0,
      this.#target,
    );
  }

  #fail(err: Error): void {
    // Node.js reports a reset during a body delimited by the connection close as an error of
    // the request, and then ends the response as if it were complete.
    if (this.#cutRelay !== undefined) {
      this.#cutRelay();
      return;
    }
    if (!this.#settle()) return;

    const request = this.#request;
    const target = this.#target;
    const error = classifyUpstreamError(err);
    if (error.status >= 502) target.state.recordFailure();
    const suppressed = this.#context.upstreamFailureLog.take();
    if (suppressed !== undefined) {
      this.#context.logger.warn(
        {
          route: request.route,
          target: target.origin,
          code: (err as { code?: unknown }).code,
          suppressed,
          err,
        },
        'upstream upgrade failed',
      );
    }
    writeRawError(this.#client, error, request.route);
    reportTunnel(this.#context, this.#req, request.route, error.status, target);
  }
}

/** An open tunnel: two sockets that copy bytes to each other after a 101 answer. */
class Tunnel {
  readonly #context: ProxyContext;
  readonly #client: Socket;
  readonly #upstream: Socket;
  readonly #actions: ForwardedRequest['actions'];
  /** The route the handshake matched, and what the router needs to match it again. */
  readonly route: string;
  readonly method: string;
  readonly host: string | undefined;
  readonly path: string;
  /** Closes the tunnel when a swap removed its route; undefined while the route exists. */
  drainTimer: NodeJS.Timeout | undefined;
  /** Called once when the tunnel closes. */
  onClose: (() => void) | undefined;

  constructor(
    context: ProxyContext,
    client: Socket,
    upstream: Socket,
    request: ForwardedRequest,
    host: string | undefined,
  ) {
    this.#context = context;
    this.#client = client;
    this.#upstream = upstream;
    this.#actions = request.actions;
    this.route = request.route;
    this.method = request.method;
    this.host = host;
    // The normalised path matches the same routes as the path it came from.
    this.path = request.path;
  }

  /** Sends the 101 to the client, then the bytes each side sent early, then copies both ways. */
  open(response: IncomingMessage, clientEarly: readonly Buffer[], upstreamHead: Buffer): void {
    const client = this.#client;
    const upstream = this.#upstream;
    // A 101 keeps its Connection and Upgrade headers, which tell the client what it switched to.
    const head: ResponseHead = { contentLength: undefined, trailerIndex: -1 };
    const headers = buildClientResponseHeaders(response.rawHeaders, this.#actions, head);
    let text = `HTTP/1.1 101 ${response.statusMessage || 'Switching Protocols'}\r\n`;
    for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
    text += `Connection: Upgrade\r\nUpgrade: ${response.headers.upgrade ?? ''}\r\n\r\n`;

    upstream.on('error', ignoreError);
    const close = (): void => this.close();
    client.once('close', close);
    upstream.once('close', close);
    client.setTimeout(this.#context.tunnelIdleTimeoutMs, close);
    upstream.setTimeout(this.#context.tunnelIdleTimeoutMs, close);
    this.#context.observer.tunnelOpened();
    client.once('close', () => this.#context.observer.tunnelClosed());

    client.write(text, 'latin1');
    if (upstreamHead.length > 0) client.write(upstreamHead);
    for (const chunk of clientEarly) upstream.write(chunk);
    // A FIN from either side is passed on; the tunnel ends when either side closes.
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Destroys both sockets; safe to call more than once. */
  close(): void {
    clearTimeout(this.drainTimer);
    this.#client.destroy();
    this.#upstream.destroy();
    const onClose = this.onClose;
    this.onClose = undefined;
    onClose?.();
  }
}

/**
 * The open tunnels of one proxy handler. The proxy is not notified of table swaps, so while
 * tunnels are open the registry reads the table in service once per check interval. After a
 * swap it matches each tunnel's handshake (method, Host, path) again: a tunnel that no longer
 * reaches its route is closed `drainTimeoutMs` later, unless a later swap brings the route
 * back before then. Tunnels whose route still matches stay open across swaps.
 */
export class TunnelRegistry {
  readonly #tunnels = new Set<Tunnel>();
  readonly #getTable: () => RoutingTable | undefined;
  readonly #drainTimeoutMs: number;
  readonly #checkIntervalMs: number;
  readonly #logger: Logger;
  /** The table the tunnels were last matched against; weak, so an old table is not kept. */
  #checked: WeakRef<RoutingTable> | undefined;
  #timer: NodeJS.Timeout | undefined;

  /** @throws LoomError `LOOM_INVALID_ARGUMENT` when `drainTimeoutMs` is not an integer of 0 or more. */
  constructor(getTable: () => RoutingTable | undefined, drainTimeoutMs: number, logger: Logger) {
    if (!Number.isInteger(drainTimeoutMs) || drainTimeoutMs < 0) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid tunnelDrainTimeoutMs ${drainTimeoutMs}: expected an integer of 0 or more`,
      );
    }

    this.#getTable = getTable;
    this.#drainTimeoutMs = drainTimeoutMs;
    // A short drain timeout gets checks as frequent, so the deadline is not mostly check delay.
    this.#checkIntervalMs = Math.max(10, Math.min(TABLE_CHECK_INTERVAL_MS, drainTimeoutMs));
    this.#logger = logger;
  }

  /** Number of open tunnels. */
  get size(): number {
    return this.#tunnels.size;
  }

  /** Tracks an open tunnel whose handshake was routed on `table`. */
  add(tunnel: Tunnel, table: RoutingTable | undefined): void {
    this.#tunnels.add(tunnel);
    tunnel.onClose = () => this.#remove(tunnel);
    if (this.#timer === undefined) {
      this.#checked = table === undefined ? undefined : new WeakRef(table);
      this.#timer = setInterval(() => this.#check(), this.#checkIntervalMs);
      this.#timer.unref();
    }

    // A swap during the handshake is not seen by the next check when it already saw the new table.
    const current = this.#getTable();
    if (current !== table && this.#review(tunnel, current)) this.#logDrain(current, 1);
  }

  #remove(tunnel: Tunnel): void {
    this.#tunnels.delete(tunnel);
    if (this.#tunnels.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      this.#checked = undefined;
    }
  }

  #check(): void {
    const table = this.#getTable();
    if (table !== undefined && this.#checked?.deref() === table) return;

    this.#checked = table === undefined ? undefined : new WeakRef(table);
    let draining = 0;
    for (const tunnel of this.#tunnels) {
      if (this.#review(tunnel, table)) draining++;
    }
    if (draining > 0) this.#logDrain(table, draining);
  }

  /** Starts or cancels the drain of `tunnel` on `table`; returns true when it started one. */
  #review(tunnel: Tunnel, table: RoutingTable | undefined): boolean {
    const match = table?.router.find(tunnel.method, tunnel.host, tunnel.path);
    if (match?.kind === 'found' && match.route === tunnel.route) {
      clearTimeout(tunnel.drainTimer);
      tunnel.drainTimer = undefined;
      return false;
    }
    if (tunnel.drainTimer !== undefined) return false;

    tunnel.drainTimer = setTimeout(() => this.#closeDrained(tunnel), this.#drainTimeoutMs);
    return true;
  }

  #closeDrained(tunnel: Tunnel): void {
    const logger = this.#logger;
    if (logger.isLevelEnabled('debug')) {
      logger.debug({ route: tunnel.route }, 'tunnel closed after its route was removed');
    }
    tunnel.close();
  }

  #logDrain(table: RoutingTable | undefined, tunnels: number): void {
    this.#logger.info(
      { version: table?.version, tunnels, drainTimeoutMs: this.#drainTimeoutMs },
      'tunnels draining after their routes were removed',
    );
  }
}

/**
 * Writes a non-101 answer to an upgrade request as an ordinary response, then closes. Returns
 * a function that cuts the client connection when the upstream fails during the body.
 */
function relayResponse(
  request: ForwardedRequest,
  response: IncomingMessage,
  client: Socket,
): () => void {
  const head: ResponseHead = { contentLength: undefined, trailerIndex: -1 };
  const headers = buildClientResponseHeaders(response.rawHeaders, request.actions, head);
  if (head.trailerIndex !== -1) headers.splice(head.trailerIndex, 2);
  const status = response.statusCode ?? 502;
  let text = `HTTP/1.1 ${status} ${response.statusMessage ?? ''}\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  // Without Content-Length the body runs until the connection closes, which it does here.
  text += 'Connection: close\r\n\r\n';
  const closeDelimited = head.contentLength === undefined;

  // The client tells a cut body from a whole one by its length or, without one, by a reset.
  const cut = (): void => {
    if (closeDelimited) {
      resetConnection(client);
    } else if (!response.complete) {
      client.destroy();
    }
  };

  client.write(text, 'latin1');
  response.on('error', ignoreError);
  response.on('close', () => {
    if (!response.complete) cut();
  });
  response.on('end', () => client.destroySoon());
  client.once('close', () => response.destroy());
  response.pipe(client, { end: false });
  return cut;
}

function writeRawError(
  socket: Socket,
  error: ProxyError,
  route?: string,
  message = error.message,
): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(
    route === undefined ? { error: error.error, message } : { error: error.error, message, route },
  );
  // Reading and dropping what the client sends lets its FIN arrive; the socket is destroyed
  // once the response is written either way.
  socket.resume();
  socket.end(
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ''}\r\n` +
      'content-type: application/json\r\n' +
      `content-length: ${Buffer.byteLength(body)}\r\n` +
      'connection: close\r\n\r\n' +
      body,
  );
  socket.destroySoon();
}

function reportTunnel(
  context: ProxyContext,
  req: IncomingMessage,
  route: string,
  status: number,
  target: UpstreamTarget | undefined,
): void {
  if (context.observer.enabled) {
    context.observer.requestFinished(req, route, status, target, 0, 0);
  }
}

function ignoreError(): void {
  // 'close' follows every socket error, and the close handlers clean up.
}
