import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { describe, it } from 'node:test';

import { errors } from 'undici';

import {
  classifyUpstreamError,
  PROXY_ERRORS,
  UPSTREAM_INVALID_HTTP_CODE,
  upstreamErrorLogFields,
} from '../../data-plane/proxy/error-response.js';
import { upstreamFailureOf } from '../../data-plane/proxy/observer.js';
import {
  registerOwnListener,
  REQUEST_LOOP_CODE,
  requestLoopError,
} from '../../data-plane/upstreams/own-connections.js';

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

  it('maps parser failures without a stack', () => {
    // undici 7.30.3 leaves `code` undefined on the errors its parser raises.
    const undiciFailure = new errors.HTTPParserError('Expected HTTP/');
    const undiciWithCode = Object.assign(new errors.HTTPParserError('Expected HTTP/'), {
      code: 'HPE_INVALID_CONSTANT',
    });
    const nodeFailure = errorWithCode('HPE_INVALID_CONSTANT', 'Parse Error: Expected HTTP/');
    for (const failure of [undiciFailure, undiciWithCode, nodeFailure]) {
      const error = classifyUpstreamError(failure);
      assert.equal(error, PROXY_ERRORS.upstreamUnparsableResponse, failure.message);
      assert.equal(error.status, 502);
      assert.equal(upstreamFailureOf(error), 'error');
      const fields = upstreamErrorLogFields(failure);
      assert.equal(fields.code, UPSTREAM_INVALID_HTTP_CODE);
      assert.equal(fields.err, undefined, 'a stack trace for a parser failure');
      assert.equal(fields.error, failure.message);
    }
    assert.equal(upstreamErrorLogFields(undiciFailure).parserCode, undefined);
    assert.equal(upstreamErrorLogFields(undiciWithCode).parserCode, 'HPE_INVALID_CONSTANT');
    assert.equal(upstreamErrorLogFields(nodeFailure).parserCode, 'HPE_INVALID_CONSTANT');
  });

  it('maps an oversized response head', () => {
    const error = classifyUpstreamError(errorWithCode('HPE_HEADER_OVERFLOW'));
    assert.equal(error, PROXY_ERRORS.upstreamHeadersTooLarge);
  });

  it('logs an error without a code with its stack', () => {
    const failure = new Error('no code');
    const fields = upstreamErrorLogFields(failure);
    assert.equal(fields.code, undefined);
    assert.equal(fields.err, failure);
  });
});

/** Returns a server stub bound to `address` and `port` that has emitted 'listening'. */
function listeningStub(address: string, port: number): Server {
  const server = Object.assign(new EventEmitter(), {
    address: () => ({ address, port, family: address.includes(':') ? 'IPv6' : 'IPv4' }),
  }) as unknown as Server;
  registerOwnListener(server);
  server.emit('listening');
  return server;
}

/** Returns the connection facts of an upstream socket, as `requestLoopError` reads them. */
function upstreamSocket(remoteAddress: string, remotePort: number, localAddress: string): Socket {
  return { remoteAddress, remotePort, localAddress } as Socket;
}

describe('request loop check', () => {
  it('matches a wildcard listener from loopback and own addresses', () => {
    const server = listeningStub('0.0.0.0', 65_001);
    try {
      const own = [
        upstreamSocket('127.0.0.1', 65_001, '127.0.0.1'),
        upstreamSocket('::1', 65_001, '::1'),
        upstreamSocket('::ffff:10.1.2.3', 65_001, '::ffff:10.1.2.3'),
      ];
      for (const socket of own) {
        const error = requestLoopError(socket, 'http://self:65001');
        assert.equal((error as { code?: string } | undefined)?.code, REQUEST_LOOP_CODE);
        assert.match(String(error?.message), /http:\/\/self:65001 is this proxy's own listener/);
      }
      const otherHost = upstreamSocket('10.1.2.4', 65_001, '10.1.2.3');
      assert.equal(requestLoopError(otherHost, 'http://other:65001'), undefined);
      const otherPort = upstreamSocket('127.0.0.1', 65_002, '127.0.0.1');
      assert.equal(requestLoopError(otherPort, 'http://other:65002'), undefined);
    } finally {
      server.emit('close');
    }
    const afterClose = upstreamSocket('127.0.0.1', 65_001, '127.0.0.1');
    assert.equal(requestLoopError(afterClose, 'http://self:65001'), undefined);
  });

  it('matches a bound address only', () => {
    // Port 65003 is only a key here: nothing listens, so the stub is never closed.
    listeningStub('127.0.0.2', 65_003);
    const own = upstreamSocket('127.0.0.2', 65_003, '127.0.0.1');
    assert.notEqual(requestLoopError(own, 'http://127.0.0.2:65003'), undefined);
    const otherAddress = upstreamSocket('127.0.0.1', 65_003, '127.0.0.1');
    assert.equal(requestLoopError(otherAddress, 'http://127.0.0.1:65003'), undefined);
  });

  it('maps the loop error to 508', () => {
    const error = classifyUpstreamError(
      Object.assign(new Error('loop'), { code: REQUEST_LOOP_CODE }),
    );
    assert.equal(error, PROXY_ERRORS.loopDetected);
    assert.equal(error.status, 508);
  });
});
