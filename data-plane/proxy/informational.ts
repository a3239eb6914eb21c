import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isHopByHop, splitConnectionTokens, toText } from './headers.js';

/**
 * 1xx responses forwarded per request; later ones are dropped. A 102, 103 or 104 is advisory,
 * and none waits for the client, so an upstream that sends them without end would fill memory.
 */
export const MAX_INFORMATIONAL_RESPONSES = 8;

/**
 * Forwards a 1xx response ahead of the final response, as RFC 9110 section 15.2 requires of a
 * proxy. A 103 goes through `writeEarlyHints`, which checks its Link values. Any other code
 * (102, 104, unregistered ones) is written as it came, less hop-by-hop fields and with the
 * standard reason phrase. A 100 or 101 is skipped, because the proxy relays those itself where
 * it requested them, and Node.js emits 'information' for a 100 too.
 *
 * Nothing is sent to an HTTP/1.0 client, which RFC 9110 section 15.2 forbids, nor once the
 * final response started, nor to a client that has not taken what was sent before.
 */
// NOTE: a response queued behind earlier pipelined responses has no socket yet, and only its
// 102 and 103 are kept, because Node.js has no public API to queue other 1xx codes.
export function forwardInformational(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  raw: readonly (Buffer | string)[],
): void {
  if (status < 102 || req.httpVersionMajor !== 1 || req.httpVersionMinor === 0) {
    return;
  }
  if (res.headersSent || res.destroyed || res.socket?.writableNeedDrain === true) {
    return;
  }
  if (status === 103) {
    writeEarlyHints(res, raw);
    return;
  }

  const socket = res.socket;
  if (socket === null) {
    if (status === 102) res.writeProcessing();
    return;
  }
  const head = informationalHead(status, raw);
  if (head !== undefined && socket.writable) socket.write(head, 'latin1');
}

/**
 * Returns the text of a 1xx response head with the fields of `raw` that are not hop-by-hop, or
 * undefined when a field name or value is invalid, in which case the response is dropped.
 */
export function informationalHead(
  status: number,
  raw: readonly (Buffer | string)[],
): string | undefined {
  let connectionTokens: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if (toText(raw[i]).toLowerCase() === 'connection') {
      connectionTokens = splitConnectionTokens(toText(raw[i + 1]), connectionTokens);
    }
  }

  let text = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Informational'}\r\n`;
  for (let i = 0; i < raw.length; i += 2) {
    const name = toText(raw[i]);
    const lower = name.toLowerCase();
    if (isHopByHop(lower) || connectionTokens?.includes(lower)) continue;
    const value = toText(raw[i + 1]);
    try {
      validateHeaderName(name);
      validateHeaderValue(name, value);
    } catch {
      return undefined;
    }
    text += `${name}: ${value}\r\n`;
  }
  return `${text}\r\n`;
}

function writeEarlyHints(res: ServerResponse, raw: readonly (Buffer | string)[]): void {
  const hints: Record<string, string | string[]> = {};
  for (let i = 0; i < raw.length; i += 2) {
    const name = toText(raw[i]).toLowerCase();
    const value = toText(raw[i + 1]);
    const previous = hints[name];
    hints[name] =
      previous === undefined
        ? value
        : [...(Array.isArray(previous) ? previous : [previous]), value];
  }
  try {
    res.writeEarlyHints(hints);
  } catch {
    // An invalid Link value makes Node.js throw; the hints are advisory, so they are dropped.
  }
}
