import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { sameItems } from '../build-table.js';
import { hasSameRouteNames } from '../snapshot-client/snapshot-decoder.js';
import type { ProxyMetrics, TargetRef } from './proxy-metrics.js';

/**
 * Drops the metrics of routes and targets that left the configuration, after each snapshot a
 * proxy or worker starts serving. The pass is skipped when the route names and the upstream
 * objects are those of the previous snapshot, because `ProxyMetrics.retain` builds a set of
 * every route name, synchronously, in the middle of the swap. The snapshot decoder usually
 * records that the names stayed the same, which spares a pass over every route.
 */
export class MetricsRetention {
  readonly #metrics: ProxyMetrics;
  #applied: Pick<Snapshot, 'routes' | 'upstreams'> = { routes: [], upstreams: [] };

  constructor(metrics: ProxyMetrics) {
    this.#metrics = metrics;
  }

  /** Keeps the series of the routes and targets of `snapshot`, the one now serving. */
  retain(snapshot: Snapshot): void {
    const previous = this.#applied;
    this.#applied = { routes: snapshot.routes, upstreams: snapshot.upstreams };
    const sameRouteNames =
      hasSameRouteNames(snapshot, previous.routes) || sameNames(previous.routes, snapshot.routes);
    if (sameRouteNames && sameItems(previous.upstreams, snapshot.upstreams)) {
      return;
    }

    // NOTE: a change of route names still costs a pass over every route with a set of names.
    this.#metrics.retain(
      snapshot.routes.map((route) => route.name),
      targetRefs(snapshot),
    );
  }
}

/**
 * Returns whether two route lists hold the same names in the same order. The snapshot decoder
 * keeps the objects of unchanged routes, so most items compare by identity and only changed
 * routes need their names read.
 */
function sameNames(a: readonly { name: string }[], b: readonly { name: string }[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i] && a[i].name !== b[i].name) return false;
  }
  return true;
}

/** Lists the upstream, origin and URL of every target; a URL that does not parse is skipped. */
function targetRefs(snapshot: Snapshot): TargetRef[] {
  const refs: TargetRef[] = [];
  for (const upstream of snapshot.upstreams) {
    for (const target of upstream.targets) {
      if (URL.canParse(target.url)) {
        refs.push({ upstream: upstream.name, origin: new URL(target.url).origin, url: target.url });
      }
    }
  }
  return refs;
}
