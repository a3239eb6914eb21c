// A small upstream for trying Loom: answers every request with JSON describing
// it (method, URL, headers) and the name it was started with.
// Usage: tsx examples/echo-upstream.ts [--port 9001] [--name echo] [--host 127.0.0.1]
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** Starts an echo server on `host` (default 127.0.0.1) and resolves once it listens. */
export async function startEchoUpstream(
  port: number,
  name: string,
  host = '127.0.0.1',
): Promise<Server> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = JSON.stringify({
        upstream: name,
        method: req.method,
        url: req.url,
        headers: req.headers,
        bodyBytes: Buffer.concat(chunks).length,
      });
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name });
      res.end(`${body}\n`);
    });
  });
  server.listen(port, host);
  await once(server, 'listening');
  return server;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '9001' },
      name: { type: 'string', default: 'echo' },
      // A container needs 0.0.0.0 so that other containers reach it.
      host: { type: 'string', default: '127.0.0.1' },
    },
  });
  const host = values.host ?? '127.0.0.1';
  const server = await startEchoUpstream(Number(values.port), values.name ?? 'echo', host);
  const { port } = server.address() as AddressInfo;
  process.stdout.write(`echo upstream "${values.name}" listening on http://${host}:${port}\n`);
}
