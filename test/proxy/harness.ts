import assert from 'node:assert/strict';
import { once } from 'node:events';
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http';
import {
  connect,
  createServer as createNetServer,
  type AddressInfo,
  type Server as NetServer,
  type Socket,
} from 'node:net';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import type { Pool } from 'undici';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { createProxyServer, type ProxyServerOptions } from '../../data-plane/proxy/proxy-server.js';
import { compileRouteActions } from '../../data-plane/proxy/route-actions.js';
import { normalizeRequestPath } from '../../data-plane/router/path.js';
import type { Router, RouterMatch } from '../../data-plane/router/types.js';
import type { RouteBinding, RoutingTable } from '../../data-plane/table.js';
import type { UpstreamTarget } from '../../data-plane/upstreams/balancer.js';
import { TargetState } from '../../data-plane/upstreams/target-state.js';
import {
  UpstreamRegistry,
  type UpstreamRegistryOptions,
} from '../../data-plane/upstreams/registry.js';

/** Upper bound for any single wait in these tests. */
export const WAIT_MS = 5_000;

/** Returns what `promise` resolves to, or rejects when it does not settle within `ms`. */
export async function within<T>(
  promise: Promise<T>,
  description: string,
  ms = WAIT_MS,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${ms} ms waiting for ${description}`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits up to `ms` for `condition` to hold, checking every 10 ms, and returns whether it held. */
export async function eventually(condition: () => boolean, ms = 2_000): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!condition() && performance.now() < deadline) await sleep(10);
  return condition();
}

/**
 * Returns a target of the upstream `api` at `http://<name>.test` for balancer tests. Its pool is
 * an empty object, because the balancers never touch it.
 */
export function fakeTarget(name: string, weight = 1): UpstreamTarget {
  const url = `http://${name}.test`;
  return {
    url,
    upstream: 'api',
    origin: url,
    basePath: '',
    weight,
    pool: {} as Pool,
    state: new TargetState('api', url, pino({ level: 'silent' })),
    connect: {
      hostname: `${name}.test`,
      port: 80,
      secure: false,
      ca: undefined,
      servername: undefined,
      rejectUnauthorized: true,
    },
  };
}

/** A route of the stub router: one path, exact or a prefix ending in `/*`, and route actions. */
export interface StubRoute extends Partial<Omit<Route, 'name' | 'paths' | 'methods' | 'upstream'>> {
  name: string;
  path: string;
  methods?: string[];
  upstream: string;
}

/**
 * Router stand-in with just enough matching for the proxy tests: exact paths, `/prefix/*`
 * prefixes, method lists, and the path `/bad-request`, which returns `bad-request`. It
 * normalizes the path as the router does, and returns the normalized path when it differs.
 */
export function stubRouter(
  routes: readonly StubRoute[],
  balancers: ReadonlyMap<string, RouteBinding['balancer']>,
): Router<RouteBinding> {
  const bindings = routes.map((stub) => {
    const { path, methods, ...fields } = stub;
    const route: Route = { ...fields, hosts: [], paths: [path], methods: methods ?? [] };
    const actions = compileRouteActions(route);
    return { stub, binding: { route, actions, balancer: balancers.get(stub.upstream) } };
  });

  const matchesPath = (stub: StubRoute, path: string): boolean =>
    stub.path.endsWith('/*') ? path.startsWith(stub.path.slice(0, -1)) : path === stub.path;

  return {
    size: bindings.length,
    find(method: string, _host: string | undefined, rawPath: string): RouterMatch<RouteBinding> {
      if (rawPath === '/bad-request') {
        return { kind: 'bad-request', reason: 'stub router rejected the path' };
      }
      const path = normalizeRequestPath(rawPath);
      if (typeof path !== 'string') return path;
      const allow: string[] = [];
      for (const { stub, binding } of bindings) {
        if (!matchesPath(stub, path)) {
          continue;
        }
        if (stub.methods !== undefined && !stub.methods.includes(method)) {
          allow.push(...stub.methods);
          continue;
        }
        const found = { kind: 'found', value: binding, route: stub.name, params: {} } as const;
        return path === rawPath ? found : { ...found, path };
      }
      return allow.length > 0 ? { kind: 'method-not-allowed', allow } : { kind: 'not-found' };
    },
    listMethods(_host: string | undefined, path: string): string[] {
      const listed = routes.filter((stub) => matchesPath(stub, path));
      return [...new Set(listed.flatMap((stub) => stub.methods ?? []))].sort();
    },
  };
}

/** One log line as pino wrote it. */
export type LogLine = Record<string, unknown> & { level: number; msg: string };

/** Creates a debug-level pino logger that keeps every line in memory. */
export function captureLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line !== '') {
          lines.push(JSON.parse(line) as LogLine);
        }
      }
      callback();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

