import { mkdirSync, openSync, closeSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Ports handed out from, below Linux's default ephemeral range (32768 to 60999): the OS gives
 * those to outgoing connections, and a test's many client connections could take a port
 * between the check here and the server's bind.
 */
export const FIRST_PORT = 20_000;
export const LAST_PORT = 32_000;

/**
 * Directory of reservation files, one per port handed out, each named by the port and containing
 * the owner's PID. Test files run two at a time in separate processes. A port that one of them
 * found free may be about to be bound by the other, so a port is handed out only after this
 * process has created its file.
 */
const RESERVATIONS = join(tmpdir(), `loom-test-ports-${process.getuid?.() ?? 'user'}`);

/** Ports this process reserved, released when it exits. */
const reserved = new Set<number>();

process.once('exit', () => {
  for (const port of reserved) rmSync(join(RESERVATIONS, String(port)), { force: true });
});

/**
 * Returns a TCP port on 127.0.0.1 that was free a moment ago and that no other test process
 * was handed. It picks a random port outside the ephemeral range, so outgoing connections and
 * servers binding port 0 do not take it before the caller binds it.
 */
export async function findFreePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = FIRST_PORT + Math.floor(Math.random() * (LAST_PORT - FIRST_PORT));
    if (!reserve(port)) continue;
    if (await isFree(port)) return port;
    release(port);
  }
  throw new Error(`no free port found between ${FIRST_PORT} and ${LAST_PORT} in 200 tries`);
}

/**
 * Returns the first of `count` consecutive ports that were all free a moment ago, reserved as
 * findFreePort reserves one.
 */
export async function findFreePortRun(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = FIRST_PORT + Math.floor(Math.random() * (LAST_PORT - FIRST_PORT - count));
    const ports = Array.from({ length: count }, (_, index) => base + index);
    const claimed: number[] = [];
    for (const port of ports) {
      if (!reserve(port)) break;
      claimed.push(port);
    }
    if (claimed.length === count && (await Promise.all(ports.map(isFree))).every(Boolean)) {
      return base;
    }
    for (const port of claimed) release(port);
  }
  throw new Error(`no run of ${count} free ports found on 127.0.0.1`);
}

/** Creates the port's reservation file. Returns false if a live process owns the port. */
function reserve(port: number): boolean {
  if (reserved.has(port)) return false;
  mkdirSync(RESERVATIONS, { recursive: true });
  const path = join(RESERVATIONS, String(port));
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      reserved.add(port);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      if (isAlive(readOwner(path))) return false;
      // The owner exited without releasing the port (a killed test process), so take it over.
      rmSync(path, { force: true });
    }
  }
  return false;
}

function release(port: number): void {
  reserved.delete(port);
  rmSync(join(RESERVATIONS, String(port)), { force: true });
}

function readOwner(path: string): number {
  try {
    return Number(readFileSync(path, 'utf8'));
  } catch {
    return 0;
  }
}

function isAlive(pid: number): boolean {
  // An empty file is one another process created and has not written its PID into yet.
  if (!Number.isInteger(pid) || pid <= 0) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
