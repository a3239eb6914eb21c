// The leanest Node.js reverse proxy in this benchmark: node:http in front of one undici Pool,
// driven through `dispatch` with raw header lists as Loom's request path is. It has no routing,
// header actions, metrics or logs, so it shows what node:http and undici alone cost.
// Usage: tsx bench/proxy/dispatch-proxy.ts LISTEN_PORT UPSTREAM_URL
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Pool, type Dispatcher } from 'undici';

const [port, upstream] = process.argv.slice(2);
const pool = new Pool(upstream, { connections: 128, keepAliveTimeout: 4_000 });
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Copies a raw header list without the hop-by-hop headers. */
function copyHeaders(raw: readonly (Buffer | string)[]): string[] {
  const headers: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toString('latin1');
    if (!HOP_BY_HOP.has(name.toLowerCase())) headers.push(name, raw[i + 1].toString('latin1'));
  }
  return headers;
}

class Exchange implements Dispatcher.DispatchHandler {
  readonly #res: ServerResponse;
  #resume: (() => void) | undefined;

  constructor(res: ServerResponse) {
    this.#res = res;
  }

  onConnect(): void {}

  onHeaders(status: number, raw: Buffer[] | string[] | null, resume: () => void): boolean {
    this.#resume = resume;
    this.#res.writeHead(status, copyHeaders(raw ?? []));
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.#res.write(chunk)) return true;
    this.#res.once('drain', () => this.#resume?.());
    return false;
  }

  onComplete(): void {
    this.#res.end();
  }

  onError(): void {
    if (this.#res.headersSent) {
      this.#res.destroy();
      return;
    }
    this.#res.writeHead(502);
    this.#res.end();
  }
}

const server = createServer((req: IncomingMessage, res: ServerResponse) => {
  const headers = copyHeaders(req.rawHeaders);
  headers.push('x-forwarded-for', req.socket.remoteAddress ?? '');
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'];
  pool.dispatch(
    {
      method: req.method ?? 'GET',
      path: req.url ?? '/',
      headers,
      body: hasBody ? req : null,
    },
    new Exchange(res),
  );
});
server.listen(Number(port), '127.0.0.1');
