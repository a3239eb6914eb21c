import { z } from 'zod';

import type { AcceptedVersion } from './store.js';

/** An accepted version as both stores keep it. */
export const AcceptedVersionSchema = z.object({
  epoch: z.string().min(1),
  version: z.number().int().positive(),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
});

/** Encodes an accepted version as JSON with its fields in a fixed order. */
export function encodeAcceptedVersion(accepted: AcceptedVersion): string {
  return JSON.stringify({
    epoch: accepted.epoch,
    version: accepted.version,
    hash: accepted.hash,
  });
}

/** Parses a stored accepted version; returns undefined when the text is not one. */
export function parseAcceptedVersion(text: string): AcceptedVersion | undefined {
  try {
    const parsed = AcceptedVersionSchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Returns true when `candidate` should replace `stored`: nothing is stored, the stored one
 * belongs to another epoch, or the candidate is a newer version of the same epoch. The
 * caller checks that the candidate's epoch is the store's current one.
 */
export function movesAcceptedForward(
  stored: AcceptedVersion | undefined,
  candidate: AcceptedVersion,
): boolean {
  return (
    stored === undefined || stored.epoch !== candidate.epoch || stored.version < candidate.version
  );
}
