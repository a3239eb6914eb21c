import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { classifyUpstreamError, PROXY_ERRORS } from '../../data-plane/proxy/error-response.js';
import { upstreamFailureOf } from '../../data-plane/proxy/observer.js';

/** Returns an error with `code`, shaped as Node.js and undici raise them. */
function errorWithCode(code: string, message = `failed with ${code}`): Error {
  return Object.assign(new Error(message), { code });
}

describe('upstream error classes', () => {
  it('names a host name that does not resolve', () => {
    for (const code of ['ENOTFOUND', 'EAI_AGAIN']) {
      const error = classifyUpstreamError(errorWithCode(code));
      assert.equal(error.status, 502, code);
      assert.equal(error.error, 'upstream_unreachable', code);
      assert.match(error.message, /host name could not be resolved/, code);
      assert.doesNotMatch(error.message, /refused|reset/, code);
      assert.equal(upstreamFailureOf(error), 'unreachable', code);
    }
  });

  it('maps refused and reset connections', () => {
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH']) {
      const error = classifyUpstreamError(errorWithCode(code));
      assert.equal(error, PROXY_ERRORS.upstreamUnreachable, code);
      assert.equal(upstreamFailureOf(error), 'unreachable', code);
    }
  });

  it('classifies timeouts and unknown errors', () => {
    assert.equal(
      classifyUpstreamError(errorWithCode('UND_ERR_CONNECT_TIMEOUT')),
      PROXY_ERRORS.upstreamTimeout,
    );
    assert.equal(classifyUpstreamError(new Error('no code')), PROXY_ERRORS.upstreamFailed);
  });
});
