import assert from 'node:assert/strict';
import { test } from 'node:test';

import { experimental, logVerbosity } from '@grpc/grpc-js';

import { installGrpcLogger } from '../../cli/grpc-logging.js';

test('grpc logger drops bind failure only', (t) => {
  const lines: string[] = [];
  t.mock.method(console, 'error', (...parts: unknown[]) => lines.push(parts.map(String).join(' ')));
  installGrpcLogger();

  experimental.log(logVerbosity.ERROR, 'No address added out of total 1 resolved');
  experimental.log(logVerbosity.ERROR, 'Received RST_STREAM with code 2');
  assert.deepEqual(lines, ['E Received RST_STREAM with code 2']);
});
