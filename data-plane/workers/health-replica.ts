import type { HealthSource } from '../upstreams/health-checker.js';
import type { TargetState } from '../upstreams/target-state.js';
import type { UnhealthyTarget } from './messages.js';

interface Attachment {
  state: TargetState;
  key: string;
}

/**
 * A worker's copy of the target health that the primary's active health checks found. It is the
 * worker's {@link HealthSource}, so the worker's checkers send no requests: each one attaches
 * its target's state here, and every `target-health` message from the primary sets the health
 * of every attached state. A target the primary has not reported unhealthy is healthy, as a
 * target is before its first check.
 *
 * Passive ejection is not shared: each worker still ejects targets on the failures of its own
 * requests.
 */
export class HealthReplica implements HealthSource {
  #unhealthy = new Set<string>();
  readonly #attached = new Set<Attachment>();

  attach(state: TargetState): () => void {
    const attachment = { state, key: targetKey(state.upstream, new URL(state.url).origin) };
    this.#attached.add(attachment);
    this.#apply(attachment);
    // A checker whose settings changed is replaced by a new one on the same state, which
    // attaches before the old one stops, so each detach removes only its own attachment.
    return () => this.#attached.delete(attachment);
  }

  /** Replaces the health of every target with the primary's latest list of unhealthy ones. */
  update(unhealthy: readonly UnhealthyTarget[]): void {
    this.#unhealthy = new Set(unhealthy.map((entry) => targetKey(entry.upstream, entry.target)));
    for (const attachment of this.#attached) this.#apply(attachment);
  }

  #apply({ state, key }: Attachment): void {
    if (this.#unhealthy.has(key)) {
      state.setHealthy(false, 'health check failed in the primary');
    } else {
      state.setHealthy(true, 'health check passed in the primary');
    }
  }
}

/** Key of a target in the shared health: the upstream name and the target's origin. */
export function targetKey(upstream: string, origin: string): string {
  return `${upstream}\n${origin}`;
}
