import { createServer, type Server } from 'node:http';
import { registerOwnListener } from '../upstreams/own-connections.js';
import { LoomError } from '../../common/errors.js';
import {
  createProxyHandlers,
  DEFAULT_MAX_HEADER_COUNT,
  type ProxyHandlerOptions,
  type ProxyHandlers,
} from './proxy.js';

/** Client-side limits of a proxy listener. Times are in milliseconds. */
export interface ClientLimits {
  /** Largest request head (request line and headers) in bytes; larger gets 431. Default 16384. */
  maxHeaderBytes?: number;
  /** Time to receive the complete request head; a slower client gets 408. Default 10000. */
  headersTimeoutMs?: number;
  /** Time to receive the complete request, body included; 0 disables it. Default 300000. */
  requestTimeoutMs?: number;
  /** Idle time of a keep-alive client connection between requests. Default 5000. */
  keepAliveTimeoutMs?: number;
}

/** Settings of `createProxyServer`: the handler's and the listener's. */
export type ProxyServerOptions = ProxyHandlerOptions & ClientLimits;

/**
 * Creates the `node:http` server of a proxy listener with the client limits applied and the
 * proxy's 'request', 'checkContinue', 'checkExpectation', 'upgrade', 'connect' and
 * 'clientError' listeners attached. A client gets 431 for an oversized head and 400 for a
 * request that Node.js fails to parse, after the responses to its earlier pipelined requests,
 * and then the connection closes. It gets 408 for a head or request that arrives too slowly,
 * checked every second, so a client sending one byte per second is cut off within a second of
 * the limit. A client that takes no bytes for `sendTimeoutMs` while some wait for it is cut off
 * (see `SendWatchdog`).
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` on a limit out of range.
 */
export function createProxyServer(options: ProxyServerOptions): {
  server: Server;
  handlers: ProxyHandlers;
} {
  const maxHeaderSize = positive('maxHeaderBytes', options.maxHeaderBytes, 16_384);
  const headersTimeout = positive('headersTimeoutMs', options.headersTimeoutMs, 10_000);
  const requestTimeout = options.requestTimeoutMs ?? 300_000;
  if (
    !Number.isInteger(requestTimeout) ||
    (requestTimeout !== 0 && requestTimeout < headersTimeout)
  ) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid requestTimeoutMs ${requestTimeout}: expected 0 or an integer of at least headersTimeoutMs (${headersTimeout})`,
    );
  }
  const keepAliveTimeout = positive('keepAliveTimeoutMs', options.keepAliveTimeoutMs, 5_000);
  const maxHeaderCount = positive(
    'maxHeaderCount',
    options.maxHeaderCount,
    DEFAULT_MAX_HEADER_COUNT,
  );

  const handlers = createProxyHandlers({ ...options, maxHeaderCount });
  const server = createServer(
    {
      maxHeaderSize,
      headersTimeout,
      requestTimeout,
      keepAliveTimeout,
      connectionsCheckingInterval: Math.min(1_000, headersTimeout),
      // The handler answers a missing Host itself, so it can close the connection.
      requireHostHeader: false,
    },
    handlers.request,
  );
  // Node.js drops header fields past maxHeadersCount without telling; one more than the limit
  // lets the handler see the overflow and answer 431.
  server.maxHeadersCount = maxHeaderCount + 1;
  server.on('checkContinue', handlers.checkContinue);
  server.on('checkExpectation', handlers.checkExpectation);
  server.on('clientError', handlers.clientError);
  server.on('connection', handlers.sendWatchdog.track);
  server.once('close', () => handlers.sendWatchdog.stop());
  server.on('upgrade', handlers.upgrade);
  server.on('connect', handlers.connect);
  registerOwnListener(server);
  return { server, handlers };
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) {
    return fallback;
  }
  if (!Number.isInteger(value) || value < 1) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${name} ${value}: expected a positive integer`,
    );
  }
  return value;
}
