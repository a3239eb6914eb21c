import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';

/** The one upstream of the propagation benchmark's configurations. */
export const benchUpstream: Upstream = {
  name: 'bench',
  targets: [{ url: 'http://127.0.0.1:9', weight: 1 }],
};

/** Makes the benchmark's routes; route `changed` gets a path that names the generation. */
export function makeRoutes(count: number, changed = -1, generation = 0): Route[] {
  return Array.from({ length: count }, (_, index) => ({
    name: `route-${index}`,
    hosts: [],
    paths: [index === changed ? `/r${index}/v${generation}/:id` : `/r${index}/:id`],
    methods: [],
    upstream: 'bench',
  }));
}
