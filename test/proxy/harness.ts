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
import { connect, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino, type Logger } from 'pino';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { createProxyServer, type ProxyServerOptions } from '../../data-plane/proxy/proxy-server.js';
import { compileRouteActions } from '../../data-plane/proxy/route-actions.js';
import type { Router, RouterMatch } from '../../data-plane/router/types.js';
import type { RouteBinding, RoutingTable } from '../../data-plane/table.js';
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

/** A route of the stub router: one path, exact or a prefix ending in `/*`, and route actions. */
export interface StubRoute extends Partial<Omit<Route, 'name' | 'paths' | 'methods' | 'upstream'>> {
  name: string;
  path: string;
  methods?: string[];
  upstream: string;
}

/**
 * Router stand-in with just enough matching for the proxy tests: exact paths, `/prefix/*`
 * prefixes, method lists, and the path `/bad-request`, which returns `bad-request`.
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

  return {
    size: bindings.length,
    find(method: string, _host: string | undefined, path: string): RouterMatch<RouteBinding> {
      if (path === '/bad-request') {
        return { kind: 'bad-request', reason: 'stub router rejected the path' };
      }
      const allow: string[] = [];
      for (const { stub, binding } of bindings) {
        const matches = stub.path.endsWith('/*')
          ? path.startsWith(stub.path.slice(0, -1))
          : path === stub.path;
        if (!matches) {
          continue;
        }
        if (stub.methods !== undefined && !stub.methods.includes(method)) {
          allow.push(...stub.methods);
          continue;
        }
        return { kind: 'found', value: binding, route: stub.name, params: {} };
      }
      return allow.length > 0 ? { kind: 'method-not-allowed', allow } : { kind: 'not-found' };
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

/** A proxy listener, the registry behind it, and a way to publish routes. */
export interface ProxyFixture extends RunningServer {
  registry: UpstreamRegistry;
  logger: Logger;
  logs: LogLine[];
  /** Builds a table from `routes` and `upstreams` through the registry and puts it in service. */
  publish(routes: readonly StubRoute[], upstreams: readonly Upstream[]): RoutingTable;
  /** Replaces the table in service; undefined means no configuration yet. */
  setTable(table: RoutingTable | undefined): void;
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
  const running = await listenHttp(server);

  return {
    ...running,
    registry,
    logger,
    logs: lines,
    publish(routes, upstreams) {
      const balancers = registry.update([...upstreams]);
      version++;
      table = {
        epoch: 'test',
        version,
        hash: `hash-${version}`,
        router: stubRouter(routes, balancers),
      };
      return table;
    },
    setTable(next) {
      table = next;
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

/**
 * Opens a connection to `port` on 127.0.0.1 that reads nothing until the caller resumes its
 * socket. `closed` resolves at 'close', after a reset too.
 */
export async function pausedClient(
  port: number,
): Promise<{ socket: Socket; closed: Promise<void> }> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {
    // A proxy that cuts the connection resets it; callers wait for 'close'.
  });
  socket.pause();
  await once(socket, 'connect');
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return { socket, closed };
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
