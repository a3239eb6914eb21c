import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { connect as tcpConnect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { resetConnection } from '../../data-plane/proxy/socket-reset.js';
import { createTestPki, type TestPki } from '../faults/certs.js';

/**
 * Returns how a client connection ended: 'end' for a FIN, or the code of the error. The first
 * bytes that arrive make the server reset the connection.
 */
async function ending(socket: Socket): Promise<string> {
  let result = 'none';
  socket.once('data', () => resetServerSide?.());
  socket.on('end', () => {
    if (result === 'none') result = 'end';
  });
  socket.on('error', (err: NodeJS.ErrnoException) => {
    if (result === 'none') result = err.code ?? err.message;
  });
  await new Promise((resolve) => socket.once('close', resolve));
  return result;
}

/** Resets the server side of the connection that got the last request. */
let resetServerSide: (() => void) | undefined;

/** Starts `server`, whose listener writes part of a response and leaves the connection open. */
async function listen(server: Server): Promise<number> {
  server.on('request', (req, res) => {
    resetServerSide = () => resetConnection(req.socket);
    res.writeHead(200);
    res.write('partial');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

describe('connection reset', () => {
  let pki: TestPki;

  before(() => {
    pki = createTestPki();
  });

  after(() => {
    pki.remove();
  });

  it('resets a plain connection', async () => {
    const server = createHttpServer();
    try {
      const socket = tcpConnect(await listen(server), '127.0.0.1');
      socket.write('GET / HTTP/1.0\r\n\r\n');
      assert.equal(await ending(socket), 'ECONNRESET');
    } finally {
      server.close();
    }
  });

  it('resets a TLS connection', async () => {
    const server = createHttpsServer({
      cert: readFileSync(pki.server.cert),
      key: readFileSync(pki.server.key),
    });
    try {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: await listen(server),
        ca: readFileSync(pki.ca),
      });
      socket.write('GET / HTTP/1.0\r\n\r\n');
      assert.equal(await ending(socket), 'ECONNRESET');
    } finally {
      server.close();
    }
  });
});
