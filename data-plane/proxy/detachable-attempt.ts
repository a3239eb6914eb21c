import type { Dispatcher } from 'undici';
import type { TargetState } from '../upstreams/target-state.js';

/** The dispatch callbacks of an exchange that a {@link DetachableAttempt} forwards. */
export type AttemptCallbacks = Required<
  Pick<Dispatcher.DispatchHandler, 'onConnect' | 'onHeaders' | 'onData' | 'onComplete' | 'onError'>
>;

/** Abort reason of a request that waited for a connection after its attempt was detached. */
const DETACHED = new Error('the request was sent to another target after a connect timeout');

/**
 * Dispatch handler of one attempt that its exchange can give up before the attempt connects.
 * A route's connect timeout detaches an attempt that still waits for a connection, so the
 * exchange can retry on another target. undici cannot cancel a request that waits in a pool's
 * queue, so the detached attempt stays queued. When it gets a connection it is aborted before
 * a byte is written, and only when undici settles it does it leave the target's in-flight
 * count.
 */
export class DetachableAttempt implements Dispatcher.DispatchHandler {
  #exchange: AttemptCallbacks | undefined;
  readonly #state: TargetState;
  #settled = false;

  constructor(exchange: AttemptCallbacks, state: TargetState) {
    this.#exchange = exchange;
    this.#state = state;
  }

  /**
   * Stops forwarding callbacks to the exchange, which no longer counts the attempt as its own.
   */
  detach(): void {
    this.#exchange = undefined;
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.#exchange === undefined) {
      abort(DETACHED);
    } else {
      this.#exchange.onConnect(abort);
    }
  }

  onHeaders(
    statusCode: number,
    rawHeaders: Buffer[],
    resume: () => void,
    statusText: string,
  ): boolean {
    return this.#exchange?.onHeaders(statusCode, rawHeaders, resume, statusText) ?? true;
  }

  onData(chunk: Buffer): boolean {
    return this.#exchange?.onData(chunk) ?? true;
  }

  onComplete(trailers: string[] | null): void {
    if (this.#exchange === undefined) {
      this.#settle();
    } else {
      this.#exchange.onComplete(trailers);
    }
  }

  onError(err: Error): void {
    if (this.#exchange === undefined) {
      this.#settle();
    } else {
      this.#exchange.onError(err);
    }
  }

  #settle(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#state.active--;
  }
}
