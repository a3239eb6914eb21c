import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../../common/logger.js';
import { destroyResponse, PROXY_ERRORS, rawErrorText, type ProxyError } from './error-response.js';
import { LogLimiter } from '../../common/log-limiter.js';
import { resetConnection } from './socket-reset.js';

/**
 * Maximum number of requests parsed behind a rejected one before the connection is destroyed.
 * Reading stops after the chunk that contained the rejected request. Node.js 20 reads at most
 * 64 KiB at a time, which is about 3,600 minimal requests, so only a connection whose reading
 * resumed gets past this limit.
 */
export const MAX_REQUESTS_AFTER_REJECTION = 4_096;

/**
 * Time a connection may take to send its final error response after a parse error before it is
 * destroyed, in milliseconds.
 */
const CLOSE_LINGER_MS = 5_000;

/** Warn lines allowed per second about connections destroyed by the limit. */
const LOG_LINES_PER_SECOND = 10;

/**
 * Key of the exchange that forwards a request, on the request's client response. The guard
 * stops it when the request body fails to parse.
 */
export const kForwarder = Symbol('loom.forwarder');

/** Part of an exchange that the guard calls when the request body fails to parse. */
export interface BodyForwarder {
  /**
   * Aborts the upstream request because the client's request body failed to parse, and stops
   * writing to the client response. `status` is the status code that the guard sends in place
   * of the response when none of it was written. Returns true when the response started and
   * its body ends only with the connection, so that only a reset shows the cut.
   */
  abortInvalidBody(status: number): boolean;
}

const kRejected = Symbol('loom.rejected');
const kLastResponse = Symbol('loom.lastResponse');
const kBodyIgnored = Symbol('loom.bodyIgnored');

interface ClientSocket extends Socket {
  /**
   * Number of requests parsed after one that was rejected with `Connection: close` or that
   * Node.js failed to parse; undefined while neither happened on the connection.
   */
  [kRejected]?: number;
  /** Response to the latest request that reached the proxy's listeners. */
  [kLastResponse]?: ServerResponse;
  /**
   * True when the body of the latest request is not forwarded, because the request was rejected
   * before its body was read or because the body failed to parse.
   */
  [kBodyIgnored]?: boolean;
  /** Response that Node.js is writing to the socket; see `resumeResponse`. */
  _httpMessage?: ServerResponse | null;
}

/** Error that Node.js passes to the 'clientError' listener. */
type ClientError = Error & { code?: string };

/** Client response that may carry the exchange forwarding its request. */
interface ForwardedResponse extends ServerResponse {
  [kForwarder]?: BodyForwarder;
}

/**
 * Keeps the responses on a pipelining client connection in order when a request on it is
 * rejected or cannot be parsed. Node.js writes the responses to pipelined requests in request
 * order, so destroying the socket at a rejection would drop responses still queued ahead of it.
 * Instead the rejection is sent after them with `Connection: close`, and the requests parsed
 * after it get no response and are not forwarded, because their framing is not trusted.
 */
export class PipelineGuard {
  readonly #logger: Logger;
  readonly #log = new LogLimiter(LOG_LINES_PER_SECOND, 1_000);

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /**
   * Records a request that Node.js parsed. Returns false when the request follows a rejected
   * one, which means that it gets no response and must not be forwarded.
   */
  admit(req: IncomingMessage, res: ServerResponse): boolean {
    const socket = req.socket as ClientSocket;
    if (socket[kRejected] !== undefined) {
      this.#holdAfterRejection(socket);
      return false;
    }
    socket[kLastResponse] = res;
    return true;
  }

  /**
   * Records an upgrade or CONNECT request, which Node.js hands over with the raw socket. Returns
   * false when it follows a rejected request. Node.js still writes the responses queued on the
   * socket, and the rejection closes the connection.
   */
  admitUpgrade(socket: Socket): boolean {
    if ((socket as ClientSocket)[kRejected] === undefined) {
      return true;
    }
    socket.on('error', ignoreSocketError);
    socket.pause();
    // Node.js removed its own 'drain' listener, which resumes the response it is writing.
    socket.on('drain', () => resumeResponse(socket));
    return false;
  }

