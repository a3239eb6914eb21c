// A small upstream for trying Loom: answers every request with JSON describing
// it (method, URL, headers) and the name it was started with.
// Usage: node --import tsx examples/echo-upstream.ts [--port 9001] [--name echo] [--host 127.0.0.1]
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

const USAGE = `Usage: node --import tsx examples/echo-upstream.ts [options]

Starts an HTTP server that responds to every request with JSON describing it
(method, URL, headers, body size) and the server's name.

Options:
  --port <port>  TCP port to listen on, 0 for any free port (default: 9001)
  --name <name>  name reported in the JSON and the x-upstream header
                 (default: echo)
  --host <host>  address to listen on; 0.0.0.0 in a container (default:
                 127.0.0.1)
  -h, --help     print this help and exit
`;

/** Reads the command line, or prints the error and the usage and exits 2. */
function readOptions(): { port: number; name: string; host: string } {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: 'string', default: '9001' },
        name: { type: 'string', default: 'echo' },
        // A container needs 0.0.0.0 so that other containers reach it.
        host: { type: 'string', default: '127.0.0.1' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (error) {
    process.stderr.write(`error: ${(error as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const port = Number(values.port);
  if (!/^\d+$/.test(values.port) || port > 65535) {
    process.stderr.write(
      `error: invalid --port ${JSON.stringify(values.port)}; give an integer from 0 to 65535\n`,
    );
    process.exit(2);
  }
  return { port, name: values.name, host: values.host };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const options = readOptions();
  const server = await startEchoUpstream(options.port, options.name, options.host);
  const { port } = server.address() as AddressInfo;
  process.stdout.write(
    `echo upstream "${options.name}" listening on http://${options.host}:${port}\n`,
  );
}
