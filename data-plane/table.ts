import type { Route } from '../proto/gen/loom/v1/config.js';
import type { RouteActions } from './proxy/route-actions.js';
import type { Router } from './router/types.js';
import type { Balancer } from './upstreams/balancer.js';

/** What a matched route resolves to: the route, its compiled actions and its upstream's balancer. */
export interface RouteBinding {
  route: Route;
  actions: RouteActions;
  /** Undefined when the route names an upstream the snapshot lacks; the proxy answers 502. */
  balancer: Balancer | undefined;
}

/**
 * A complete, immutable routing table built from one snapshot. The proxy
 * swaps one reference to it; a request keeps the table it started with.
 */
export interface RoutingTable {
  epoch: string;
  version: number;
  hash: string;
  router: Router<RouteBinding>;
}