  /**
   * Runs `proceed` once the responses queued before an upgrade request are sent, so that the
   * upgrade's response follows them. The connection is destroyed when one of them closes
   * unfinished. Reading waits meanwhile.
   */
  afterQueuedResponses(socket: Socket, proceed: () => void): void {
    const last = (socket as ClientSocket)[kLastResponse];
    if (last === undefined || last.writableFinished) {
      proceed();
      return;
    }
    socket.pause();
    // Node.js removed its own 'drain' listener, which resumes the response it is writing.
    const onDrain = (): void => resumeResponse(socket);
    socket.on('drain', onDrain);
    last.once('finish', () => {
      socket.removeListener('drain', onDrain);
      // The upgrade handler reads with a 'data' listener, which does not undo a pause.
      socket.resume();
      proceed();
    });
    last.once('close', () => {
      if (!last.writableFinished) socket.destroy();
    });
  }

  /**
   * Marks the connection of a request rejected with `Connection: close` before its body was
   * read, and stops reading from it.
   */
  reject(socket: Socket): void {
    markConnectionClosing(socket);
    (socket as ClientSocket)[kBodyIgnored] = true;
    process.nextTick(pauseSocket, socket);
  }

  /**
   * The server's 'clientError' listener. It sends the status Node.js sends by default (400,
   * 408 for ERR_HTTP_REQUEST_TIMEOUT, 413 for HPE_CHUNK_EXTENSIONS_OVERFLOW and 431 for
   * HPE_HEADER_OVERFLOW), with a JSON error body and `Connection: close`, but only after
   * the responses still queued on the connection, and then closes it. On a connection that
   * already carries a rejection it sends nothing. A parse error or timeout in a request body
   * that is being read also keeps the responses queued ahead of that request (see `#failBody`).
   */
  readonly clientError = (err: ClientError, socket: Socket): void => {
    const client = socket as ClientSocket;
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = errorStatus(err.code);
    const last = client[kLastResponse];
    if (last !== undefined && !last.req.complete && client[kBodyIgnored] !== true) {
      if (err.code === 'HPE_INVALID_EOF_STATE') {
        // The client closed its side of the connection in the middle of the body. Node.js 20
        // ends the connection when a client does that between requests too, because the
        // server's `httpAllowHalfOpen` is off.
        if (last.socket === socket && !last.headersSent) {
          socket.write(rawErrorResponse(status), 'latin1');
        }
        socket.destroy();
        return;
      }
      this.#failBody(client, last, status);
      return;
    }
    socket.pause();
    if (client[kRejected] !== undefined) {
      return;
    }
    client[kRejected] = 0;

    const response = rawErrorResponse(status);
    if (last === undefined || last.writableFinished) {
      endWith(socket, response);
      return;
    }
    last.once('finish', () => endWith(socket, response));
    last.once('close', () => {
      if (!last.writableFinished) socket.destroy();
    });
  };

  /**
   * Handles a parse error or timeout in the body of the latest request, `last`, whose body was
   * being read. The upstream request is aborted, and the responses queued ahead of `last` are
   * still sent. In place of `last` the client gets `status` when nothing of it was written, the
   * rest of it when it was complete, and a cut connection otherwise. Then the connection closes.
   */
  #failBody(socket: ClientSocket, last: ServerResponse, status: number): void {
    socket[kBodyIgnored] = true;
    socket[kRejected] ??= 0;
    socket.pause();
    if (last.writableFinished) {
      socket.destroy();
      return;
    }

    const forwarder = (last as ForwardedResponse)[kForwarder];
    const closeDelimited = forwarder?.abortInvalidBody(status) === true;
    if (last.writableEnded) {
      // The response is complete but still queued or being written.
      last.once('finish', () => endWith(socket));
      last.once('close', () => {
        if (!last.writableFinished) socket.destroy();
      });
      return;
    }
    if (last.headersSent) {
      if (closeDelimited && last.socket === socket) {
        resetConnection(socket);
        return;
      }
      // NOTE: a close-delimited response still queued behind another (HTTP/1.0 keep-alive with
      // pipelining) ends with a FIN, because a reset would drop the responses ahead of it.
      // The socket is destroyed once the response's turn comes, so earlier ones are sent.
      destroyResponse(last);
      return;
    }
    if (forwarder === undefined) {
      // NOTE: a response without a BodyForwarder, such as that of a request with
      // `Expect: 100-continue`, may still be written to, so the connection is destroyed as
      // Node.js does, with the responses queued ahead of it.
      if (last.socket === socket) socket.write(rawErrorResponse(status), 'latin1');
      socket.destroy();
      return;
    }

