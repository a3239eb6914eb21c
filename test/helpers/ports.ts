import { createServer } from 'node:net';

/**
 * Ports handed out from, below Linux's default ephemeral range (32768 to 60999): the OS gives
 * those to outgoing connections, and a test's many client connections could take a port
 * between the check here and the server's bind.
 */
export const FIRST_PORT = 20_000;
export const LAST_PORT = 32_000;

/** Ports this process handed out, so one test process never gets the same port twice. */
const handedOut = new Set<number>();

/**
 * Returns a TCP port on 127.0.0.1 that was free a moment ago. It picks a random port outside
 * the ephemeral range, so neither outgoing connections nor another test process binding port 0
 * is likely to take it before the caller binds it. Callers that can retry should.
 */
export async function findFreePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = FIRST_PORT + Math.floor(Math.random() * (LAST_PORT - FIRST_PORT));
    if (handedOut.has(port)) continue;
    if (await isFree(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port found between ${FIRST_PORT} and ${LAST_PORT} in 200 tries`);
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
