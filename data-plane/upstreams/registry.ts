import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { Pool } from 'undici';
import { LoomError } from '../../common/errors.js';
import {
  MAX_CONSECUTIVE_FAILURES,
  MAX_DURATION_MS,
  MAX_HEALTH_THRESHOLD,
} from '../../config/limits.js';
import { createLogger, type Logger } from '../../common/logger.js';
import { shortened } from '../../config/validate.js';
import { checkUpstreamFields } from '../snapshot-checks.js';
import type { HealthCheck, Upstream } from '../../proto/gen/loom/v1/config.js';
import {
  WeightedRoundRobinBalancer,
  type Balancer,
  type TargetConnectOptions,
  type UpstreamTarget,
} from './balancer.js';
import { HashBalancer, MAX_HASH_TARGETS } from './hash-balancer.js';
import { createHashKey } from './hash-key.js';
import { HealthChecker } from './health-checker.js';
import { LeastRequestBalancer } from './least-request-balancer.js';
import { loopGuardConnector } from './own-connections.js';
import { buildResetSafeConnector } from './reset-guard.js';
import {
  TargetState,
  UNREQUESTED_CONTINUE_MARK_MS,
  type TargetHealthListener,
} from './target-state.js';
import { parseTargetUrl, type ParsedTargetUrl } from './target-url.js';

/** Connection settings shared by every upstream pool. Times are in milliseconds. */
export interface UpstreamRegistryOptions {
  /** Parent logger; default a root logger named `loom`. */
  logger?: Logger;
  /** Told when a target is ejected, restored, or changes health; the proxy's metrics. */
  healthListener?: TargetHealthListener;
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
  /**
   * Limit on the bytes of an upstream response's header names and values together, as undici
   * 7 counts them. It counts no colons, spaces, line ends or status line, so the head on the
   * wire can be several times larger. Reaching the limit fails the request with 502. Default
   * 16384.
   */
  maxResponseHeaderBytes?: number;
  /**
   * Time in milliseconds that a target stays marked for sending 100 Continue to requests
   * without `Expect`. A marked target gets its requests through `node:http`. Default
   * `UNREQUESTED_CONTINUE_MARK_MS` (10 minutes).
   */
  unrequestedContinueMarkMs?: number;
}

interface ResolvedTarget extends ParsedTargetUrl {
  url: string;
  weight: number;
  connect: TargetConnectOptions;
  /** `tls.serverName` of the upstream; empty when it is not set. */
  serverName: string;
  /** Pool key: origin plus the TLS settings, so targets with different CAs never share sockets. */
  poolKey: string;
}

interface ResolvedUpstream {
  upstream: Upstream;
  targets: ResolvedTarget[];
}

/**
 * Owns one undici `Pool` per upstream origin (and TLS settings), the live state of every
 * target, and the active health checkers, and builds the balancers of each snapshot. An origin
 * that stays in use across snapshots keeps its pool, and a target that stays in an upstream
 * keeps its health, its ejection and its checker, so applying a snapshot closes no keep-alive
 * connection and forgets no health of unchanged targets.
 */
