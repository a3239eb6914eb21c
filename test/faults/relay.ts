import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { once } from 'node:events';

/**
 * How the relay treats connections. `forward` copies bytes both ways,
 * `refuse` accepts and closes new connections at once, and `blackhole`
 * accepts new connections but never forwards a byte, as a silent partition
 * would.
 */
export type RelayMode = 'forward' | 'refuse' | 'blackhole';

interface Link {
  client: Socket;
  upstream: Socket | undefined;
  frozen: boolean;
}

/**
 * A TCP relay on 127.0.0.1 that a test controls, to put faults between two
 * real processes: cut or reset every open connection, refuse or blackhole new
 * ones, freeze chosen connections, delay every chunk, or point at a new target.
 */
export class TcpRelay {
  readonly port: number;
  /** Connections accepted since the relay started. */
  accepted = 0;
  #targetPort: number;
  #mode: RelayMode = 'forward';
  #delayMs = 0;
  readonly #links = new Set<Link>();
  /** Server sides that {@link orphanOpen} left open. */
  readonly #orphans = new Set<Socket>();
  readonly #server: Server;

  private constructor(server: Server, port: number, targetPort: number) {
    this.#server = server;
    this.port = port;
    this.#targetPort = targetPort;
  }

  /** Starts a relay to 127.0.0.1:`targetPort` on a free port (or `port`). */
  static async start(targetPort: number, port = 0): Promise<TcpRelay> {
    const server = createServer();
    server.listen(port, '127.0.0.1');
    await once(server, 'listening');
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('relay has no port');

    const relay = new TcpRelay(server, address.port, targetPort);
    server.on('connection', (socket) => relay.#accept(socket));
    return relay;
  }

  /** host:port of the relay. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** Connections open now. */
  get open(): number {
    return this.#links.size;
  }

  /** Sets how new connections are treated; open ones are not touched. */
  setMode(mode: RelayMode): void {
    this.#mode = mode;
  }

  /** Adds `delayMs` before each forwarded chunk, in both directions. */
  slow(delayMs: number): void {
    this.#delayMs = delayMs;
  }

  /** Sends new connections to another port on 127.0.0.1. */
  setTarget(targetPort: number): void {
    this.#targetPort = targetPort;
  }

  /** Closes every open connection with a FIN and refuses new ones. */
  cut(): void {
    this.#mode = 'refuse';
    for (const link of this.#links) this.#close(link, false);
  }

  /** Resets every open connection with a TCP RST; new ones are still forwarded. */
  reset(): void {
    for (const link of this.#links) this.#close(link, true);
  }

  /** Stops forwarding on every open connection while leaving it open; returns how many. */
  freezeOpen(): number {
    for (const link of this.#links) link.frozen = true;
    return this.#links.size;
  }

  /** Stops forwarding on the connection accepted last while leaving it open. */
  freezeNewest(): void {
    const newest = [...this.#links].at(-1);
    if (newest === undefined) throw new Error('relay has no open connection to freeze');
    newest.frozen = true;
  }

  /**
   * Closes the client side of every open connection with a FIN and leaves the server side open
   * without forwarding. The server then keeps a half-open connection whose client is gone, as
   * when a network partition ends a connection for the client only. Returns how many.
   */
  orphanOpen(): number {
    const links = [...this.#links];
    for (const link of links) {
      link.frozen = true;
      if (link.upstream !== undefined) this.#orphans.add(link.upstream);
      this.#links.delete(link);
      link.client.destroy();
    }
    return links.length;
  }

  /** Closes the server sides that {@link orphanOpen} left open; returns how many. */
  closeOrphans(): number {
    const count = this.#orphans.size;
    for (const orphan of this.#orphans) orphan.destroy();
    this.#orphans.clear();
    return count;
  }

  /** Restores forwarding in the default mode. */
  heal(): void {
    this.#mode = 'forward';
    this.#delayMs = 0;
  }

  async close(): Promise<void> {
    for (const link of this.#links) this.#close(link, false);
    this.closeOrphans();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: Socket): void {
    this.accepted += 1;
    client.on('error', () => undefined);
    if (this.#mode === 'refuse') {
      client.destroy();
      return;
    }

    const link: Link = { client, upstream: undefined, frozen: this.#mode === 'blackhole' };
    this.#links.add(link);
    client.once('close', () => this.#close(link, false));
    if (link.frozen) return;

    const upstream = createConnection({ host: '127.0.0.1', port: this.#targetPort });
    link.upstream = upstream;
    upstream.on('error', () => undefined);
    upstream.once('close', () => this.#close(link, false));
    this.#pipe(link, client, upstream);
    this.#pipe(link, upstream, client);
  }

  #pipe(link: Link, from: Socket, to: Socket): void {
    from.on('data', (chunk: Buffer) => {
      if (link.frozen) return;
      if (this.#delayMs === 0) {
        to.write(chunk);
        return;
      }
      // Pausing keeps chunks in order while each waits out the delay.
      from.pause();
      setTimeout(() => {
        if (!link.frozen && !to.destroyed) to.write(chunk);
        from.resume();
      }, this.#delayMs);
    });
  }

  #close(link: Link, reset: boolean): void {
    if (!this.#links.delete(link)) return;
    for (const socket of [link.client, link.upstream]) {
      if (socket === undefined || socket.destroyed) continue;
      if (reset) socket.resetAndDestroy();
      else socket.destroy();
    }
  }
}
