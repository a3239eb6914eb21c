/**
 * Counts the routing tables that are still alive: built and not yet garbage-collected. The
 * table in service counts as one. An older table stays alive while a request that started on
 * it is in flight, and after that until the garbage collector reclaims it, so the count is an
 * upper bound on the tables that requests still reference. A count that keeps growing across
 * snapshots means something holds on to old tables: a leak.
 *
 * It uses a FinalizationRegistry instead of reference counts, so the request path does no
 * bookkeeping at all.
 */
export class TableTracker {
  #alive = 0;
  #built = 0;
  readonly #finalizer = new FinalizationRegistry<undefined>(() => {
    this.#alive--;
  });

  /** Starts counting `table` until it is garbage-collected. */
  track(table: object): void {
    this.#alive++;
    this.#built++;
    this.#finalizer.register(table, undefined);
  }

  /** Tables built and not yet garbage-collected, the one in service included. */
  get alive(): number {
    return this.#alive;
  }

  /** Tables built since the process started. */
  get built(): number {
    return this.#built;
  }
}
