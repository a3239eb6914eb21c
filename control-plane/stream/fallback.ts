import type { PublishedSnapshot } from '../snapshot/build-snapshot.js';

/** Version a proxy serves, was sent or nacked, within its epoch. */
export interface VersionMark {
  epoch: string;
  version: number;
}

/** Versions one stream has recorded for its proxy. */
export interface ProxyMarks {
  /** Version the proxy serves: the one in its hello, then its newest ack. */
  serving: VersionMark;
  sent: VersionMark | undefined;
  nacked: VersionMark | undefined;
}

/**
 * Returns the accepted snapshot when a proxy that nacked a version should get
 * it instead, or undefined. The proxy gets it when it nacked a newer version
 * of the accepted snapshot's epoch, or a version of another epoch. It does not
 * get it when it serves that version or a newer one of the same epoch, or
 * when this stream already sent it, or sent a newer version that is not acked or nacked yet.
 * The nacked version is never returned.
 */
export function chooseFallback(
  marks: ProxyMarks,
  accepted: PublishedSnapshot | undefined,
): PublishedSnapshot | undefined {
  const { serving, sent, nacked } = marks;
  if (nacked === undefined || accepted === undefined) return undefined;

  // A version sent after the nack is still in flight, so its ack or nack decides. Falling back now
  // would make the next offer send the newer version again, and so on, back and forth.
  if (sent !== undefined && (sent.epoch !== nacked.epoch || sent.version !== nacked.version)) {
    return undefined;
  }
  const { epoch, version } = accepted.snapshot;
  // Not older than the nacked version: the normal send decides, and it never repeats a nack.
  if (nacked.epoch === epoch && nacked.version <= version) return undefined;
  if (serving.epoch === epoch && serving.version >= version) return undefined;
  if (sent !== undefined && sent.epoch === epoch && sent.version === version) return undefined;
  return accepted;
}
