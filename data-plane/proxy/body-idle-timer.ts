import type { IncomingMessage } from 'node:http';
import type { EventEmitter } from 'node:events';

/**
 * Destroys `response` with `UND_ERR_BODY_TIMEOUT` when its upstream sends no body bytes for
 * `timeoutMs` while the proxy reads, the rule that undici's `bodyTimeout` applies to pooled
 * requests. Requests on the proxy's own connections (100-continue, upgrade requests whose
 * response is not a 101) need it from here. The clock stops while the body waits for a slow
 * client, which the send timeout covers, and restarts when `destination` drains. 0 means no
 * limit.
 */
export function limitBodyIdleTime(
  response: IncomingMessage,
  destination: EventEmitter,
  timeoutMs: number,
): void {
  if (timeoutMs <= 0) return;

  let timer: NodeJS.Timeout | undefined;
  const expire = (): void => {
    response.destroy(
      Object.assign(new Error(`no response body bytes within ${timeoutMs} ms`), {
        code: 'UND_ERR_BODY_TIMEOUT',
      }),
    );
  };
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(expire, timeoutMs);
  };
  const disarm = (): void => {
    clearTimeout(timer);
    timer = undefined;
  };
  const rearm = (): void => {
    if (!response.complete && !response.destroyed) arm();
  };

  arm();
  // A 'data' listener that paused the response for backpressure may run before this one.
  response.on('data', () => (response.isPaused() ? disarm() : arm()));
  response.on('pause', disarm);
  response.on('resume', rearm);
  // `pipe` resumes a paused source without calling resume(), so the drain restarts the clock.
  destination.on('drain', rearm);
  response.once('end', disarm);
  response.once('close', () => {
    disarm();
    destination.removeListener('drain', rearm);
  });
}
