import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { normalizeTargetUrl } from '../../config/normalize.js';
import { describeTargetUrlProblem } from '../../config/validate.js';
import { parseTargetUrl } from '../../data-plane/upstreams/target-url.js';

/**
 * The stored form of a target URL sends requests to the same origin and base path as the
 * URL as written, since the proxy reads the stored form with `parseTargetUrl`.
 */
const ACCEPTED_SPELLINGS = [
  'http://LocalHost:80/',
  'https://h:443//',
  'http://h:080/api',
  'http://[::FFFF:127.0.0.1]:80/',
  'http://0x7f.1:8080/base',
  'http://H/%7E/A',
  'http://h/a/../b',
  'http://h\\x',
  // WHATWG parsing skips the slashes and backslashes after "http:", so the host is "h".
  'http:///h/x',
  'http://\\h/x',
];

describe('target URL normalisation', () => {
  for (const raw of ACCEPTED_SPELLINGS) {
    test(`${JSON.stringify(raw)} keeps origin and base path`, () => {
      assert.equal(describeTargetUrlProblem(raw), undefined, 'valid as written');
      const stored = normalizeTargetUrl(raw);
      assert.deepEqual(parseTargetUrl(stored), parseTargetUrl(raw), `stored as ${stored}`);
    });
  }
});
