import type { ClientRequest, OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import { requestLoopError } from '../upstreams/own-connections.js';
import { requestTarget } from '../upstreams/target-request.js';
import type { ForwardedRequest } from './exchange.js';
import { rewritePath } from './route-actions.js';

/** Returns the path and query sent to `target` for a forwarded request. */
export function forwardedPath(target: UpstreamTarget, request: ForwardedRequest): string {
  return target.basePath === '' && !request.actions.rewritesPath
    ? request.pathAndQuery
    : rewritePath(target.basePath, request.actions, request.path) + request.query;
}

/**
 * Opens a `node:http` request to `target` on a connection of its own, outside the undici pool,
 * for the exchanges undici cannot carry: upgrades and `Expect: 100-continue`. The connection
 * is closed when the exchange ends (`agent: false`). `headers` is a flat list of names and
 * values and is sent as given; the Host header is added only when it lacks one.
 */
export function openUpstreamRequest(
  target: UpstreamTarget,
  method: string,
  path: string,
  headers: string[],
  connectTimeoutMs: number,
): ClientRequest {
  const connect = target.connect;
  let hasHost = false;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].length === 4 && headers[i].toLowerCase() === 'host') hasHost = true;
  }
  const options = {
    host: connect.hostname,
    port: connect.port,
    method,
    path,
    // `node:http` accepts the flat list that `rawHeaders` uses; its types only know objects.
    headers: headers as unknown as OutgoingHttpHeaders,
    setHost: !hasHost,
    agent: false as const,
  };
  const request = requestTarget(connect, options);
  if (connectTimeoutMs > 0) {
    limitConnectTime(request, connectTimeoutMs, connect.secure);
  }
  request.once('socket', (socket: Socket) => {
    socket.once('connect', () => {
      const loop = requestLoopError(socket, target.origin);
      if (loop !== undefined) request.destroy(loop);
    });
  });
  return request;
}

/** Destroys the request with `UND_ERR_CONNECT_TIMEOUT` unless its socket connects in time. */
function limitConnectTime(request: ClientRequest, timeoutMs: number, secure: boolean): void {
  request.once('socket', (socket: Socket) => {
    const timer = setTimeout(() => {
      request.destroy(
        Object.assign(new Error(`connect timed out after ${timeoutMs} ms`), {
          code: 'UND_ERR_CONNECT_TIMEOUT',
        }),
      );
    }, timeoutMs);
    socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
  });
}
