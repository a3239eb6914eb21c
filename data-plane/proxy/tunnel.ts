import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';

import { LoomError } from '../../common/errors.js';
import type { Logger } from '../../common/logger.js';
import type { RouteBinding, RoutingTable } from '../table.js';
import type { UpstreamTarget } from '../upstreams/balancer.js';
import type { TargetState } from '../upstreams/target-state.js';
import type { ForwardedRequest, ProxyContext } from './exchange.js';
import { buildClientResponseHeaders, type ResponseHead } from './headers.js';

/** Default time a tunnel stays open after a table swap removed its route: 30 seconds. */
export const DEFAULT_TUNNEL_DRAIN_TIMEOUT_MS = 30_000;

/** Maximum time between two checks of the table in service while tunnels are open. */
const TABLE_CHECK_INTERVAL_MS = 1_000;

/**
 * An open tunnel: two sockets that copy bytes to each other after a 101 response. It counts as
 * a request in flight to its target until it closes, so the least-request balancer counts
 * long-lived WebSocket connections in the target's load.
 */
export class Tunnel {
  readonly #context: ProxyContext;
  readonly #client: Socket;
  readonly #upstream: Socket;
  readonly #actions: ForwardedRequest['actions'];
  readonly #targetState: TargetState;
  #closed = false;
  /** The route the handshake matched, and what the router needs to match it again. */
  readonly route: string;
  readonly method: string;
  readonly host: string | undefined;
  readonly path: string;
  /** Upstream name and URL of the target at the other end. */
  readonly upstream: string;
  readonly targetUrl: string;
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
    target: UpstreamTarget,
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
    this.upstream = target.upstream;
    this.targetUrl = target.url;
    this.#targetState = target.state;
    target.state.active++;
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
    if (!this.#closed) {
      this.#closed = true;
      this.#targetState.active--;
    }
    const onClose = this.onClose;
    this.onClose = undefined;
    onClose?.();
  }
}

/**
 * The open tunnels of one proxy handler. The proxy is not notified of table swaps, so while
 * tunnels are open the registry reads the table in service once per check interval. After a
 * swap it matches each tunnel's handshake (method, Host, path) again. A tunnel that no longer
 * reaches its route, or whose route's upstream no longer has its target in rotation, is closed
 * `drainTimeoutMs` later, unless a later swap brings both back before then. Other tunnels stay
 * open across swaps.
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
    if (
      match?.kind === 'found' &&
      match.route === tunnel.route &&
      keepsTarget(match.value, tunnel)
    ) {
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
      logger.debug(
        { route: tunnel.route, target: tunnel.targetUrl },
        'tunnel closed after its route or target was removed',
      );
    }
    tunnel.close();
  }

  #logDrain(table: RoutingTable | undefined, tunnels: number): void {
    this.#logger.info(
      { version: table?.version, tunnels, drainTimeoutMs: this.#drainTimeoutMs },
      'tunnels draining after their routes or targets were removed',
    );
  }
}

/**
 * Tells whether the route a tunnel matched still sends requests to the tunnel's target: the
 * same upstream and target URL, with a weight above 0.
 */
function keepsTarget(binding: RouteBinding, tunnel: Tunnel): boolean {
  const balancer = binding.balancer;
  if (balancer === undefined || balancer.upstream !== tunnel.upstream) return false;
  return balancer.targets.some((target) => target.url === tunnel.targetUrl);
}

function ignoreError(): void {
  // 'close' follows every socket error, and 'close' ends the tunnel.
}
