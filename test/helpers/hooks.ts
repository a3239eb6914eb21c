import { after, beforeEach } from 'node:test';

/** A server or fixture that a test block starts and closes. */
interface Closable {
  close(): Promise<void>;
}

/**
 * Registers two hooks in the enclosing `describe` block: `received` is emptied before each
 * test, and the servers that `servers` returns are closed in order after the last test. A
 * server that `before` did not start (undefined) is skipped.
 */
export function clearEachAndCloseAfter(
  received: unknown[],
  servers: () => (Closable | undefined)[],
): void {
  beforeEach(() => {
    received.length = 0;
  });

  after(async () => {
    for (const server of servers()) await server?.close();
  });
}
