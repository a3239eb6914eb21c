import { BinaryReader, type WireType } from '@bufbuild/protobuf/wire';

import { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import type { StreamResponse } from '../../proto/gen/loom/v1/data_plane.js';
import type { Snapshot } from '../../proto/gen/loom/v1/snapshot.js';
import { OrderedMatcher } from './ordered-matcher.js';

/** Tags (field number and wire type) of the messages this decoder reads. */
const RESPONSE_SNAPSHOT = (1 << 3) | 2;
const SNAPSHOT_VERSION = (1 << 3) | 0;
const SNAPSHOT_EPOCH = (2 << 3) | 2;
const SNAPSHOT_HASH = (3 << 3) | 2;
const SNAPSHOT_ROUTE = (4 << 3) | 2;
const SNAPSHOT_UPSTREAM = (5 << 3) | 2;
const WIRE_TYPE_END_GROUP = 4;

/** Decoded items of one repeated field, with where each item's bytes lie in the message. */
interface DecodedList<T> {
  items: T[];
  starts: number[];
  ends: number[];
}

/** The previous message and its decoded routes and upstreams. */
interface PreviousSnapshot {
  bytes: Buffer;
  routes: DecodedList<Route>;
  upstreams: DecodedList<Upstream>;
}

/**
 * Decodes StreamResponse messages like the generated `StreamResponse.decode`, but returns the
 * previous message's Route and Upstream objects for entries whose encoded bytes are unchanged.
 * A one-route change then decodes one route instead of all of them. Because equal objects mean
 * equal bytes, the table build can tell unchanged routes by identity (see `buildTable`).
 *
 * Decoded objects are shared between snapshots, so nothing may modify them.
 */
export class SnapshotDecoder {
  #previous: PreviousSnapshot | undefined;

  /** Decodes one message. Throws on malformed input, as the generated decoder does. */
  decode(input: Uint8Array): StreamResponse {
    // A copy, because grpc-js owns `input` and the next message is compared with these bytes.
    const bytes = Buffer.from(input);
    const reader = new BinaryReader(bytes);
    let snapshot: Snapshot | undefined;
    while (reader.pos < reader.len) {
      const tag = reader.uint32();
      if (tag === RESPONSE_SNAPSHOT) {
        snapshot = this.#decodeSnapshot(reader, bytes, reader.uint32());
        continue;
      }
      if ((tag & 7) === WIRE_TYPE_END_GROUP || tag === 0) break;
      reader.skip((tag & 7) as WireType, tag >>> 3);
    }
    return { snapshot };
  }

  #decodeSnapshot(reader: BinaryReader, bytes: Buffer, length: number): Snapshot {
    const end = reader.pos + length;
    const previous = this.#previous;
    const routes = new ListDecoder(reader, bytes, Route.decode, previous?.bytes, previous?.routes);
    const upstreams = new ListDecoder(
      reader,
      bytes,
      Upstream.decode,
      previous?.bytes,
      previous?.upstreams,
    );
    const snapshot: Snapshot = { version: 0, epoch: '', hash: '', routes: [], upstreams: [] };

    while (reader.pos < end) {
      const tag = reader.uint32();
      if (tag === SNAPSHOT_VERSION) snapshot.version = safeNumber(reader.uint64());
      else if (tag === SNAPSHOT_EPOCH) snapshot.epoch = reader.string();
      else if (tag === SNAPSHOT_HASH) snapshot.hash = reader.string();
      else if (tag === SNAPSHOT_ROUTE) routes.next(reader.uint32());
      else if (tag === SNAPSHOT_UPSTREAM) upstreams.next(reader.uint32());
      else if ((tag & 7) === WIRE_TYPE_END_GROUP || tag === 0) break;
      else reader.skip((tag & 7) as WireType, tag >>> 3);
    }

    snapshot.routes = routes.decoded.items;
    snapshot.upstreams = upstreams.decoded.items;
    this.#previous = { bytes, routes: routes.decoded, upstreams: upstreams.decoded };
    return snapshot;
  }
}

/** Decodes the entries of one repeated message field, reusing unchanged previous entries. */
class ListDecoder<T extends { name: string }> {
  readonly decoded: DecodedList<T> = { items: [], starts: [], ends: [] };
  readonly #reader: BinaryReader;
  readonly #bytes: Buffer;
  readonly #decodeItem: (reader: BinaryReader, length: number) => T;
  readonly #previousBytes: Buffer | undefined;
  readonly #previous: DecodedList<T> | undefined;
  readonly #matcher: OrderedMatcher;
  #start = 0;
  #end = 0;
  readonly #isEqual = (index: number): boolean => {
    const previous = this.#previous!;
    const start = previous.starts[index];
    const end = previous.ends[index];
    return (
      end - start === this.#end - this.#start &&
      this.#previousBytes!.compare(this.#bytes, this.#start, this.#end, start, end) === 0
    );
  };

  constructor(
    reader: BinaryReader,
    bytes: Buffer,
    decodeItem: (reader: BinaryReader, length: number) => T,
    previousBytes: Buffer | undefined,
    previous: DecodedList<T> | undefined,
  ) {
    this.#reader = reader;
    this.#bytes = bytes;
    this.#decodeItem = decodeItem;
    this.#previousBytes = previousBytes;
    this.#previous = previous;
    const items = previous?.items ?? [];
    this.#matcher = new OrderedMatcher(items.length, (index) => items[index].name);
  }

  /** Decodes the entry of `length` bytes at the reader's position, or reuses an equal one. */
  next(length: number): void {
    this.#start = this.#reader.pos;
    this.#end = this.#start + length;
    const index = this.#previous === undefined ? -1 : this.#matcher.match(this.#isEqual);
    let item: T;
    if (index >= 0) {
      item = this.#previous!.items[index];
      this.#reader.pos = this.#end;
    } else {
      item = this.#decodeItem(this.#reader, length);
      this.#matcher.resync(item.name);
    }
    this.decoded.items.push(item);
    this.decoded.starts.push(this.#start);
    this.decoded.ends.push(this.#end);
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
