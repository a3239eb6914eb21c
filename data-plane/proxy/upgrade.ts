import type { ClientRequest, IncomingMessage, InformationEvent } from 'node:http';
import type { Socket } from 'node:net';
import type { RoutingTable } from '../table.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import {
  classifyUpstreamError,
  PROXY_ERRORS,
  UPSTREAM_UPGRADE_CODE,
  upstreamErrorLogFields,
  writeRawErrorResponse,
  type ProxyError,
} from './error-response.js';
import { isTrailerContentLength, type ForwardedRequest, type ProxyContext } from './exchange.js';
import { TRAILERS_DROPPED_CODE } from './observed-exchange.js';
import { resetConnection } from './socket-reset.js';
import { buildClientResponseHeaders, unrelayableResponse, type ResponseHead } from './headers.js';
import { limitBodyIdleTime } from './body-idle-timer.js';
import { ChunkedBodyError, ChunkedDecoder } from './chunked-decoder.js';
import { informationalHead, MAX_INFORMATIONAL_RESPONSES } from './informational.js';
import { UNMATCHED, upstreamFailureOf } from './observer.js';
import { prepareRequest } from './prepare-request.js';
import { Tunnel, type TunnelRegistry } from './tunnel.js';
import { describeUnofferedProtocol, forwardableUpgradeProtocols } from './upgrade-protocols.js';
import { forwardedPath, openUpstreamRequest } from './upstream-request.js';

/**
 * Maximum bytes read from the client before the upstream responds to the handshake. Past it the
 * client socket is paused, and only the response header timeout ends a stalled handshake.
 */
const MAX_EARLY_CLIENT_BYTES = 64 * 1024;

const CRLF = Buffer.from('\r\n');
const LAST_CHUNK = '0\r\n\r\n';

/** Failure of a 101 whose connection closed before the end of the chunked request body. */
const SWITCH_CLOSED_BEFORE_BODY_END = Object.assign(
  new Error('the upstream closed the connection after 101 before the end of the request body'),
  { code: UPSTREAM_UPGRADE_CODE },
);

/** A 101 from the upstream with its connection and the bytes that followed it. */
interface UpstreamSwitch {
  response: IncomingMessage;
  socket: Socket;
  upstreamHead: Buffer;
}