    const response = rawErrorResponse(status);
    if (last.socket === socket) {
      endWith(socket, response);
      return;
    }
    // Node.js assigns the socket to a queued response when the response before it finishes.
    // NOTE: 'socket' is not a documented event of ServerResponse. Node.js 20 emits it in
    // `ServerResponse.assignSocket`, before it writes what the response buffered.
    last.once('socket', () => endWith(socket, response));
  }

  #holdAfterRejection(socket: ClientSocket): void {
    const count = (socket[kRejected] ?? 0) + 1;
    socket[kRejected] = count;
    if (count <= MAX_REQUESTS_AFTER_REJECTION) {
      process.nextTick(pauseSocket, socket);
      return;
    }
    if (count === MAX_REQUESTS_AFTER_REJECTION + 1) {
      const suppressed = this.#log.take();
      if (suppressed !== undefined) {
        this.#logger.warn(
          { remoteAddress: socket.remoteAddress, requests: count, suppressed },
          'client connection destroyed: too many requests pipelined after a rejected request',
        );
      }
    }
    socket.destroy();
  }
}

/**
 * Marks the connection of a response sent with `Connection: close`, so that the requests parsed
 * after it on the connection get no response and are not forwarded. Reading goes on, because the
 * rest of the request body may still be streaming to the upstream.
 */
export function markConnectionClosing(socket: Socket): void {
  const client = socket as ClientSocket;
  client[kRejected] ??= 0;
}

// Node.js 20 resumes reading when it finishes parsing a request, which happens after the
// 'request' listener ran, so the pause waits for the chunk in hand to be parsed.
function pauseSocket(socket: Socket): void {
  socket.pause();
}

/**
 * Emits 'drain' on the response that Node.js is writing to `socket` when it waits for one.
 */
// NOTE: `_httpMessage` is not a documented API. Node.js 20 sets it in
// `ServerResponse.assignSocket` and clears it when the response finishes.
function resumeResponse(socket: ClientSocket): void {
  const res = socket._httpMessage;
  if (res?.writableNeedDrain === true) res.emit('drain');
}

/** Returns the status that Node.js 20 sends by default for a 'clientError' with `code`. */
function errorStatus(code: string | undefined): number {
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408;
  if (code === 'HPE_CHUNK_EXTENSIONS_OVERFLOW') return 413;
  if (code === 'HPE_HEADER_OVERFLOW') return 431;
  return 400;
}

/** The error response to a request that Node.js could not parse or timed out, by status. */
const CLIENT_ERRORS: Readonly<Record<number, ProxyError>> = {
  400: PROXY_ERRORS.unparsableRequest,
  408: PROXY_ERRORS.requestTimeout,
  413: PROXY_ERRORS.chunkExtensionsTooLarge,
  431: PROXY_ERRORS.requestHeadTooLarge,
};

/**
 * Returns the response to a 'clientError' of `status`, with a JSON body as every other error
 * of the proxy. Node.js 22 and later report a request with more than `maxHeadersCount` fields
 * as HPE_HEADER_OVERFLOW, so such a request also gets `request_header_fields_too_large` there.
 */
function rawErrorResponse(status: number): string {
  return rawErrorText(CLIENT_ERRORS[status] ?? PROXY_ERRORS.unparsableRequest).text;
}

/**
 * Writes `response` and closes the connection once it is sent, or after CLOSE_LINGER_MS. A
 * connection that is already ending, after a response with `Connection: close`, only closes.
 */
function endWith(socket: Socket, response = ''): void {
  if (socket.writable) socket.end(response, 'latin1');
  socket.destroySoon();
  const timer = setTimeout(() => socket.destroy(), CLOSE_LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

function ignoreSocketError(): void {
  // The socket closes after the error, and nothing else is waiting on it.
}
