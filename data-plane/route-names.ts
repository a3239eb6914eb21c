import { LoomError } from '../common/errors.js';
import type { Route } from '../proto/gen/loom/v1/config.js';
import { shortened } from '../config/validate.js';

/**
 * Layers that `RouteNames.update` stacks before it builds a flat set again. A lookup reads
 * every layer, and a flat set costs a pass over every route.
 */
const MAX_LAYERS = 16;

/**
 * The route names of one table, which a build checks the next snapshot's new routes against.
 * An update that changes a few routes adds a layer of removed and added names over the
 * previous table's names instead of copying them, so it costs no pass over every route.
 */
export class RouteNames {
  readonly #base: RouteNames | undefined;
  readonly #removed: ReadonlySet<string>;
  readonly #added: ReadonlySet<string>;
  readonly #layers: number;

  private constructor(
    base: RouteNames | undefined,
    removed: ReadonlySet<string>,
    added: ReadonlySet<string>,
  ) {
    this.#base = base;
    this.#removed = removed;
    this.#added = added;
    this.#layers = base === undefined ? 1 : base.#layers + 1;
  }

  /**
   * Returns the names of `routes`.
   *
   * @throws LoomError `LOOM_SNAPSHOT_REJECTED` when two routes have the same name, naming the
   *   lowest such name, so that a full build and `update` name the same one.
   */
  static of(routes: readonly Route[]): RouteNames {
    const names = new Set<string>();
    let duplicate: string | undefined;
    for (const route of routes) {
      const { name } = route;
      if (names.has(name)) duplicate = lower(duplicate, name);
      names.add(name);
    }
    if (duplicate !== undefined) rejectDuplicate(duplicate);
    return new RouteNames(undefined, new Set(), names);
  }

  /**
   * Returns the names of the next table, whose routes are `routes`: this table's routes
   * without `removed` and with `added`. Only the names of `removed` and `added` are read,
   * unless the layers reach `MAX_LAYERS`.
   *
   * @throws LoomError `LOOM_SNAPSHOT_REJECTED` when two routes of `routes` have the same name,
   *   naming the lowest such name as `of` does. This table's names are unique, so every
   *   duplicate of `routes` has an instance in `added`.
   */
  update(
    routes: readonly Route[],
    removed: readonly { route: Route }[],
    added: readonly { route: Route }[],
  ): RouteNames {
    if (this.#layers >= MAX_LAYERS || removed.length + added.length > routes.length / 10) {
      return RouteNames.of(routes);
    }
    const removedNames = new Set<string>();
    for (const { route } of removed) removedNames.add(route.name);
    const addedNames = new Set<string>();
    let duplicate: string | undefined;
    for (const { route } of added) {
      const { name } = route;
      // This table's names are unique, so a name that was removed is used by no kept route.
      if (addedNames.has(name) || (this.has(name) && !removedNames.has(name))) {
        duplicate = lower(duplicate, name);
      }
      addedNames.add(name);
    }
    if (duplicate !== undefined) rejectDuplicate(duplicate);
    return new RouteNames(this, removedNames, addedNames);
  }

  /** Returns whether a route of the table has the name `name`. */
  has(name: string): boolean {
    if (this.#added.has(name)) return true;
    if (this.#base === undefined || this.#removed.has(name)) return false;
    return this.#base.has(name);
  }
}

/** Returns the lower of `current` and `name` in code unit order; `name` when `current` is undefined. */
function lower(current: string | undefined, name: string): string {
  return current === undefined || name < current ? name : current;
}

function rejectDuplicate(name: string): never {
  throw new LoomError(
    'LOOM_SNAPSHOT_REJECTED',
    `route ${JSON.stringify(shortened(name))}: duplicate route name, as loomctl apply rejects; ` +
      'every route needs a unique name',
  );
}
