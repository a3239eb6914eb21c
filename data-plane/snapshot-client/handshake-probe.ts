import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity, connect, type TLSSocket } from 'node:tls';

import type { ClientTlsFiles } from '../../common/tls.js';

/**
 * Result of a client-certificate probe. `accepted`: the server sent HTTP/2 data
 * after the handshake. `rejected`: it closed the connection after the handshake
 * without sending any. `unknown`: no TCP connection, a handshake error, or no
 * data within the timeout.
 */
export type ProbeOutcome = 'accepted' | 'rejected' | 'unknown';

/** Time a probe waits for the server's first bytes, in milliseconds. */
const PROBE_TIMEOUT_MS = 3_000;

/**
 * Opens one TLS connection to `address` with `files` and reports whether the
 * server accepted the client certificate.
 *
 * A Node.js TLS server, grpc-js 1.14 included, verifies the client certificate
 * after the handshake and, when verification fails, destroys the socket
 * without a TLS alert. The client's handshake has succeeded by then, so
 * grpc-js reports only `read ECONNRESET` or `Failed to connect`. An HTTP/2
 * server that accepted the certificate sends its SETTINGS frame at once, so
 * the arrival of any data distinguishes the two cases.
 *
 * The promise never rejects, and unreadable files give `unknown`.
 */
export async function probeClientCertificate(
  address: string,
  files: ClientTlsFiles,
  timeoutMs = PROBE_TIMEOUT_MS,
): Promise<ProbeOutcome> {
  const separator = address.lastIndexOf(':');
  const host = address.slice(0, separator).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(separator + 1));
  const serverName = files.serverName ?? host;
  let socket: TLSSocket;
  try {
    socket = connect({
      host,
      port,
      // RFC 6066 forbids an IP address as SNI server name, and Node warns about one.
      servername: isIP(serverName) === 0 ? serverName : undefined,
      checkServerIdentity: (_host, certificate) => checkServerIdentity(serverName, certificate),
      ca: files.ca === undefined ? undefined : readFileSync(files.ca),
      cert: files.cert === undefined ? undefined : readFileSync(files.cert),
      key: files.key === undefined ? undefined : readFileSync(files.key),
      ALPNProtocols: ['h2'],
    });
  } catch {
    return 'unknown';
  }

  return new Promise((resolve) => {
    let handshakeDone = false;
    const finish = (outcome: ProbeOutcome) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish('unknown'), timeoutMs);
    timer.unref();
    socket.once('secureConnect', () => {
      handshakeDone = true;
    });
    socket.once('data', () => finish('accepted'));
    socket.once('error', () => finish(handshakeDone ? 'rejected' : 'unknown'));
    socket.once('close', () => finish(handshakeDone ? 'rejected' : 'unknown'));
  });
}
