/** Versions whose commit time is remembered; older ones are dropped first. */
export const COMMIT_TIMES_LIMIT = 1024;

/**
 * When this control plane saw each recent version committed, by epoch and
 * version. The admin API records its own commits as the store confirms them,
 * and the snapshot cache records every revision its watch delivers, so writes
 * made through another control plane have a time too. The earlier of the two
 * times wins. `apply --wait` measures convergence from this time.
 */
export class CommitTimes {
  readonly #times = new Map<string, number>();

  /** Records that `version` of `epoch` was committed at `atMs` unless an earlier time is known. */
  record(epoch: string, version: number, atMs = Date.now()): void {
    const key = `${epoch}/${version}`;
    const known = this.#times.get(key);
    if (known !== undefined && known <= atMs) return;

    this.#times.set(key, atMs);
    if (this.#times.size > COMMIT_TIMES_LIMIT) {
      const oldest = this.#times.keys().next().value as string;
      this.#times.delete(oldest);
    }
  }

  /** Returns when the version was committed, or 0 when unknown. */
  get(epoch: string, version: number): number {
    return this.#times.get(`${epoch}/${version}`) ?? 0;
  }
}
