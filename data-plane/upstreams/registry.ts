import { Pool } from 'undici';
import { LoomError } from '../../common/errors.js';
import { createLogger, type Logger } from '../../common/logger.js';
import type { Upstream } from '../../proto/gen/loom/v1/config.js';
import { WeightedRoundRobinBalancer, type Balancer, type UpstreamTarget } from './balancer.js';
import { parseTargetUrl, type ParsedTargetUrl } from './target-url.js';

/** Connection settings shared by every upstream pool. Times are in milliseconds. */
export interface UpstreamRegistryOptions {
  /** Parent logger; default a root logger named `loom`. */
  logger?: Logger;
  /**
   * Idle time after which a keep-alive connection is closed; default 4000. It stays below the
   * 5 s default of Node.js `http.Server`, so the proxy closes an idle connection before the
   * upstream does and never reuses one the upstream is closing. A `Keep-Alive: timeout=N`
   * response header overrides it, minus a 2 s margin that undici subtracts.
   */
  keepAliveTimeout?: number;
  /** Time allowed to open a TCP or TLS connection; default 5000, 0 disables it. */
  connectTimeout?: number;
  /** Time allowed, once the request is sent, to receive all response headers; default 30000, 0 disables it. */
  headersTimeout?: number;
  /** Time allowed between two chunks of the response body; default 30000, 0 disables it. */
  bodyTimeout?: number;
  /** Maximum connections per origin; default null, meaning no limit. */
  connections?: number | null;
}

interface ResolvedTarget extends ParsedTargetUrl {
  url: string;
  weight: number;
}

interface ResolvedUpstream {
  name: string;
  targets: ResolvedTarget[];
}

/**
 * Owns one undici `Pool` per upstream origin and builds the balancers of each snapshot.
 * An origin that stays in use across snapshots keeps its pool, so applying a snapshot does not
 * close the keep-alive connections of unchanged targets.
 */
export class UpstreamRegistry {
  readonly #logger: Logger;
  readonly #poolOptions: Pool.Options;
  #pools = new Map<string, Pool>();
  #closed = false;

  constructor(options: UpstreamRegistryOptions = {}) {
    const keepAliveTimeout = requireDuration(
      'keepAliveTimeout',
      options.keepAliveTimeout,
      4_000,
      1,
    );
    const connectTimeout = requireDuration('connectTimeout', options.connectTimeout, 5_000, 0);
    const headersTimeout = requireDuration('headersTimeout', options.headersTimeout, 30_000, 0);
    const bodyTimeout = requireDuration('bodyTimeout', options.bodyTimeout, 30_000, 0);
    const connections = options.connections ?? null;
    if (connections !== null && !(Number.isInteger(connections) && connections > 0)) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid connections ${connections}: expected a positive integer or null for no limit`,
      );
    }

    const logger = options.logger ?? createLogger({ name: 'loom' });
    this.#logger = logger.child({ component: 'upstreams' });
    this.#poolOptions = {
      keepAliveTimeout,
      connectTimeout,
      headersTimeout,
      bodyTimeout,
      connections,
    };
  }

  /** Number of origins with an open pool. */
  get size(): number {
    return this.#pools.size;
  }

  /**
   * Builds one balancer per upstream for a new snapshot and puts it in service. An origin
   * already in use keeps its pool and its open connections. Pools of origins no longer used are
   * closed after the requests already sent on them finish, so call this in the same synchronous
   * step that swaps the routing table, and no request picks a target whose pool is closed.
   *
   * Every target URL must be an absolute http or https URL without credentials, query or
   * fragment, and every weight an integer of at least 0. Otherwise it throws
   * `LOOM_SNAPSHOT_REJECTED` listing each invalid target with its upstream, index and URL, and
   * changes nothing.
   */
  update(upstreams: readonly Upstream[]): Map<string, Balancer> {
    if (this.#closed) {
      throw new LoomError('LOOM_UNAVAILABLE', 'upstream registry is closed');
    }
    const resolved = resolveUpstreams(upstreams);

    const previous = this.#pools;
    const pools = new Map<string, Pool>();
    let created = 0;
    const balancers = new Map<string, Balancer>();
    for (const upstream of resolved) {
      const targets = upstream.targets.map((target): UpstreamTarget => {
        let pool = pools.get(target.origin) ?? previous.get(target.origin);
        if (pool === undefined) {
          pool = new Pool(target.origin, { ...this.#poolOptions });
          created++;
        }
        pools.set(target.origin, pool);
        return { ...target, pool };
      });
      balancers.set(upstream.name, new WeightedRoundRobinBalancer(upstream.name, targets));
    }

    this.#pools = pools;

    const retired: string[] = [];
    for (const [origin, pool] of previous) {
      if (!pools.has(origin)) {
        retired.push(origin);
        this.#closePool(origin, pool);
      }
    }
    if (created > 0 || retired.length > 0) {
      this.#logger.info(
        { origins: pools.size, created, closed: retired },
        'upstream pools updated',
      );
    }
    return balancers;
  }

  /** Closes every pool after its in-flight requests finish. Later updates throw `LOOM_UNAVAILABLE`. */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }

    const pools = [...this.#pools.values()];
    this.#closed = true;
    this.#pools = new Map();

    await Promise.all(pools.map((pool) => pool.close()));
    this.#logger.info({ origins: pools.length }, 'upstream pools closed');
  }

  #closePool(origin: string, pool: Pool): void {
    pool.close().catch((err: unknown) => {
      this.#logger.warn({ origin, err }, 'upstream pool close failed');
    });
  }
}

/** Parses every target of every upstream; throws one error that lists all invalid targets. */
function resolveUpstreams(upstreams: readonly Upstream[]): ResolvedUpstream[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  const resolved: ResolvedUpstream[] = [];

  for (const upstream of upstreams) {
    const name = JSON.stringify(upstream.name);
    if (seen.has(upstream.name)) {
      problems.push(`upstream ${name}: duplicate upstream name`);
    }
    seen.add(upstream.name);

    const targets: ResolvedTarget[] = [];
    upstream.targets.forEach((target, index) => {
      const where = `upstream ${name} targets[${index}] url ${JSON.stringify(target.url)}`;
      const parsed = parseTargetUrl(target.url);
      if (typeof parsed === 'string') {
        problems.push(`${where}: ${parsed}`);
        return;
      }
      if (!Number.isInteger(target.weight) || target.weight < 0) {
        problems.push(
          `${where}: invalid weight ${target.weight}, expected an integer of at least 0`,
        );
        return;
      }
      targets.push({ ...parsed, url: target.url, weight: target.weight });
    });
    resolved.push({ name: upstream.name, targets });
  }

  if (problems.length > 0) {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `snapshot rejected, invalid upstream targets:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    );
  }
  return resolved;
}

function requireDuration(
  name: string,
  value: number | undefined,
  fallback: number,
  minimum: number,
): number {
  if (value === undefined) {
    return fallback;
  }
  if (!Number.isInteger(value) || value < minimum) {
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid ${name} ${value}: expected an integer number of milliseconds of at least ${minimum}`,
    );
  }
  return value;
}
