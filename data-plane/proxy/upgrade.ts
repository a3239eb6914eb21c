import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { RoutingTable } from '../table.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import { classifyUpstreamError, type ProxyError } from './error-response.js';
import type { ForwardedRequest, ProxyContext } from './exchange.js';
import { buildClientResponseHeaders, type ResponseHead } from './headers.js';
import { UNMATCHED } from './observer.js';
import { prepareRequest } from './prepare-request.js';
import { forwardedPath, openUpstreamRequest } from './upstream-request.js';

/**
 * Proxies a request with `Upgrade` (a WebSocket handshake) that the server's 'upgrade' event
 * delivered with the raw client socket. The request is routed like any other and sent on a
 * connection of its own with its `Connection: upgrade` and `Upgrade` headers. A 101 answer
 * turns both connections into one tunnel that copies bytes both ways with backpressure; any
 * other answer is relayed as an ordinary response and the client connection closes after it.
 *
 * Either side closing or failing destroys the other, and a tunnel without traffic in either
 * direction for `tunnelIdleTimeoutMs` is closed. Nothing here throws on a request.
 */
export function proxyUpgrade(
  context: ProxyContext,
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

  const { request, target } = prepared;
  const headers = [
    ...request.headers,
    'connection',
    'upgrade',
    'upgrade',
    req.headers.upgrade ?? '',
  ];
  target.state.active++;
  const upstream = openUpstreamRequest(
    target,
    request.method,
    forwardedPath(target, request),
    headers,
    context.upstreamConnectTimeoutMs,
  );
  let settled = false;
  const settle = (): boolean => {
    if (settled) return false;
    settled = true;
    target.state.active--;
    return true;
  };

  socket.once('close', () => {
    if (settle()) upstream.destroy();
  });
  upstream.on(
    'upgrade',
    (response: IncomingMessage, upstreamSocket: Socket, upstreamHead: Buffer) => {
      if (!settle()) {
        upstreamSocket.destroy();
        return;
      }
      target.state.recordSuccess();
      openTunnel(context, request, response, socket, head, upstreamSocket, upstreamHead);
      reportTunnel(context, req, request.route, 101, target);
    },
  );
  upstream.on('response', (response: IncomingMessage) => {
    settle();
    relayResponse(request, response, socket);
    reportTunnel(context, req, request.route, response.statusCode ?? 0, target);
  });
  upstream.on('error', (err: Error) => {
    if (!settle()) return;
    const error = classifyUpstreamError(err);
    if (error.status >= 502) target.state.recordFailure();
    const suppressed = context.upstreamFailureLog.take();
    if (suppressed !== undefined) {
      context.logger.warn(
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
    writeRawError(socket, error, request.route);
    reportTunnel(context, req, request.route, error.status, target);
  });
  upstream.end();
}

function openTunnel(
  context: ProxyContext,
  request: ForwardedRequest,
  response: IncomingMessage,
  client: Socket,
  clientHead: Buffer,
  upstream: Socket,
  upstreamHead: Buffer,
): void {
  // A 101 keeps its Connection and Upgrade headers, which tell the client what it switched to.
  const head: ResponseHead = { contentLength: undefined, trailerIndex: -1 };
  const headers = buildClientResponseHeaders(response.rawHeaders, request.actions, head);
  let text = `HTTP/1.1 101 ${response.statusMessage || 'Switching Protocols'}\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  text += `Connection: Upgrade\r\nUpgrade: ${response.headers.upgrade ?? ''}\r\n\r\n`;

  upstream.on('error', ignoreError);
  const close = (): void => {
    client.destroy();
    upstream.destroy();
  };
  client.once('close', close);
  upstream.once('close', close);
  client.setTimeout(context.tunnelIdleTimeoutMs, close);
  upstream.setTimeout(context.tunnelIdleTimeoutMs, close);
  context.observer.tunnelOpened();
  client.once('close', () => context.observer.tunnelClosed());

  client.write(text, 'latin1');
  if (upstreamHead.length > 0) client.write(upstreamHead);
  if (clientHead.length > 0) upstream.write(clientHead);
  client.pipe(upstream);
  upstream.pipe(client);
}

/** Writes a non-101 answer to an upgrade request as an ordinary response, then closes. */
function relayResponse(request: ForwardedRequest, response: IncomingMessage, client: Socket): void {
  const head: ResponseHead = { contentLength: undefined, trailerIndex: -1 };
  const headers = buildClientResponseHeaders(response.rawHeaders, request.actions, head);
  if (head.trailerIndex !== -1) headers.splice(head.trailerIndex, 2);
  const status = response.statusCode ?? 502;
  let text = `HTTP/1.1 ${status} ${response.statusMessage ?? ''}\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  // Without Content-Length the body runs until the connection closes, which it does here.
  text += 'Connection: close\r\n\r\n';

  client.write(text, 'latin1');
  response.on('error', () => client.destroy());
  client.once('close', () => response.destroy());
  response.pipe(client);
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
  socket.end(
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ''}\r\n` +
      'content-type: application/json\r\n' +
      `content-length: ${Buffer.byteLength(body)}\r\n` +
      'connection: close\r\n\r\n' +
      body,
  );
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