/** A listening server with its port and a close that also ends open connections. */
export interface RunningServer {
  server: Server;
  port: number;
  close(): Promise<void>;
}

/** Starts a `node:http` server on an ephemeral port of 127.0.0.1. */
export async function startHttpServer(listener: RequestListener): Promise<RunningServer> {
  return listenHttp(createServer(listener));
}

/** Starts an already created server on an ephemeral port of 127.0.0.1. */
export async function listenHttp(server: Server): Promise<RunningServer> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    server,
    port: (server.address() as AddressInfo).port,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Starts a raw TCP server on an ephemeral port of 127.0.0.1 and returns its port. */
export async function listenNet(server: NetServer): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

/** Returns a port of 127.0.0.1 with nothing listening: the OS picked it for a listener that then closed. */
export async function closedPort(): Promise<number> {
  const server = createNetServer();
  const port = await listenNet(server);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * Raw TCP server on an ephemeral port of 127.0.0.1 that passes each connection to `accept`,
 * ignores socket errors, and destroys every connection on close.
 */
export abstract class RawServer {
  readonly server: NetServer;
  /** Every connection the server accepted, in order. */
  readonly sockets: Socket[] = [];
  port = 0;

  constructor() {
    this.server = createNetServer((socket) => {
      this.sockets.push(socket);
      socket.on('error', () => {
        // Resets are part of the tests that use raw servers.
      });
      this.accept(socket);
    });
  }

  /** Handles a new connection. */
  protected abstract accept(socket: Socket): void;

  async start(): Promise<void> {
    this.port = await listenNet(this.server);
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A proxy listener, the registry behind it, and a way to publish routes. */
export interface ProxyFixture extends RunningServer {
  registry: UpstreamRegistry;
  logger: Logger;
  logs: LogLine[];
  /** Builds a table from `routes` and `upstreams` through the registry and puts it in service. */
  publish(routes: readonly StubRoute[], upstreams: readonly Upstream[]): RoutingTable;
  /**
   * Publishes one route `/*`, named like the upstream `name`, to the server at `port` on
   * 127.0.0.1 and returns the upstream's only target.
   */
  publishOne(name: string, port: number): UpstreamTarget;
  /** Replaces the table in service; undefined means no configuration yet. */
  setTable(table: RoutingTable | undefined): void;
  /** Server side of the latest client connection, or undefined before the first one. */
  latestConnection(): Socket | undefined;
  /** Returns the number of client connections open on the proxy. */
  connectionCount(): Promise<number>;
}

/** Starts a proxy on an ephemeral port with its own registry and a capturing logger. */
export async function startProxy(
  registryOptions: Omit<UpstreamRegistryOptions, 'logger'> = {},
  serverOptions: Omit<ProxyServerOptions, 'getTable' | 'logger'> = {},
): Promise<ProxyFixture> {
  const { logger, lines } = captureLogger();
  const registry = new UpstreamRegistry({ ...registryOptions, logger });
  let table: RoutingTable | undefined;
  let version = 0;
  const { server } = createProxyServer({ ...serverOptions, getTable: () => table, logger });
  let latest: Socket | undefined;
  server.on('connection', (socket: Socket) => (latest = socket));
  const running = await listenHttp(server);

  const publish = (routes: readonly StubRoute[], upstreams: readonly Upstream[]): RoutingTable => {
    const balancers = registry.update([...upstreams]);
    version++;
    table = {
      epoch: 'test',
      version,
      hash: `hash-${version}`,
      router: stubRouter(routes, balancers),
    };
    return table;
  };

  return {
    ...running,
    registry,
    logger,
    logs: lines,
    publish,
    publishOne(name, port) {
      const published = publish([{ name, path: '/*', upstream: name }], [upstreamAt(name, port)]);
      const match = published.router.find('GET', undefined, '/');
      assert.equal(match.kind, 'found');
      const balancer = match.value.balancer;
      assert.ok(balancer !== undefined, `route ${name} without balancer`);
      return balancer.targets[0];
    },
    setTable(next) {
      table = next;
    },
    latestConnection: () => latest,
    connectionCount() {
      return new Promise((resolve, reject) =>
        server.getConnections((err, count) => (err ? reject(err) : resolve(count))),
      );
    },
    async close() {
      await running.close();
      await registry.close();
    },
  };
}

/** Returns an upstream with one target at `http://127.0.0.1:port` plus `basePath`. */
export function upstreamAt(name: string, port: number, basePath = '', weight = 1): Upstream {
  return { name, targets: [{ url: `http://127.0.0.1:${port}${basePath}`, weight }] };
}

/** A complete response read by `send`. */
export interface ReceivedResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Options of `send`. */
export interface SendOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
}

/** Sends one request on a new connection and reads the whole response. */
export async function send(
  port: number,
  path: string,
  options: SendOptions = {},
): Promise<ReceivedResponse> {
  const req = httpRequest({
    host: '127.0.0.1',
    port,
    path,
    method: options.method ?? 'GET',
    headers: options.headers,
    agent: false,
  });
  req.end(options.body);
  const [res] = (await within(once(req, 'response'), `response to ${path}`)) as [IncomingMessage];
  const chunks: Buffer[] = [];
  for await (const chunk of res) {
    chunks.push(chunk as Buffer);
  }
  return { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) };
}

/** Parses a JSON response body. */
export function json(response: ReceivedResponse): Record<string, unknown> {
  return JSON.parse(response.body.toString('utf8')) as Record<string, unknown>;
}

/**
 * Writes `text` on a new TCP connection and returns every byte received until the server
 * closes it. Send `Connection: close` so that the server does. The client never half-closes,
 * because a Node.js server aborts a pending request when the client sends FIN.
 */
export async function sendRaw(port: number, text: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  socket.write(text);
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  await within(once(socket, 'close'), 'the server to close a raw connection');
  return Buffer.concat(chunks).toString('latin1');
}

/** Header names of a raw HTTP/1.1 response head, lower-cased. */
export function rawHeaderNames(response: string): string[] {
  const head = response.slice(0, response.indexOf('\r\n\r\n'));
  return head
    .split('\r\n')
    .slice(1)
    .map((line) => line.slice(0, line.indexOf(':')).toLowerCase());
}

/** Responses that {@link pipeline} collected on one connection. */
export interface PipelineResult {
  text: string;
  /** Status codes of the responses, in order. */
  statuses: number[];
  /** True when the proxy closed the connection. */
  closed: boolean;
}

/** Options of {@link pipeline}. */
export interface PipelineOptions {
  /** Time between two writes, in milliseconds. */
  pauseMs?: number;
  /**
   * Maximum wait for the proxy to close the connection after the last write, in milliseconds.
   * After it `pipeline` returns with `closed` false. Without it `pipeline` rejects when the close
   * takes longer than `within` allows.
   */
  waitMs?: number;
}

/**
 * Writes `parts` on a new connection and collects every byte until the proxy closes it. The
 * client never half-closes, so only the proxy can end the connection.
 */
export async function pipeline(
  port: number,
  parts: readonly string[],
  options: PipelineOptions = {},
): Promise<PipelineResult> {
  const client = openRawClient(port, parts[0] ?? '');
  let closed = false;
  // A reset also counts as a close, and the tests check what arrived.
  const closing = client.closed.then(() => {
    closed = true;
  });
  for (const part of parts.slice(1)) {
    await sleep(options.pauseMs ?? 0);
    client.socket.write(part);
  }
  if (options.waitMs === undefined) {
    await within(closing, 'the proxy to close the connection');
  } else {
    await Promise.race([closing, sleep(options.waitMs)]);
  }
  client.socket.destroy();
  const text = client.text();
  const statuses = [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
  return { text, statuses, closed };
}

/** A raw TCP client that keeps every byte it receives and the error that ended it. */
export interface RawClient {
  socket: Socket;
  text(): string;
  error(): NodeJS.ErrnoException | undefined;
  /** Resolves at 'close', also after a reset: `once` would reject on the 'error' before it. */
  closed: Promise<unknown>;
}

/** Connects to `port` on 127.0.0.1 and writes `text`. */
export function openRawClient(port: number, text: string): RawClient {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  let failure: NodeJS.ErrnoException | undefined;
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', (err: NodeJS.ErrnoException) => {
    failure = err;
  });
  const closed = new Promise((resolve) => socket.once('close', resolve));
  socket.write(text);
  return {
    socket,
    text: () => Buffer.concat(chunks).toString('latin1'),
    error: () => failure,
    closed,
  };
}

