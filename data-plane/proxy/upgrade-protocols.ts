/**
 * Protocol names that the proxy removes from a client's Upgrade header. `h2c` switches the
 * connection to HTTP/2, and a tunnel of HTTP/2 lets the client send requests for any path and
 * method straight to the upstream, past the route that matched the handshake ("h2c
 * smuggling"). RFC 9113 section 3.1 deprecates this upgrade.
 */
const WITHHELD_PROTOCOLS: ReadonlySet<string> = new Set(['h2c']);

/**
 * Returns the protocols of an Upgrade header value (RFC 9110 section 7.8) that the proxy
 * forwards, in the client's order: each `name` or `name/version` member, trimmed, without empty
 * members and without the withheld protocols.
 */
export function forwardableUpgradeProtocols(value: string | undefined): string[] {
  return splitProtocols(value).filter(
    (protocol) => !WITHHELD_PROTOCOLS.has(protocolName(protocol)),
  );
}

/**
 * Returns why the proxy cannot relay a 101 response whose Upgrade header is `responseUpgrade`, or
 * undefined when it can. RFC 9110 section 7.8 requires a 101 to name the protocols it switches
 * to, each one that the request offered. Protocols compare without regard to case, so `WebSocket`
 * matches `websocket`.
 */
export function describeUnofferedProtocol(
  offered: readonly string[],
  responseUpgrade: string | undefined,
): string | undefined {
  const protocols = splitProtocols(responseUpgrade);
  if (protocols.length === 0) {
    return 'the upstream answered 101 Switching Protocols without an Upgrade header';
  }
  // A 101 may name an offered `name/version` by its name alone.
  const accepted = new Set(offered.map((protocol) => protocol.toLowerCase()));
  for (const protocol of offered) accepted.add(protocolName(protocol));
  const unoffered = protocols.find((protocol) => !accepted.has(protocol.toLowerCase()));
  if (unoffered === undefined) return undefined;
  const list = offered.length === 0 ? 'none' : offered.join(', ');
  return `the upstream switched to the protocol "${unoffered}", which the proxy did not offer (offered: ${list})`;
}

function splitProtocols(value: string | undefined): string[] {
  if (value === undefined) return [];
  return value
    .split(',')
    .map((member) => member.trim())
    .filter((member) => member !== '');
}

/** Returns the lower-case name of a `name/version` protocol. */
function protocolName(protocol: string): string {
  const slash = protocol.indexOf('/');
  return (slash === -1 ? protocol : protocol.slice(0, slash)).toLowerCase();
}
