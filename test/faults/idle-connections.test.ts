import assert from 'node:assert/strict';
import { connect as connectHttp2, type ClientHttp2Session } from 'node:http2';
import { connect as connectTcp, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { waitFor } from '../../scripts/processes.js';
import { fleetStatus } from '../helpers/fleet-status.js';
import {
  applyConfig,
  fixtureConfig,
  logLines,
  startUpstream,
  waitForVersion,
  Workspace,
  type Member,
} from './harness.js';

/** Idle limit of the control plane under test; far below the 40 s its keepalive takes. */
const IDLE_TIMEOUT = '500ms';
/** Time that the open streams spend with no traffic: several idle limits. */
const QUIET_MS = 2_500;
/** Bound of each wait for a connection to close. */
const CLOSE_WAIT_MS = 20_000;

const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
/** An empty SETTINGS frame, then a SETTINGS frame with the ACK flag. */
const SETTINGS_AND_ACK = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);

/** A raw TCP connection to the gRPC port, and how it ended. */
interface RawConnection {
  socket: Socket;
  endedByServer: boolean;
  closed: boolean;
}

function openRaw(port: number, firstBytes?: Buffer): RawConnection {
  const socket = connectTcp(port, '127.0.0.1');
  const connection: RawConnection = { socket, endedByServer: false, closed: false };
  socket.on('connect', () => {
    if (firstBytes !== undefined) socket.write(firstBytes);
  });
  // Reads and drops whatever the server sends, so its writes never block.
  socket.on('data', () => {});
  socket.on('end', () => (connection.endedByServer = true));
  socket.on('close', () => (connection.closed = true));
  socket.on('error', () => {});
  return connection;
}

/** Opens an HTTP/2 session that acknowledges the server's pings but opens no stream. */
function openIdleSession(port: number): { session: ClientHttp2Session; goaway: boolean } {
  const session = connectHttp2(`http://127.0.0.1:${port}`);
  const idle = { session, goaway: false };
  session.on('goaway', () => (idle.goaway = true));
  session.on('error', () => {});
  return idle;
}

/**
 * Opens `grpc.health.v1.Health/Watch` for the whole server on `session`, a server-streaming
 * call that stays open until the client cancels it, and resolves with the stream after the
 * first response message.
 */
async function openHealthWatch(session: ClientHttp2Session) {
  const stream = session.request({
    ':method': 'POST',
    ':path': '/grpc.health.v1.Health/Watch',
    'content-type': 'application/grpc',
    te: 'trailers',
  });
  const watch = { stream, messages: 0, closed: false, trailers: undefined as unknown };
  stream.on('data', () => watch.messages++);
  stream.on('trailers', (trailers) => (watch.trailers = trailers));
  stream.on('close', () => (watch.closed = true));
  stream.on('error', () => {});
  // A gRPC message frame: no compression, length 0, and an empty HealthCheckRequest.
  stream.end(Buffer.alloc(5));
  await waitFor('the first health status', CLOSE_WAIT_MS, () => watch.messages >= 1);
  return watch;
}

describe('connections without a stream on the gRPC port', { timeout: 90_000 }, () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let ws: Workspace;
  let cp: Member;

  before(async () => {
    upstream = await startUpstream('echo');
    ws = new Workspace();
    cp = await ws.controlPlane('cp', [
      '--data-dir',
      join(ws.dir, 'store'),
      '--connection-idle-timeout',
      IDLE_TIMEOUT,
    ]);
  });

  after(async () => {
    await ws.close();
    upstream.server.close();
  });

  test('idle connections are closed', async () => {
    const silent = openRaw(cp.port);
    const prefaceOnly = openRaw(cp.port, Buffer.concat([HTTP2_PREFACE, SETTINGS_AND_ACK]));
    const partialPreface = openRaw(cp.port, HTTP2_PREFACE.subarray(0, 10));
    const idle = openIdleSession(cp.port);
    const raw = { silent, prefaceOnly, partialPreface };

    await waitFor('every idle connection to close', CLOSE_WAIT_MS, () => {
      return Object.values(raw).every((connection) => connection.closed) && idle.session.closed;
    }).catch((error: Error) => {
      const open = Object.entries(raw).filter(([, connection]) => !connection.closed);
      assert.fail(`${error.message}: open ${open.map(([name]) => name).join(', ')}`);
    });

    for (const [name, connection] of Object.entries(raw)) {
      assert.equal(connection.endedByServer, true, name);
    }
    assert.equal(idle.goaway, true);
  });

  test('quiet streams keep their connections', async () => {
    const version = await applyConfig(cp.address, fixtureConfig(upstream.port, 1));
    const proxy = await ws.proxy('p1', [cp.address]);
    await waitForVersion(proxy.adminPort, version);
    const session = connectHttp2(`http://127.0.0.1:${cp.port}`);
    session.on('error', () => {});
    let goaway = false;
    session.on('goaway', () => (goaway = true));
    const watch = await openHealthWatch(session);

    await sleep(QUIET_MS);

    assert.equal(watch.closed, false, String(watch.trailers));
    assert.equal(goaway, false);
    assert.equal(session.closed, false);
    assert.deepEqual(logLines(proxy, 'control plane lost, reconnecting'), [], ws.logs());
    const [row] = (await fleetStatus(cp.address)).proxies.filter((p) => p.id === 'p1');
    assert.equal(row?.connected, true);

    // The snapshot stream still delivers, without a new connection.
    const next = await applyConfig(cp.address, fixtureConfig(upstream.port, 2));
    await waitForVersion(proxy.adminPort, next);
    assert.equal(logLines(cp, 'proxy connected').length, 1, ws.logs());
    assert.deepEqual(logLines(proxy, 'control plane lost, reconnecting'), []);
    watch.stream.close();
    session.close();
  });
});