/** Waits up to 5 s for `read()` to match `pattern`, then asserts that it does. */
export async function waitForText(read: () => string, pattern: RegExp): Promise<void> {
  for (let i = 0; i < 250 && !pattern.test(read()); i++) await sleep(20);
  assert.match(read(), pattern);
}

/** A raw client connection that reads only while the caller resumes its socket. */
export interface PausedClient {
  socket: Socket;
  /** Every byte the socket read so far. */
  received(): Buffer;
  /** The error that ended the connection, if any. */
  error(): NodeJS.ErrnoException | undefined;
  /** Resolves at 'close', after a reset too. */
  closed: Promise<void>;
}

/** Opens a connection to `port` on 127.0.0.1 that reads nothing until the caller resumes it. */
export async function pausedClient(port: number): Promise<PausedClient> {
  const socket = connect(port, '127.0.0.1');
  let failure: NodeJS.ErrnoException | undefined;
  socket.on('error', (err: NodeJS.ErrnoException) => {
    // A proxy that cuts the connection resets it; callers wait for 'close'.
    failure = err;
  });
  socket.pause();
  // A 'data' listener added to a paused socket leaves it paused.
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  await once(socket, 'connect');
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, received: () => Buffer.concat(chunks), error: () => failure, closed };
}

const STREAM_CHUNK = Buffer.alloc(64 * 1024, 'a');

