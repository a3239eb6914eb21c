import type { Worker } from 'node:cluster';

import type { Logger } from '../../common/logger.js';

// node:cluster's round-robin scheduler (lib/internal/cluster/round_robin_handle.js in Node.js
// 20) accepts each client connection in the primary and sends the raw TCP handle to a worker
// in an internal message `{cmd: 'NODE_CLUSTER', act: 'newconn', key, seq}`.
// The primary closes its copy only when the worker acknowledges it with `{ack: seq, accepted}`.
// When the worker dies first, the acknowledgement never comes and Node.js neither closes nor
// re-sends the handle, so the client waits forever and the primary leaks the socket.
// NOTE: this relies on that internal message format and on the ChildProcess 'internalMessage'
// event, neither of which Node.js documents. If they change, no handoff is seen and a worker
// crash loses connections again; test/proxy/workers-kill.test.ts catches that.

/** The internal message that hands a connection to a worker. */
interface NewConnection {
  cmd: 'NODE_CLUSTER';
  act: 'newconn';
  key: string;
  seq: number;
}

/** A connection handle as libuv's TCP wrap exposes it; only `close` is used. */
interface ConnectionHandle {
  close(): void;
}

/** A connection sent to a worker that has not acknowledged it yet. */
interface Handoff {
  message: NewConnection;
  handle: ConnectionHandle;
  /** True for a connection this tracker re-sent, which no node:cluster callback closes. */
  resent: boolean;
  /** Times this tracker re-sent the connection. */
  resends: number;
}

/** Re-sends of one connection before it is closed, so workers that reject it cannot loop. */
const MAX_RESENDS = 3;

function isNewConnection(message: unknown): message is NewConnection {
  const candidate = message as Partial<NewConnection> | null;
  return candidate?.cmd === 'NODE_CLUSTER' && candidate.act === 'newconn';
}

function isAck(
  message: unknown,
): message is { cmd: 'NODE_CLUSTER'; ack: number; accepted: boolean } {
  const candidate = message as { cmd?: unknown; ack?: unknown } | null;
  return candidate?.cmd === 'NODE_CLUSTER' && typeof candidate.ack === 'number';
}

/**
 * Records the connections node:cluster hands to each worker until the worker acknowledges them,
 * and re-sends those a worker never acknowledged to a listening worker once it has exited and
 * its IPC channel has closed. With no worker listening it closes them, so the client sees the
 * connection reset instead of waiting.
 */
export class HandoffTracker {
  readonly #logger: Logger;
  readonly #listeningWorkers: () => Worker[];
  readonly #inFlight = new Map<Worker, Map<number, Handoff>>();
  /** Next sequence number of a re-sent connection; negative, so node:cluster never uses it. */
  #nextSeq = -1;
  #nextTarget = 0;

  constructor(logger: Logger, listeningWorkers: () => Worker[]) {
    this.#logger = logger;
    this.#listeningWorkers = listeningWorkers;
  }

  /** Starts recording the connections handed to `worker`; call it right after the fork. */
  track(worker: Worker, slotIndex: number): void {
    const inFlight = new Map<number, Handoff>();
    this.#inFlight.set(worker, inFlight);
    const child = worker.process;
    const send = child.send.bind(child) as (...args: unknown[]) => boolean;
    const tracked = (message: unknown, handle?: unknown, ...rest: unknown[]): boolean => {
      if (isNewConnection(message) && handle !== undefined && !inFlight.has(message.seq)) {
        inFlight.set(message.seq, {
          message,
          handle: handle as ConnectionHandle,
          resent: false,
          resends: 0,
        });
      }
      return send(message, handle, ...rest);
    };
    child.send = tracked as typeof child.send;

    child.on('internalMessage', (message: unknown) => {
      if (!isAck(message)) return;
      const handoff = inFlight.get(message.ack);
      if (handoff === undefined) return;
      inFlight.delete(message.ack);
      // node:cluster closes or re-sends the connections it sent itself when the ack arrives.
      if (!handoff.resent) return;
      if (message.accepted) handoff.handle.close();
      else this.#resend(handoff, slotIndex);
    });

    // Acks are read before the channel closes, so whatever is left then was never accepted.
    // A worker can close its channel and live on, and could still accept what it received.
    const recover = (): void => {
      if (child.connected || (child.exitCode === null && child.signalCode === null)) return;
      this.#inFlight.delete(worker);
      if (inFlight.size === 0) return;
      this.#logger.warn(
        { worker: slotIndex, workerPid: child.pid, connections: inFlight.size },
        'worker exited before accepting connections, re-sending them',
      );
      for (const handoff of inFlight.values()) this.#resend(handoff, slotIndex);
      inFlight.clear();
    };
    child.once('disconnect', recover);
    child.once('exit', recover);
  }

  /**
   * Sends `handoff`'s connection to the next listening worker. Closes it instead when none
   * listens or it was re-sent {@link MAX_RESENDS} times; `fromSlot` is the slot it leaves.
   */
  #resend(handoff: Handoff, fromSlot: number): void {
    const targets = this.#listeningWorkers().filter(
      (worker) => worker.process.connected && this.#inFlight.has(worker),
    );
    if (targets.length === 0 || handoff.resends >= MAX_RESENDS) {
      handoff.handle.close();
      this.#logger.warn(
        { worker: fromSlot, resends: handoff.resends, listening: targets.length },
        'connection closed after its worker exited',
      );
      return;
    }
    const target = targets[this.#nextTarget++ % targets.length];
    const message: NewConnection = { ...handoff.message, seq: this.#nextSeq-- };
    this.#inFlight.get(target)?.set(message.seq, {
      message,
      handle: handoff.handle,
      resent: true,
      resends: handoff.resends + 1,
    });
    target.process.send(message, handoff.handle as never);
  }
}