/**
 * Proxies a request with `Upgrade` (a WebSocket handshake) that the server's 'upgrade' event
 * delivered with the raw client socket. The request is routed like any other and sent on a
 * connection of its own with its `Connection: upgrade` and `Upgrade` headers, less the `h2c`
 * protocol; without another protocol it goes as an ordinary request. A 101 response that names
 * only offered protocols turns both connections into one tunnel that copies bytes both ways
 * with backpressure. Any other response is relayed as an ordinary response, and the client
 * connection closes after it.
 *
 * Node.js parses no request body here. A Content-Length body is sent upstream as it arrives,
 * because the new protocol starts only after the whole request message. A chunked body is
 * decoded here to find its end and sent upstream chunked anew, without its extensions and
 * trailers. An invalid one gets 400, 413 or 431 unless the upstream already responded.
 *
 * Until the upstream responds, the client's bytes are held back, and the client ending or
 * closing its side destroys both connections. Without a response within the route's
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
  const startTime = context.observer.enabled ? performance.now() : 0;
  const prepared = prepareRequest(context, table, req, 0);
  if (prepared.ok === 'options') {
    writeOptionsResponse(socket, prepared.allow);
    reportTunnel(context, req, UNMATCHED, 200, undefined, startTime);
    return;
  }
  if (!prepared.ok) {
    writeRawError(socket, prepared.error, prepared.route, prepared.message, prepared.allow);
    reportTunnel(
      context,
      req,
      prepared.route ?? UNMATCHED,
      prepared.error.status,
      undefined,
      startTime,
    );
    return;
  }

  const handshake = new PendingUpgrade(context, tunnels, req, socket, prepared.request, startTime);
  // prepareRequest rejected any transfer coding but chunked, and Transfer-Encoding in HTTP/1.0.
  const maxBodyBytes = prepared.request.actions.maxRequestBodyBytes ?? context.maxRequestBodyBytes;
  const body =
    prepared.head.transferEncoding !== undefined
      ? new ChunkedDecoder(maxBodyBytes)
      : Number(prepared.head.contentLength ?? '0');
  // prepareRequest rejected any other expectation with 417, and HTTP/1.0 ignores Expect.
  const expectsContinue =
    prepared.head.expect !== undefined && req.httpVersion !== '1.0' && body !== 0;
  handshake.start(prepared.target, prepared.head.host, head, table, body, expectsContinue);
}

/** One upgrade request from the moment it is sent upstream until the upstream responds. */
class PendingUpgrade {
  readonly #context: ProxyContext;
  readonly #tunnels: TunnelRegistry;
  readonly #req: IncomingMessage;
  readonly #client: Socket;
  readonly #request: ForwardedRequest;
  /** `performance.now()` at the request's arrival; 0 when the observer is off. */
  readonly #startTime: number;
  #target!: UpstreamTarget;
  #upstream!: ClientRequest;
  /** Protocols sent in the Upgrade header; empty when the request went without one. */
  #protocols: string[] = [];
  /** Bytes of a Content-Length request body still to come from the client and go upstream. */
  #bodyRemaining = 0;
  /** Decoder of a chunked request body, or undefined for a body with Content-Length or none. */
  #chunked: ChunkedDecoder | undefined;
  /** True while the client socket is paused until the upstream request drains. */
  #awaitingDrain = false;
  /**
   * A 101 that arrived before the end of the chunked request body, held until the body ends.
   * Node.js detaches the socket from the request at a 101, so the rest of the body is framed
   * here and written to the socket.
   */
  #switchAwaitingBody: UpstreamSwitch | undefined;
  #table: RoutingTable | undefined;
  #host: string | undefined;
  /** Client bytes that arrived before the response; written upstream after a 101. */
  readonly #early: Buffer[] = [];
  #earlyBytes = 0;
  /** 1xx responses other than 100 and 101 that the upstream sent. */
  #informational = 0;
  #headersTimer: NodeJS.Timeout | undefined;
  #settled = false;
  /** True once the request no longer counts in `target.state.active`. */
  #released = false;
  /** Ends or cuts a non-101 response that is relayed to the client; undefined before that. */
  #responseRelay: ResponseRelay | undefined;
  /** True once the relayed response counted toward the target's passive health. */
  #healthRecorded = false;
  readonly #onClientData = (chunk: Buffer): void => this.#takeClientBytes(chunk);
  readonly #onClientGone = (): void => this.#abandon();
  readonly #onSwitchedSocketError = (err: Error): void => this.#fail(err);
  readonly #onSwitchedSocketClose = (): void => this.#fail(SWITCH_CLOSED_BEFORE_BODY_END);

  constructor(
    context: ProxyContext,
    tunnels: TunnelRegistry,
    req: IncomingMessage,
    client: Socket,
    request: ForwardedRequest,
    startTime: number,
  ) {
    this.#context = context;
    this.#tunnels = tunnels;
    this.#req = req;
    this.#client = client;
    this.#request = request;
    this.#startTime = startTime;
  }

