import type { Logger } from '../../common/logger.js';
import type { Upstream } from '../../proto/gen/loom/v1/config.js';
import { UpstreamRegistry, type UpstreamRegistryOptions } from '../upstreams/registry.js';
import { targetKey } from './health-replica.js';
import type { UnhealthyTarget } from './messages.js';

/** Settings of the primary's health checks. */
export interface HealthProberOptions {
  logger: Logger;
  /** Connection settings of the checks' upstream pools, as the workers' pools have them. */
  upstreams?: Omit<UpstreamRegistryOptions, 'logger' | 'healthListener'>;
  /** Called with every unhealthy target each time that list changes. */
  onChange(unhealthy: UnhealthyTarget[]): void;
}

/**
 * The active health checks of a multi-process proxy, run once in the primary for all workers.
 * It keeps its own upstream registry, holding only the upstreams that have a `healthCheck`, so
 * its pools carry nothing but checks and the checks run exactly as in a single process. Each
 * change of a target's health produces the new list of unhealthy targets, which the primary
 * sends to every worker.
 */
export class HealthProber {
  readonly #logger: Logger;
  readonly #registry: UpstreamRegistry;
  readonly #onChange: (unhealthy: UnhealthyTarget[]) => void;
  readonly #unhealthy = new Map<string, UnhealthyTarget>();

  constructor(options: HealthProberOptions) {
    this.#logger = options.logger.child({ component: 'health-checks' });
    this.#onChange = options.onChange;
    this.#registry = new UpstreamRegistry({
      ...options.upstreams,
      logger: options.logger,
      healthListener: {
        setTargetHealthy: (upstream, target, healthy) => this.#record(upstream, target, healthy),
        // The primary sends no requests through these pools, so nothing is ever ejected.
        targetEjected: () => undefined,
      },
    });
  }

  /** Every target whose checks took it out of rotation. */
  get unhealthy(): UnhealthyTarget[] {
    return [...this.#unhealthy.values()];
  }

  /**
   * Checks the targets of a snapshot that the workers committed. Targets that stay keep their
   * health and their checker; targets that left are forgotten. When the registry rejects the
   * upstreams (a `tls.caFile` became unreadable after the workers staged them), the previous
   * checks go on and the failure is logged.
   */
  update(upstreams: readonly Upstream[]): void {
    const checked = upstreams.filter((upstream) => upstream.healthCheck !== undefined);
    try {
      this.#registry.update(checked);
    } catch (err) {
      this.#logger.error({ err }, 'health checks not updated');
      return;
    }

    const keys = new Set<string>();
    for (const upstream of checked) {
      for (const target of upstream.targets) {
        if (URL.canParse(target.url))
          keys.add(targetKey(upstream.name, new URL(target.url).origin));
      }
    }
    const before = this.#unhealthy.size;
    for (const key of this.#unhealthy.keys()) {
      if (!keys.has(key)) this.#unhealthy.delete(key);
    }
    if (this.#unhealthy.size !== before) this.#onChange(this.unhealthy);
  }

  /** Stops the checks and closes their pools. */
  close(): Promise<void> {
    return this.#registry.close();
  }

  #record(upstream: string, target: string, healthy: boolean): void {
    const key = targetKey(upstream, target);
    if (healthy === !this.#unhealthy.has(key)) return;

    if (healthy) this.#unhealthy.delete(key);
    else this.#unhealthy.set(key, { upstream, target });
    this.#onChange(this.unhealthy);
  }
}
