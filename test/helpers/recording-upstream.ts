import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/** Time `sendRaw` waits for the proxy to close a connection before it closes it, in ms. */
const WAIT_MS = 5_000;

/**
 * Starts a raw HTTP/1.1 upstream that records the request line of every request. It responds with 101
 * to a request with an Upgrade header and with 200 to any other, and closes each connection
 * after the response. The recorded line is exactly what the proxy wrote on the wire.
 */
export async function startRecordingUpstream(): Promise<{
  server: Server;
  port: number;
  requestLines: string[];
}> {
  const requestLines: string[] = [];
  const server = createServer((socket: Socket) => {
    let head = '';
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.removeAllListeners('data');
      requestLines.push(head.slice(0, head.indexOf('\r\n')));
      const upgrade = /^upgrade:/im.test(head.slice(0, end));
      socket.end(
        upgrade
          ? 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
          : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok',
      );
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port, requestLines };
}

/** Writes `text` on a new connection and returns what arrives until the proxy closes it. */
export async function sendRaw(port: number, text: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('error', () => socket.destroy());
  socket.write(text);
  const timer = setTimeout(() => socket.destroy(), WAIT_MS);
  await once(socket, 'close');
  clearTimeout(timer);
  return Buffer.concat(chunks).toString('latin1');
}
