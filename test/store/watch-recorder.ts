import { setTimeout as sleep } from 'node:timers/promises';

import { pino, type Logger } from 'pino';

import type { Store, Watch, WatchBatch } from '../../control-plane/store/store.js';

const POLL_MS = 10;

/** A watch that records what it receives, for assertions. */
export interface WatchRecorder {
  batches: WatchBatch[];
  errors: Error[];
  watch: Watch;
  /** Resolves once `ready()` returns true; rejects after `timeoutMs` with `what` in the message. */
  waitFor(what: string, ready: () => boolean, timeoutMs?: number): Promise<void>;
}

/** Starts a watch on `store` that records every batch and error. */
export function recordWatch(store: Store, prefix: string, fromRevision: number): WatchRecorder {
  const batches: WatchBatch[] = [];
  const errors: Error[] = [];
  const watch = store.watch(prefix, fromRevision, {
    onBatch: (batch) => batches.push(batch),
    onError: (error) => errors.push(error),
  });
  return { batches, errors, watch, waitFor };
}

/** Polls `ready` until it returns true or `timeoutMs` passes. */
export async function waitFor(what: string, ready: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(POLL_MS);
  }
}

/** A log line as pino writes it. */
export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** Returns a pino logger that keeps its lines in memory. */
export function memoryLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const destination = { write: (line: string) => lines.push(JSON.parse(line) as LogLine) };
  return { logger: pino({ level: 'debug' }, destination), lines };
}