  /**
   * Sends the handshake to `target`; `host` and `table` are what the request was routed on.
   * `body` is the Content-Length of the request body, or the decoder of a chunked one, which
   * goes upstream chunked anew. With `expectsContinue` the request goes with
   * `Expect: 100-continue`, and the upstream's 100 is relayed to the client.
   */
  start(
    target: UpstreamTarget,
    host: string | undefined,
    head: Buffer,
    table: RoutingTable | undefined,
    body: number | ChunkedDecoder,
    expectsContinue: boolean,
  ): void {
    const request = this.#request;
    this.#target = target;
    this.#host = host;
    this.#table = table;
    if (typeof body === 'number') {
      this.#bodyRemaining = body;
    } else {
      this.#chunked = body;
    }
    // RFC 9110 section 7.8: a server ignores Upgrade in an HTTP/1.0 request.
    const req = this.#req;
    const protocols =
      req.httpVersion === '1.0' ? [] : forwardableUpgradeProtocols(req.headers.upgrade);
    this.#protocols = protocols;
    const headers = request.headers.slice();
    if (protocols.length > 0)
      headers.push('connection', 'upgrade', 'upgrade', protocols.join(', '));
    if (expectsContinue) headers.push('expect', '100-continue');
    // With this header Node.js frames each write as a chunk and ends with the last chunk.
    if (this.#chunked !== undefined) headers.push('transfer-encoding', 'chunked');
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
    // Without a body, Node.js would add chunked framing to a POST, and after a 101 its final
    // chunk would reach the upstream as bytes of the new protocol.
    if (body === 0) upstream.useChunkedEncodingByDefault = false;

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
    if (expectsContinue) upstream.on('continue', () => this.#relayContinue());
    upstream.on('information', (info: InformationEvent) => this.#relayInformational(info));
    if (headersTimeout > 0) {
      this.#headersTimer = setTimeout(() => this.#timeOut(headersTimeout), headersTimeout);
    }
    // The listeners are in place, so an invalid chunked body in `head` can end the handshake.
    if (head.length > 0) this.#takeClientBytes(head);
    if (this.#settled) return;
    if (body === 0) {
      upstream.end();
    } else if (this.#bodyRemaining > 0 || this.#chunked?.done === false) {
      // The upstream may respond to the head alone, which a client that sent Expect waits for.
      upstream.flushHeaders();
    }
  }

  /** Writes the upstream's 100 Continue to the client, unless the handshake already ended. */
  #relayContinue(): void {
    const client = this.#client;
    if (this.#settled || !client.writable) return;
    client.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
  }

  /**
   * Writes the first few 1xx responses other than 100 and 101 to the client, as for other
   * requests, unless the handshake already ended or the client sent HTTP/1.0.
   */
  #relayInformational(info: InformationEvent): void {
    const client = this.#client;
    // Node.js emits 'information' for a 100 as well, which 'continue' relays when requested.
    if (info.statusCode < 102 || this.#settled || !client.writable) return;
    if (this.#req.httpVersion === '1.0') return;
    if (++this.#informational > MAX_INFORMATIONAL_RESPONSES) return;
    const head = informationalHead(info.statusCode, info.rawHeaders);
    if (head !== undefined) client.write(head, 'latin1');
  }

  /**
   * Sends the bytes of the request body upstream, and keeps the bytes after it until the
   * upstream responds, because only a 101 makes them bytes of the new protocol.
   */
  #takeClientBytes(chunk: Buffer): void {
    const chunked = this.#chunked;
    if (chunked !== undefined && !chunked.done) {
      let rest: Buffer | undefined;
      try {
        rest = chunked.decode(chunk, this.#writeBody);
      } catch (err) {
        if (!(err instanceof ChunkedBodyError)) throw err;
        this.#rejectBody(err);
        return;
      }
      if (rest === undefined) return;
      const pending = this.#switchAwaitingBody;
      if (pending !== undefined) {
        pending.socket.write(LAST_CHUNK, 'latin1');
        if (rest.length > 0) this.#early.push(rest);
        this.#openTunnel(pending);
        return;
      }
      this.#upstream.end();
      if (rest.length === 0) return;
      chunk = rest;
    } else if (this.#bodyRemaining > 0) {
      const body = chunk.subarray(0, this.#bodyRemaining);
      this.#bodyRemaining -= body.length;
      const upstream = this.#upstream;
      const flushed = upstream.write(body);
      if (this.#bodyRemaining === 0) {
        upstream.end();
      } else if (!flushed) {
        this.#client.pause();
        upstream.once('drain', () => this.#client.resume());
      }
      if (body.length === chunk.length) return;
      chunk = chunk.subarray(body.length);
    }
    this.#early.push(chunk);
    this.#earlyBytes += chunk.length;
    if (this.#earlyBytes > MAX_EARLY_CLIENT_BYTES) this.#client.pause();
  }

  /** Writes decoded body bytes upstream, pausing the client until the upstream drains. */
  readonly #writeBody = (data: Buffer): void => {
    if (data.length === 0) return;
    const socket = this.#switchAwaitingBody?.socket;
    const sink = socket ?? this.#upstream;
    const flushed =
      socket === undefined
        ? this.#upstream.write(data)
        : socket.write(Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, CRLF]));
    if (flushed || this.#awaitingDrain) return;
    this.#awaitingDrain = true;
    this.#client.pause();
    sink.once('drain', () => {
      this.#awaitingDrain = false;
      this.#client.resume();
    });
  };

  /**
   * Ends the handshake after the chunked request body failed to decode: the upstream request is
   * destroyed, and the client gets the error response of `err`.
   */
  #rejectBody(err: ChunkedBodyError): void {
    if (!this.#settle()) return;
    this.#upstream.destroy();
    this.#switchAwaitingBody?.socket.destroy();
    const logger = this.#context.logger;
    if (logger.isLevelEnabled('debug')) {
      logger.debug(
        { route: this.#request.route, status: err.response.status, error: err.message },
        'upgrade request rejected: invalid chunked body',
      );
    }
    writeRawError(this.#client, err.response, this.#request.route);
    reportTunnel(
      this.#context,
      this.#req,
      this.#request.route,
      err.response.status,
      this.#target,
      this.#startTime,
    );
  }

  /**
   * Ends the handshake; returns false when it had already ended. The request stops counting as
   * in flight on the target, unless `keepInFlight` leaves that to the caller, which then calls
   * `#releaseTarget` when the response body ends.
   */
  #settle(keepInFlight = false): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    this.#table = undefined;
    clearTimeout(this.#headersTimer);
    if (!keepInFlight) this.#releaseTarget();
    const client = this.#client;
    client.off('data', this.#onClientData);
    client.off('end', this.#onClientGone);
    client.off('close', this.#onClientGone);
    return true;
  }

  /** Stops counting the request as in flight on its target; later calls do nothing. */
  #releaseTarget(): void {
    if (this.#released) return;
    this.#released = true;
    this.#target.state.active--;
  }

  #abandon(): void {
    if (!this.#settle()) return;
    this.#upstream.destroy();
    this.#switchAwaitingBody?.socket.destroy();
    this.#client.destroy();
    this.#report(0);
  }

  /** Reports the request with `status`, and the attempt unless the client left (status 0). */
  #report(status: number, failure?: ReturnType<typeof upstreamFailureOf>): void {
    const observer = this.#context.observer;
    if (!observer.enabled) return;
    if (status !== 0) observer.attemptFinished(this.#target, failure, this.#startTime);
    observer.requestFinished(
      this.#req,
      this.#request.route,
      status,
      this.#target,
      0,
      this.#startTime,
    );
  }

  #timeOut(timeoutMs: number): void {
    const err = Object.assign(new Error(`no response headers within ${timeoutMs} ms`), {
      code: 'UND_ERR_HEADERS_TIMEOUT',
    });
    const pending = this.#switchAwaitingBody;
    if (pending === undefined) {
      this.#upstream.destroy(err);
      return;
    }
    // The request emits no more events once it switched, so the pending 101 fails here.
    pending.socket.destroy();
    this.#fail(
      Object.assign(new Error(`request body not complete within ${timeoutMs} ms of a 101`), {
        code: err.code,
      }),
    );
  }

  #switchProtocols(response: IncomingMessage, upstream: Socket, upstreamHead: Buffer): void {
    const unoffered = describeUnofferedProtocol(this.#protocols, response.headers.upgrade);
    if (unoffered !== undefined) {
      upstream.destroy();
      this.#failSwitch(unoffered);
      return;
    }
    if (this.#settled) {
      upstream.destroy();
      return;
    }
    const upstreamSwitch: UpstreamSwitch = { response, socket: upstream, upstreamHead };
    if (this.#chunked !== undefined && !this.#chunked.done) {
      // RFC 9110 section 7.8: the client switches only after the whole request message, so the
      // rest of the body still goes in chunked framing, and the headers timeout bounds it.
      this.#switchAwaitingBody = upstreamSwitch;
      upstream.on('error', this.#onSwitchedSocketError);
      upstream.on('close', this.#onSwitchedSocketClose);
      return;
    }
    this.#openTunnel(upstreamSwitch);
  }

  /** Ends the handshake and opens the tunnel of a 101. */
  #openTunnel({ response, socket: upstream, upstreamHead }: UpstreamSwitch): void {
    const table = this.#table;
    if (!this.#settle()) {
      upstream.destroy();
      return;
    }
    upstream.off('error', this.#onSwitchedSocketError);
    upstream.off('close', this.#onSwitchedSocketClose);

    this.#target.state.recordSuccess();
    const tunnel = new Tunnel(
      this.#context,
      this.#client,
      upstream,
      this.#request,
      this.#host,
      this.#target,
    );
    tunnel.open(response, this.#early, upstreamHead);
    this.#tunnels.add(tunnel, table);
    this.#report(101);
  }

  /** Fails the handshake with 502 for a 101 that cannot become a tunnel, logging `reason`. */
  #failSwitch(reason: string): void {
    const err = Object.assign(new Error(reason), { code: UPSTREAM_UPGRADE_CODE });
    this.#fail(err, PROXY_ERRORS.upstreamInvalidResponse);
  }

  #relay(response: IncomingMessage): void {
    // Node.js delivers a 101 without "Connection: upgrade" or Upgrade as a response, which
    // would reach the client as a 101 that switches nothing.
    if (response.statusCode === 101) {
      response.destroy();
      this.#failSwitch(
        describeUnofferedProtocol(this.#protocols, response.headers.upgrade) ??
          'the upstream answered 101 Switching Protocols without "Connection: upgrade"',
      );
      return;
    }
    const head: ResponseHead = { contentLength: undefined, trailerIndex: -1 };
    const headers = buildClientResponseHeaders(response.rawHeaders, this.#request.actions, head);
    const unrelayable = unrelayableResponse(response.statusCode ?? 502, head);
    if (unrelayable !== undefined) {
      response.destroy();
      this.#fail(unrelayable);
      return;
    }
    if (!this.#settle(true)) {
      response.destroy();
      return;
    }
    // As for other requests, a 5xx counts as a failure at its headers, and a response below 500
    // counts as a success once its body is complete or as a failure when the upstream cuts it.
    const status = response.statusCode ?? 502;
    if (status >= 500) {
      this.#healthRecorded = true;
      this.#target.state.recordFailure();
    }
    // relayResponse destroys the response when the client closes, which is no upstream failure.
    // This listener runs before that one, so the flag is set when the response closes.
    let clientClosed = false;
    const onClientGone = (): void => {
      clientClosed = true;
    };
    this.#client.once('close', onClientGone);
    // relayResponse also ends the relay at the client's FIN, as node:http aborts other requests.
    this.#client.once('end', onClientGone);
    // As for other requests, the target's in-flight count covers the body. 'close' follows the
    // end of the body, an upstream error, and the client leaving, which destroys the response.
    response.once('close', () => {
      this.#releaseTarget();
      if (response.complete) {
        this.#recordBodyOutcome(true);
      } else if (!clientClosed) {
        this.#recordBodyOutcome(false);
      }
    });

    // Later client bytes belong to no request, so they are read and dropped. Reading them lets
    // the client's FIN arrive, which closes the socket once the response is written.
    this.#client.resume();
    const actions = this.#request.actions;
    const bodyTimeoutMs =
      actions.bodyTimeoutMs > 0 ? actions.bodyTimeoutMs : this.#context.upstreamBodyTimeoutMs;
    // A chunked body stays chunked toward an HTTP/1.1 client, so its parser detects a cut body
    // by the missing last chunk. A reset right after the last bytes can reach the client as a
    // plain end of stream.
    const chunked =
      head.transferEncoding !== undefined &&
      this.#req.httpVersion === '1.1' &&
      this.#request.method !== 'HEAD' &&
      status !== 204 &&
      status !== 304;
    this.#responseRelay = relayResponse(
      response,
      headers,
      head,
      this.#client,
      bodyTimeoutMs,
      chunked,
    );
    this.#report(response.statusCode ?? 0);
  }

  /** Records the relayed body's outcome on the target, unless the response already counted. */
  #recordBodyOutcome(complete: boolean): void {
    if (this.#healthRecorded) return;
    this.#healthRecorded = true;
    if (complete) {
      this.#target.state.recordSuccess();
    } else {
      this.#target.state.recordFailure();
    }
  }

  #fail(err: Error, error: ProxyError = classifyUpstreamError(err)): void {
    // Node.js reports a reset during a body delimited by the connection close as an error of
    // the request, and then ends the response as if it were complete.
    if (this.#responseRelay !== undefined) {
      if (this.#responseRelay.complete) {
        // The parser failed on bytes after the relayed response, such as a second response
        // head. The client gets the whole response, and its 'close' counts it as a success.
        return;
      }
      if (isTrailerContentLength(err)) {
        // The parser failed after the last chunk, so the body is complete, as for other requests.
        this.#recordBodyOutcome(true);
        this.#responseRelay.endWithoutTrailers();
        this.#logTrailersDropped(err);
        return;
      }
      this.#recordBodyOutcome(false);
      this.#responseRelay.cut();
      this.#logFailure(err, undefined);
      return;
    }
    if (!this.#settle()) return;

    if (error.status >= 502) this.#target.state.recordFailure();
    this.#logFailure(err, error.status);
    writeRawError(this.#client, error, this.#request.route);
    this.#report(error.status, upstreamFailureOf(error));
  }

  /**
   * Logs at warn level, within the context's rate limit, a relayed response whose complete body
   * reached the client without its trailers, because the trailer section contains
   * Content-Length.
   */
  #logTrailersDropped(err: Error): void {
    const suppressed = this.#context.upstreamFailureLog.take();
    if (suppressed === undefined) return;
    this.#context.logger.warn(
      {
        route: this.#request.route,
        upstream: this.#target.upstream,
        target: this.#target.origin,
        code: TRAILERS_DROPPED_CODE,
        status: this.#responseRelay?.status,
        suppressed,
        error: err.message,
      },
      'upstream trailers dropped: the trailer section contains Content-Length',
    );
  }

  /**
   * Logs a failed upgrade request at warn level, within the context's rate limit. `status` is
   * the error status sent to the client, undefined when the relayed response was cut.
   */
  #logFailure(err: Error, status: number | undefined): void {
    const suppressed = this.#context.upstreamFailureLog.take();
    if (suppressed === undefined) return;
    const fields = {
      route: this.#request.route,
      target: this.#target.origin,
      status,
      suppressed,
      ...upstreamErrorLogFields(err),
    };
    if (status === undefined) {
      this.#context.logger.warn(fields, 'upstream response to an upgrade request cut');
    } else {
      this.#context.logger.warn(fields, 'upstream upgrade failed');
    }
  }
}

/** Control of a non-101 response that `relayResponse` writes to the client. */
interface ResponseRelay {
  /** Status of the relayed response. */
  readonly status: number;
  /**
   * True once the parser read the whole response, before any later upstream failure. Always
   * false for a body delimited by the connection close, whose end Node.js also reports after a
   * reset.
   */
  readonly complete: boolean;
  /** Cuts the client connection, because the upstream failed during the body. */
  cut(): void;
  /**
   * Ends the client response after the parser rejected the trailer section, which follows the
   * last chunk, so the body is complete.
   */
  endWithoutTrailers(): void;
}

/**
 * Writes a non-101 response to an upgrade request as an ordinary response, then closes. With
 * `chunked` the body goes in chunked framing, without trailers; otherwise it keeps its
 * Content-Length or runs until the connection closes. Returns the controls that end or cut the
 * client response when the upstream fails during the body.
 */
function relayResponse(
  response: IncomingMessage,
  headers: string[],
  head: ResponseHead,
  client: Socket,
  bodyTimeoutMs: number,
  chunked: boolean,
): ResponseRelay {
  if (head.trailerIndex !== -1) headers.splice(head.trailerIndex, 2);
  const status = response.statusCode ?? 502;
  let text = `HTTP/1.1 ${status} ${response.statusMessage ?? ''}\r\n`;
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`;
  if (chunked) text += 'Transfer-Encoding: chunked\r\n';
  // Without Content-Length or chunks the body runs until the connection closes, as it does here.
  text += 'Connection: close\r\n\r\n';
  const closeDelimited = head.contentLength === undefined && !chunked;

  // Set when the body is complete though the response failed after it (trailer Content-Length).
  let bodyComplete = false;
  // The client tells a cut body from a whole one by its length or, without one, by a reset.
  const cut = (): void => {
    if (closeDelimited) {
      resetConnection(client);
    } else if (!response.complete) {
      client.destroy();
    }
  };
  const end = (): void => {
    if (chunked) client.write('0\r\n\r\n', 'latin1');
    client.destroySoon();
  };

  client.write(text, 'latin1');
  response.on('error', ignoreError);
  response.on('close', () => {
    if (!response.complete && !bodyComplete) cut();
  });
  response.on('end', end);
  client.once('close', () => response.destroy());
  // The server socket allows half-open connections, so a client's FIN emits only 'end'. Without
  // this, a stalled body would hold the upstream connection until the body idle timeout.
  client.once('end', () => {
    if (!response.complete) response.destroy();
  });
  limitBodyIdleTime(response, client, bodyTimeoutMs);
  if (chunked) {
    relayChunks(response, client);
  } else {
    response.pipe(client, { end: false });
  }
  return {
    status,
    get complete() {
      return response.complete && !closeDelimited;
    },
    cut,
    endWithoutTrailers() {
      bodyComplete = true;
      // Node.js 20 emits the parser error before the 'data' events of the chunks parsed in the
      // same read. Reading the buffer now sends those chunks to the client before the end.
      while (response.read() !== null);
      end();
    },
  };
}

/** Writes each body chunk of `response` to `client` in chunked framing, with backpressure. */
function relayChunks(response: IncomingMessage, client: Socket): void {
  response.on('data', (chunk: Buffer) => {
    client.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    client.write(chunk);
    if (!client.write('\r\n', 'latin1')) {
      response.pause();
      client.once('drain', () => response.resume());
    }
  });
}

function writeRawError(
  socket: Socket,
  error: ProxyError,
  route?: string,
  message = error.message,
  allow?: readonly string[],
): void {
  // Reading and dropping what the client sends lets its FIN arrive; the socket is destroyed
  // once the response is written either way.
  socket.resume();
  writeRawErrorResponse(socket, error, route, message, allow);
  socket.destroySoon();
}

/** Writes the proxy's own 200 to OPTIONS with Max-Forwards 0 and closes the connection. */
function writeOptionsResponse(socket: Socket, allow: readonly string[] | undefined): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.resume();
  const allowLine = allow === undefined ? '' : `allow: ${allow.join(', ')}\r\n`;
  socket.end(
    `HTTP/1.1 200 OK\r\ncontent-length: 0\r\n${allowLine}` +
      `date: ${new Date().toUTCString()}\r\nconnection: close\r\n\r\n`,
  );
  socket.destroySoon();
}

function reportTunnel(
  context: ProxyContext,
  req: IncomingMessage,
  route: string,
  status: number,
  target: UpstreamTarget | undefined,
  startTime: number,
): void {
  if (context.observer.enabled) {
    context.observer.requestFinished(req, route, status, target, 0, startTime);
  }
}

function ignoreError(): void {
  // 'close' follows every socket error, and the close handlers clean up.
}
