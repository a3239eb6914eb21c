import { BinaryReader, type WireType } from '@bufbuild/protobuf/wire';

import { LoomError } from '../../common/errors.js';
import { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import type { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { ListDecoder, type DecodedList } from './list-decoder.js';
import type { ReuseRuns } from './reuse-runs.js';

/** Tags (field number and wire type) of the messages this decoder reads. */
const RESPONSE_SNAPSHOT = (1 << 3) | 2;
const SNAPSHOT_VERSION = (1 << 3) | 0;
const SNAPSHOT_EPOCH = (2 << 3) | 2;
const SNAPSHOT_HASH = (3 << 3) | 2;
const SNAPSHOT_ROUTE = (4 << 3) | 2;
const SNAPSHOT_UPSTREAM = (5 << 3) | 2;
const WIRE_TYPE_END_GROUP = 4;

/**
 * Entries that a decode handles between two pauses, where `decodeSliced` reads the clock. A new
 * route took about 2 µs to decode on a 2-core Xeon, so 64 of them stay well below a millisecond.
 */
const ENTRY_STRIDE = 64;

/** A buffer for the copy of one message at a time, with the count of messages copied in. */
interface Storage {
  buffer: Buffer;
  generation: number;
}

/** The previous message and its decoded routes and upstreams. */
interface PreviousSnapshot {
  /** The storage that `bytes` lies in, reused for the message after the next one. */
  storage: Storage;
  bytes: Buffer;
  routes: DecodedList<Route>;
  upstreams: DecodedList<Upstream>;
}

/** Location of the encoded bytes of each decoded snapshot, by snapshot. */
const encodedSnapshots = new WeakMap<
  Snapshot,
  { storage: Storage; generation: number; bytes: Buffer }
>();

/**
 * Routes of the snapshot that each snapshot was decoded after, whether the names stayed, and
 * which routes were reused from it.
 */
const routeNameChecks = new WeakMap<
  Snapshot,
  { previousRoutes: readonly Route[]; sameNames: boolean; reused: ReuseRuns }
>();

/**
 * Returns true when a `SnapshotDecoder` decoded `snapshot` right after the snapshot whose routes
 * are `previousRoutes`, and found that the route names are the same, in the same order. The
 * decoder derives that from where it reused previous entries, without a pass over every route.
 * False means the names differ or the decoder could not tell.
 */
export function hasSameRouteNames(snapshot: Snapshot, previousRoutes: readonly Route[]): boolean {
  const check = routeNameChecks.get(snapshot);
  return check !== undefined && check.previousRoutes === previousRoutes && check.sameNames;
}

/**
 * Returns the runs of routes that a `SnapshotDecoder` reused for `snapshot` from
 * `previousRoutes`, the routes of the snapshot it decoded right before, or undefined when no
 * decoder did. Every route outside the runs is a new object.
 */
export function reusedRoutesOf(
  snapshot: Snapshot,
  previousRoutes: readonly Route[],
): ReuseRuns | undefined {
  const check = routeNameChecks.get(snapshot);
  return check !== undefined && check.previousRoutes === previousRoutes ? check.reused : undefined;
}

/**
 * Returns the bytes of the Snapshot message that a `SnapshotDecoder` decoded `snapshot` from, or
 * undefined when no decoder did or a later message has overwritten them. The decoder's next
 * `decode` call may overwrite them, so a caller that yields to the event loop copies them first.
 * Encoding `snapshot` again gives the same content, but costs milliseconds at 10,000 routes.
 */
export function encodedSnapshotOf(snapshot: Snapshot): Uint8Array | undefined {
  const entry = encodedSnapshots.get(snapshot);
  if (entry === undefined || entry.storage.generation !== entry.generation) return undefined;
  return entry.bytes;
}

/**
 * Decodes StreamResponse messages like the generated `StreamResponse.decode`, but returns the
 * previous message's Route and Upstream objects for entries whose encoded bytes are unchanged.
 * A one-route change then decodes one route instead of all of them. Because equal objects mean
 * equal bytes, the table build can tell unchanged routes by identity (see `buildTable`).
 * Unchanged entries that follow each other are compared as one byte range, so a one-route
 * change costs a few comparisons of long ranges instead of one comparison per route.
 *
 * Decoded objects are shared between snapshots, so nothing may modify them.
 */
export class SnapshotDecoder {
  #previous: PreviousSnapshot | undefined;
  /** Whether a `decodeSliced` call is running. */
  #slicing = false;
  /**
   * The lists decoded before `#previous`'s, whose offset arrays the next decode reuses, because
   * nothing reads them any more.
   */
  #spareLists: Pick<PreviousSnapshot, 'routes' | 'upstreams'> | undefined;
  /** Storage for the next message's copy; `#previous` never refers to it. */
  #spare: Storage | undefined;

  /** Decodes one message. Throws on malformed input, as the generated decoder does. */
  decode(input: Uint8Array): StreamResponse {
    const steps = this.#start(input);
    let step = steps.next();
    while (step.done !== true) step = steps.next();
    return step.value;
  }

  /**
   * Decodes one message like `decode`, but yields to the event loop whenever it has run for
   * `sliceMs`, so a proxy keeps serving while it decodes a large table. The caller awaits each
   * decode before it starts the next one on this decoder.
   *
   * @throws LoomError `LOOM_INTERNAL` when another decode of this decoder is still running.
   */
  async decodeSliced(input: Uint8Array, sliceMs: number): Promise<StreamResponse> {
    const steps = this.#start(input);
    this.#slicing = true;
    try {
      let deadline = performance.now() + sliceMs;
      for (let step = steps.next(); ; step = steps.next()) {
        if (step.done === true) return step.value;
        if (performance.now() >= deadline) {
          await new Promise<void>((resolve) => setImmediate(resolve));
          deadline = performance.now() + sliceMs;
        }
      }
    } finally {
      this.#slicing = false;
    }
  }

  /** Checks that no sliced decode is running and returns the steps of decoding `input`. */
  #start(input: Uint8Array): Generator<void, StreamResponse> {
    if (this.#slicing) {
      throw new LoomError(
        'LOOM_INTERNAL',
        'a snapshot decode started while another decode is running',
      );
    }
    return this.#decodeSteps(input);
  }

  /**
   * Decodes one message in steps: the generator pauses after every `ENTRY_STRIDE` entries, and
   * returns the message once it is complete. The decoder's state changes only at the end, so
   * steps that are never finished leave the previous message in place.
   */
  *#decodeSteps(input: Uint8Array): Generator<void, StreamResponse> {
    // A copy into one of two long-lived buffers, because the next message is compared with these
    // bytes. Keeping `input` instead made each 5 MB message outlive a young-generation collection
    // (see docs/benchmarks.md). Decoded objects keep no reference to the bytes.
    const storage = this.#storageFor(input.length);
    storage.generation++;
    storage.buffer.set(input);
    const bytes = storage.buffer.subarray(0, input.length);
    const reader = new BinaryReader(bytes);
    let snapshot: Snapshot | undefined;
    while (reader.pos < reader.len) {
      const tag = reader.uint32();
      if (tag === RESPONSE_SNAPSHOT) {
        snapshot = yield* this.#decodeSnapshot(reader, storage, bytes, reader.uint32());
        continue;
      }
      if ((tag & 7) === WIRE_TYPE_END_GROUP || tag === 0) break;
      reader.skip((tag & 7) as WireType, tag >>> 3);
    }
    return { snapshot };
  }

  /**
   * Returns storage of at least `length` bytes that the previous message does not use. Two
   * buffers take turns, so a change costs a copy into memory already in use instead of a new
   * allocation that the kernel maps page by page.
   */
  #storageFor(length: number): Storage {
    const spare = this.#spare;
    const size = spare?.buffer.length ?? 0;
    if (spare !== undefined && size >= length && size <= 2 * length + 1024) return spare;

    // Room for some growth, so that adding a route does not allocate again.
    this.#spare = { buffer: Buffer.allocUnsafe(length + (length >>> 3)), generation: 0 };
    return this.#spare;
  }

  *#decodeSnapshot(
    reader: BinaryReader,
    storage: Storage,
    bytes: Buffer,
    length: number,
  ): Generator<void, Snapshot> {
    const start = reader.pos;
    const end = start + length;
    const previous = this.#previous;
    // A length past the buffer is malformed input; the reads below throw on it.
    const limit = Math.min(end, bytes.length);
    const routes = new ListDecoder(
      reader,
      bytes,
      limit,
      Route.decode,
      previous?.bytes,
      previous?.routes,
      this.#spareLists?.routes,
    );
    const upstreams = new ListDecoder(
      reader,
      bytes,
      limit,
      Upstream.decode,
      previous?.bytes,
      previous?.upstreams,
      this.#spareLists?.upstreams,
    );
    const snapshot: Snapshot = { version: 0, epoch: '', hash: '', routes: [], upstreams: [] };

    let entries = 0;
    while (reader.pos < end) {
      if (++entries === ENTRY_STRIDE) {
        entries = 0;
        yield;
      }
      const tagStart = reader.pos;
      const tag = reader.uint32();
      if (tag === SNAPSHOT_VERSION) snapshot.version = safeNumber(reader.uint64());
      else if (tag === SNAPSHOT_EPOCH) snapshot.epoch = reader.string();
      else if (tag === SNAPSHOT_HASH) snapshot.hash = reader.string();
      else if (tag === SNAPSHOT_ROUTE) routes.next(tagStart, reader.uint32());
      else if (tag === SNAPSHOT_UPSTREAM) upstreams.next(tagStart, reader.uint32());
      else if ((tag & 7) === WIRE_TYPE_END_GROUP || tag === 0) break;
      else reader.skip((tag & 7) as WireType, tag >>> 3);
    }

    const decodedRoutes = routes.finish();
    const decodedUpstreams = upstreams.finish();
    snapshot.routes = decodedRoutes.items;
    snapshot.upstreams = decodedUpstreams.items;
    this.#spare = previous?.storage;
    this.#spareLists = previous;
    this.#previous = { storage, bytes, routes: decodedRoutes, upstreams: decodedUpstreams };
    encodedSnapshots.set(snapshot, {
      storage,
      generation: storage.generation,
      bytes: bytes.subarray(start, end),
    });
    if (previous !== undefined) {
      routeNameChecks.set(snapshot, {
        previousRoutes: previous.routes.items,
        sameNames: decodedRoutes.sameNames,
        reused: decodedRoutes.reused,
      });
    }
    return snapshot;
  }
}

/** Converts a uint64 field to a number, rejecting values above `Number.MAX_SAFE_INTEGER`. */
function safeNumber(value: bigint | string): number {
  const number = Number(value.toString());
  if (!Number.isSafeInteger(number)) {
    throw new Error(`snapshot version ${value.toString()} is larger than Number.MAX_SAFE_INTEGER`);
  }
  return number;
}