export class UpstreamRegistry {
  readonly #logger: Logger;
  readonly #healthListener: TargetHealthListener | undefined;
  readonly #poolOptions: Pool.Options;
  readonly #connectTimeout: number;
  readonly #unrequestedContinueMarkMs: number;
  #pools = new Map<string, Pool>();
  #states = new Map<string, TargetState>();
  #checkers = new Map<string, HealthChecker>();
  /** Balancers of the last snapshot, whose round-robin cycles the next snapshot continues. */
  #balancers = new Map<string, Balancer>();
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
    const maxHeaderSize = requireDuration(
      'maxResponseHeaderBytes',
      options.maxResponseHeaderBytes,
      16_384,
      1,
    );
    const unrequestedContinueMarkMs = requireDuration(
      'unrequestedContinueMarkMs',
      options.unrequestedContinueMarkMs,
      UNREQUESTED_CONTINUE_MARK_MS,
      1,
    );
    const connections = options.connections ?? null;
    if (connections !== null && !(Number.isInteger(connections) && connections > 0)) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid connections ${connections}: expected a positive integer or null for no limit`,
      );
    }

    const logger = options.logger ?? createLogger({ name: 'loom' });
    this.#logger = logger.child({ component: 'upstreams' });
    this.#healthListener = options.healthListener;
    this.#connectTimeout = connectTimeout;
    this.#unrequestedContinueMarkMs = unrequestedContinueMarkMs;
    this.#poolOptions = {
      keepAliveTimeout,
      headersTimeout,
      bodyTimeout,
      connections,
      maxHeaderSize,
    };
  }

  /** Number of open pools. */
  get size(): number {
    return this.#pools.size;
  }

  /**
   * Builds one balancer per upstream for a new snapshot and puts it in service. An origin
   * already in use keeps its pool and its open connections. Pools no longer used are closed
   * after the requests already sent on them finish, so call this in the same synchronous step
   * that swaps the routing table, and no request picks a target whose pool is closed.
   *
   * Every target URL must be an absolute http or https URL without credentials, query or
   * fragment, every weight an integer of at least 0, and every `tls.caFile` readable.
   * Otherwise it throws `LOOM_SNAPSHOT_REJECTED` listing each problem with its upstream, and
   * changes nothing.
   */
  update(upstreams: readonly Upstream[]): Map<string, Balancer> {
    if (this.#closed) {
      throw new LoomError('LOOM_UNAVAILABLE', 'upstream registry is closed');
    }
    const resolved = resolveUpstreams(upstreams);

    const previousPools = this.#pools;
    const previousStates = this.#states;
    const previousCheckers = this.#checkers;
    const pools = new Map<string, Pool>();
    const states = new Map<string, TargetState>();
    const checkers = new Map<string, HealthChecker>();
    const balancers = new Map<string, Balancer>();
    let created = 0;

    for (const { upstream, targets: resolvedTargets } of resolved) {
      const targets = resolvedTargets.map((target): UpstreamTarget => {
        let pool = pools.get(target.poolKey) ?? previousPools.get(target.poolKey);
        const poolRebuilt = !previousPools.has(target.poolKey);
        if (pool === undefined) {
          const connect = loopGuardConnector(
            buildResetSafeConnector({ ...tlsOptions(target), timeout: this.#connectTimeout }),
            target.origin,
          );
          pool = new Pool(target.origin, { ...this.#poolOptions, connect });
          created++;
        }
        pools.set(target.poolKey, pool);

        const stateKey = `${upstream.name}\n${target.url}`;
        const state =
          states.get(stateKey) ??
          previousStates.get(stateKey) ??
          new TargetState(
            upstream.name,
            target.url,
            this.#logger,
            this.#healthListener,
            this.#unrequestedContinueMarkMs,
          );
        // A new pool (other TLS settings) may reach a changed upstream, so the target gets the
        // pool back until it sends an unrequested 100 Continue again.
        if (poolRebuilt) state.unmarkUnrequestedContinue('connection pool rebuilt');
        state.configureEjection(upstream.passiveHealth);
        states.set(stateKey, state);

        const checkerKey = `${stateKey}\n${target.poolKey}`;
        const checker = this.#keepChecker(
          previousCheckers.get(checkerKey),
          upstream.healthCheck,
          pool,
          state,
          target,
        );
        if (checker !== undefined) checkers.set(checkerKey, checker);
        if (checker === undefined && upstream.healthCheck === undefined) {
          state.setHealthy(true, 'health check removed');
        }

        return {
          url: target.url,
          upstream: upstream.name,
          origin: target.origin,
          basePath: target.basePath,
          weight: target.weight,
          pool,
          state,
          connect: target.connect,
        };
      });
      balancers.set(
        upstream.name,
        createBalancer(upstream, targets, this.#balancers.get(upstream.name)),
      );
    }

    this.#balancers = balancers;
    this.#pools = pools;
    this.#states = states;
    this.#checkers = checkers;

    for (const [key, checker] of previousCheckers) {
      if (checkers.get(key) !== checker) checker.stop();
    }
    for (const [key, state] of previousStates) {
      if (states.get(key) !== state) state.dispose();
    }
    const retired: string[] = [];
    for (const [key, pool] of previousPools) {
      if (!pools.has(key)) {
        retired.push(key);
        this.#closePool(key, pool);
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

  /**
   * Runs the checks of `update` without changing anything: throws the same
   * `LOOM_SNAPSHOT_REJECTED` error that `update` would throw for `upstreams`. A snapshot that
   * passes can still fail `update` if a `tls.caFile` becomes unreadable in between.
   */
  validate(upstreams: readonly Upstream[]): void {
    resolveUpstreams(upstreams);
  }

  /** Stops health checks and closes every pool after its in-flight requests finish. */
  async close(): Promise<void> {
    if (this.#closed) {
      return;
    }

    const pools = [...this.#pools.values()];
    this.#closed = true;
    for (const checker of this.#checkers.values()) checker.stop();
    for (const state of this.#states.values()) state.dispose();
    this.#pools = new Map();
    this.#states = new Map();
    this.#checkers = new Map();
    this.#balancers = new Map();

    await Promise.all(pools.map((pool) => pool.close()));
    this.#logger.info({ origins: pools.length }, 'upstream pools closed');
  }

  /** Returns the checker the target needs: the previous one while its settings are unchanged. */
  #keepChecker(
    previous: HealthChecker | undefined,
    settings: HealthCheck | undefined,
    pool: Pool,
    state: TargetState,
    target: ResolvedTarget,
  ): HealthChecker | undefined {
    if (settings === undefined) {
      return undefined;
    }
    const host = healthCheckHost(settings, target);
    if (
      previous !== undefined &&
      previous.hostHeader === host &&
      sameHealthCheck(previous.settings, settings)
    ) {
      return previous;
    }

    const checker = new HealthChecker(
      pool,
      state,
      { ...settings },
      host,
      this.#logger,
      target.connect,
    );
    checker.start();
    return checker;
  }

  #closePool(key: string, pool: Pool): void {
    pool.close().catch((err: unknown) => {
      this.#logger.warn({ origin: key, err }, 'upstream pool close failed');
    });
  }
}

/** Builds the balancer of `upstream`, continuing the round-robin cycle of `previous`. */
function createBalancer(
  upstream: Upstream,
  targets: UpstreamTarget[],
  previous: Balancer | undefined,
): Balancer {
  switch (upstream.balancer) {
    case 'least-request':
      return new LeastRequestBalancer(upstream.name, targets);
    case 'hash':
      return new HashBalancer(
        upstream.name,
        targets,
        createHashKey(upstream.hashOn ?? ''),
        previous instanceof HashBalancer ? previous : undefined,
      );
    default:
      return new WeightedRoundRobinBalancer(
        upstream.name,
        targets,
        previous instanceof WeightedRoundRobinBalancer ? previous : undefined,
      );
  }
}

/**
 * Returns the Host header of a target's health checks: `healthCheck.host`, else `tls.serverName`
 * for an https target that sets it, else the target's host and port. A virtual-hosted upstream
 * reached by IP address then serves its checks from the same virtual host as its requests.
 */
function healthCheckHost(settings: Readonly<HealthCheck>, target: ResolvedTarget): string {
  if (settings.host !== undefined) {
    return settings.host;
  }
  if (target.secure && target.serverName !== '') {
    return target.serverName;
  }
  return new URL(target.origin).host;
}

function sameHealthCheck(a: Readonly<HealthCheck>, b: Readonly<HealthCheck>): boolean {
  return (
    a.path === b.path &&
    a.intervalMs === b.intervalMs &&
    a.timeoutMs === b.timeoutMs &&
    a.healthyThreshold === b.healthyThreshold &&
    a.unhealthyThreshold === b.unhealthyThreshold
  );
}

function tlsOptions(target: ResolvedTarget): {
  ca?: string;
  servername?: string;
  rejectUnauthorized?: boolean;
} {
  if (!target.secure) {
    return {};
  }
  const { ca, servername, rejectUnauthorized } = target.connect;
  return { ca, servername, rejectUnauthorized };
}

/** Parses every target of every upstream; throws one error that lists all problems. */
function resolveUpstreams(upstreams: readonly Upstream[]): ResolvedUpstream[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  const resolved: ResolvedUpstream[] = [];
  const caFiles = new Map<string, string>();

  for (const upstream of upstreams) {
    const name = JSON.stringify(upstream.name);
    if (seen.has(upstream.name)) {
      problems.push(`upstream ${name}: duplicate upstream name`);
    }
    seen.add(upstream.name);
    checkUpstreamFields(upstream, problems);
    if (upstream.balancer === 'hash' && upstream.targets.length > MAX_HASH_TARGETS) {
      problems.push(
        `upstream ${name}: ${upstream.targets.length} targets, at most ${MAX_HASH_TARGETS} are allowed with balancer hash; split the upstream or use another balancer`,
      );
    }

    checkHealthSettings(upstream, name, problems);

    let ca: string | undefined;
    const caFile = upstream.tls?.caFile ?? '';
    if (caFile !== '') {
      ca = caFiles.get(caFile) ?? readCaFile(caFile, name, problems);
      if (ca !== undefined) caFiles.set(caFile, ca);
    }

    const targets: ResolvedTarget[] = [];
    upstream.targets.forEach((target, index) => {
      const where = `upstream ${name} targets[${index}] url ${JSON.stringify(shortened(target.url))}`;
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
      const connect = connectOptions(parsed, upstream, ca);
      const poolKey = parsed.secure
        ? `${parsed.origin}\n${caFile}\n${connect.servername ?? ''}\n${connect.rejectUnauthorized}`
        : parsed.origin;
      targets.push({
        ...parsed,
        url: target.url,
        weight: target.weight,
        connect,
        serverName: upstream.tls?.serverName ?? '',
        poolKey,
      });
    });
    resolved.push({ upstream, targets });
  }

  if (problems.length > 0) {
    throw new LoomError(
      'LOOM_SNAPSHOT_REJECTED',
      `snapshot rejected, invalid upstreams:\n${problems.map((p) => `  - ${p}`).join('\n')}`,
    );
  }
  return resolved;
}

/**
 * Adds the health-check and passive-health values outside the ranges `loomctl apply` accepts to
 * `problems`. A value written straight into the store can hold any number, and an interval of 0
 * would send health checks in a busy loop.
 */
function checkHealthSettings(upstream: Upstream, name: string, problems: string[]): void {
  const check = (field: string, value: number, min: number, max: number) => {
    if (Number.isInteger(value) && value >= min && value <= max) return;
    problems.push(`upstream ${name} ${field}: invalid value ${value}; expected ${min} to ${max}`);
  };
  const { healthCheck, passiveHealth } = upstream;
  if (healthCheck !== undefined) {
    check('healthCheck.intervalMs', healthCheck.intervalMs, 1, MAX_DURATION_MS);
    check('healthCheck.timeoutMs', healthCheck.timeoutMs, 1, MAX_DURATION_MS);
    check('healthCheck.healthyThreshold', healthCheck.healthyThreshold, 1, MAX_HEALTH_THRESHOLD);
    check(
      'healthCheck.unhealthyThreshold',
      healthCheck.unhealthyThreshold,
      1,
      MAX_HEALTH_THRESHOLD,
    );
  }
  if (passiveHealth !== undefined) {
    check(
      'passiveHealth.consecutiveFailures',
      passiveHealth.consecutiveFailures,
      1,
      MAX_CONSECUTIVE_FAILURES,
    );
    check('passiveHealth.baseEjectionMs', passiveHealth.baseEjectionMs, 1, MAX_DURATION_MS);
    check('passiveHealth.maxEjectionMs', passiveHealth.maxEjectionMs, 1, MAX_DURATION_MS);
  }
}

function connectOptions(
  parsed: ParsedTargetUrl,
  upstream: Upstream,
  ca: string | undefined,
): TargetConnectOptions {
  const url = new URL(parsed.origin);
  const serverName = upstream.tls?.serverName ?? '';
  return {
    hostname: parsed.hostname,
    port: url.port === '' ? (parsed.secure ? 443 : 80) : Number(url.port),
    secure: parsed.secure,
    ca,
    servername:
      serverName !== '' ? serverName : isIP(parsed.hostname) === 0 ? parsed.hostname : undefined,
    rejectUnauthorized: upstream.tls?.insecureSkipVerify !== true,
  };
}

function readCaFile(file: string, upstream: string, problems: string[]): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    problems.push(
      `upstream ${upstream} tls.caFile ${JSON.stringify(file)}: cannot read (${code}); the file ` +
        'must be readable by every proxy process on its own host: mount it there and restart ' +
        'the proxy, which then gets this version again, or fix the path and apply it',
    );
    return undefined;
  }
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
      `invalid ${name} ${value}: expected an integer of at least ${minimum}`,
    );
  }
  return value;
}