/** Writes `bytes` bytes of `a` to `res` as fast as its reader takes them, then ends it. */
export function streamBody(res: ServerResponse, bytes: number): void {
  let sent = 0;
  const write = (): void => {
    while (sent < bytes && !res.destroyed) {
      const piece = STREAM_CHUNK.subarray(0, Math.min(STREAM_CHUNK.length, bytes - sent));
      sent += piece.length;
      if (!res.write(piece)) return void res.once('drain', write);
    }
    if (!res.destroyed) res.end();
  };
  write();
}

/** Paths (`req.url`) of a server's responses, by how they ended. */
export class ResponseRecorder {
  /** Responses that closed before they finished. */
  readonly cut: string[] = [];
  /** Responses that finished. */
  readonly finished: string[] = [];

  /** Returns `listener` with each of its responses recorded here when it closes. */
  wrap(listener: RequestListener): RequestListener {
    return (req, res) => {
      const path = req.url ?? '';
      res.once('close', () => (res.writableFinished ? this.finished : this.cut).push(path));
      listener(req, res);
    };
  }

  /** Empties both lists. */
  clear(): void {
    this.cut.length = 0;
    this.finished.length = 0;
  }
}

/** Paths of the request bodies a server read, by how they ended. */
export class UploadRecorder {
  /** Bodies that arrived in full. */
  readonly complete: string[] = [];
  /** Bodies whose request closed before they were complete. */
  readonly aborted: string[] = [];

  /** Reads the body of `req` and records under `path` whether it arrived in full. */
  track(req: IncomingMessage, path: string): void {
    req.once('end', () => this.complete.push(path));
    req.once('close', () => {
      if (!req.complete) this.aborted.push(path);
    });
    req.resume();
  }

  /** Empties both lists. */
  clear(): void {
    this.complete.length = 0;
    this.aborted.length = 0;
  }
}

/** Send timeout of the proxies in the send timeout tests, in milliseconds. */
export const SEND_TIMEOUT_MS = 300;
/** Maximum wait for a proxy with SEND_TIMEOUT_MS to cut a client: ten send timeouts. */
export const CUT_BOUND_MS = 10 * SEND_TIMEOUT_MS;

/** Piece size of `fillClientBuffer`, below the 16 KiB high-water mark of a client connection. */
const FILL_PIECE = Buffer.alloc(12 * 1024, 'f');

/**
 * Writes 12 KiB pieces to `res` until `connection()`, the proxy's client connection, has unsent
 * bytes, then ends the response without reading the request body. The proxy's last write to the
 * client then returns true, so it never waits for 'drain', and its response ends with bytes the
 * client has not taken.
 */
export async function fillClientBuffer(
  res: ServerResponse,
  connection: () => Socket | undefined,
): Promise<void> {
  res.writeHead(200, { 'content-type': 'text/plain' });
  for (let i = 0; i < 20_000 && !res.destroyed; i++) {
    res.write(FILL_PIECE);
    await sleep(5);
    if ((connection()?.writableLength ?? 0) > 0) break;
  }
  res.end();
}

/**
 * Waits up to 20 s for the upstream response to `/fill` to finish, asserts that the latest client
 * connection of `proxy` then has unsent bytes, and returns their count.
 */
export async function waitForFill(
  proxy: ProxyFixture,
  upstream: ResponseRecorder,
): Promise<number> {
  assert.ok(
    await eventually(() => upstream.finished.includes('/fill'), 20_000),
    'the upstream never finished /fill',
  );
  const unsent = proxy.latestConnection()?.writableLength ?? 0;
  assert.ok(unsent > 0, 'the client connection has no unsent bytes');
  return unsent;
}

/**
 * Waits up to CUT_BOUND_MS for `proxy` to destroy its latest client connection, then closes
 * `client`. Returns whether the proxy cut the connection and the bytes it had left unsent.
 */
export async function waitForCut(
  proxy: ProxyFixture,
  client: PausedClient,
): Promise<{ cut: boolean; unsent: number | undefined }> {
  const cut = await eventually(() => proxy.latestConnection()?.destroyed === true, CUT_BOUND_MS);
  const unsent = proxy.latestConnection()?.writableLength;
  client.socket.destroy();
  await within(client.closed, 'the client to close');
  return { cut, unsent };
}
