// The smallest reasonable Node.js reverse proxy: node:http in front of one undici Pool, with
// bodies streamed both ways and hop-by-hop headers dropped. The benchmark's baseline.
// Usage: tsx bench/proxy/minimal-proxy.ts LISTEN_PORT UPSTREAM_URL
import { createServer } from 'node:http';
import { Pool } from 'undici';

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

const server = createServer((req, res) => {
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
  }
  headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'];

  pool
    .request({
      method: req.method as 'GET',
      path: req.url ?? '/',
      headers,
      body: hasBody ? req : null,
    })
    .then(
      (response) => {
        const out: Record<string, string | string[]> = {};
        for (const [name, value] of Object.entries(response.headers)) {
          if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
        }
        res.writeHead(response.statusCode, out);
        response.body.pipe(res);
        response.body.on('error', () => res.destroy());
      },
      () => {
        res.writeHead(502);
        res.end();
      },
    );
});
server.listen(Number(port), '127.0.0.1');
