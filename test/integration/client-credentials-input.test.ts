import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { loom, loomctl } from '../helpers/cli.js';
import { ALIAS_BOMB } from '../helpers/config-file.js';
import { findFreePort } from '../helpers/ports.js';

const STACK_FRAME = /\n\s+at /;

describe('client credentials input', { timeout: 60_000 }, () => {
  let dir: string;
  let controlPlane: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-credentials-'));
    // Nothing listens there: every check below fails before loomctl connects.
    controlPlane = `127.0.0.1:${await findFreePort()}`;
  });

  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('loomctl token with a line break', async () => {
    const result = await loomctl(controlPlane, ['--token', 's3cret\nmore', 'get']);
    assert.equal(result.code, 1, result.stderr);
    assert.equal(
      result.stderr,
      'error: invalid token from --token: it contains a space, a line break or a character ' +
        'outside visible ASCII; give the token as the tokens file of the control plane has it\n',
    );
    assert.doesNotMatch(result.stderr, /s3cret/);
  });

  test('loomctl config token with a space', async () => {
    const config = join(dir, 'token.yaml');
    writeFileSync(config, 'token: "s3cret more"\n');
    const result = await loomctl(controlPlane, ['--config', config, 'get']);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: invalid token from "token" of .*token\.yaml: /);
    assert.doesNotMatch(result.stderr, /s3cret/);
  });

  test('loomctl config alias bomb', async () => {
    const config = join(dir, 'bomb.yaml');
    writeFileSync(config, ALIAS_BOMB);
    const result = await loomctl(controlPlane, ['--config', config, 'get']);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /^error: invalid loomctl config .*bomb\.yaml: invalid YAML: /);
    assert.doesNotMatch(result.stderr, STACK_FRAME);
  });

  test('proxy token with a line break', async () => {
    const result = await loom(
      [
        'data-plane',
        '--control-plane',
        controlPlane,
        '--listen',
        `127.0.0.1:${await findFreePort()}`,
        '--admin-listen',
        `127.0.0.1:${await findFreePort()}`,
        '--token',
        's3cret\nmore',
      ],
      20_000,
    );
    const output = result.stdout + result.stderr;
    assert.notEqual(result.code, 0, output);
    assert.notEqual(result.code, -1, 'the proxy kept running');
    assert.match(output, /invalid token from --token: it contains a space, a line break/);
    assert.doesNotMatch(output, /s3cret/);
    assert.doesNotMatch(output, STACK_FRAME);
  });
});
