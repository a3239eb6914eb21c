import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { startEchoUpstream } from '../../examples/echo-upstream.js';
import { waitFor } from '../../scripts/processes.js';
import { loomctl, loomctlFedEndlessly, type CliResult, type FedCliResult } from '../helpers/cli.js';
import { ALIAS_BOMB } from '../helpers/config-file.js';
import { startFleet, type Fleet } from '../helpers/fleet.js';

/** Sends a GET and returns the response's header names and values as received. */
function rawResponseHeaders(url: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.rawHeaders));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('hostile config files', { timeout: 150_000 }, () => {
  let fleet: Fleet;
  let upstream: Server;
  let baseline: string;

  before(async () => {
    upstream = await startEchoUpstream(0, 'users');
    const port = (upstream.address() as AddressInfo).port;
    fleet = await startFleet({ proxies: 1 });
    baseline = `upstreams:
  - name: users
    targets: [{url: "http://127.0.0.1:${port}"}]
routes:
  - name: get-user
    paths: [/users/:id]
    upstream: users
`;
    const applied = await apply('baseline.yaml', baseline);
    assert.equal(applied.code, 0, applied.stderr);
  });

  after(async () => {
    await fleet?.stop();
    upstream?.close();
  });

  function apply(name: string, text: string | Buffer): Promise<CliResult> {
    const file = join(fleet.dir, name);
    writeFileSync(file, text);
    return loomctl(fleet.controlPlane, ['apply', '-f', file]);
  }

  /** Runs `loomctl apply -f -` with `chunk` repeated on standard input, up to 512 MiB. */
  function applyEndless(chunk: Buffer): Promise<FedCliResult> {
    return loomctlFedEndlessly(fleet.controlPlane, ['apply', '-f', '-'], chunk, 512 * 1024 * 1024);
  }

  /** Returns the stored configuration as `loomctl get -o json` prints it. */
  async function stored(): Promise<string> {
    const got = await loomctl(fleet.controlPlane, ['get', '-o', 'json']);
    assert.equal(got.code, 0, got.stderr);
    return got.stdout;
  }

  /** Applies `text`, expects a rejection on one line of stderr, and checks that nothing changed. */
  async function assertRejected(name: string, text: string | Buffer, line: RegExp) {
    const before = await stored();
    const result = await apply(name, text);
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, line);
    assert.doesNotMatch(result.stderr, /\n\s+at /, 'stderr has a stack trace');
    assert.equal(await stored(), before);
  }

  test('alias bomb is a clear error', async () => {
    await assertRejected(
      'bomb.yaml',
      ALIAS_BOMB,
      /bomb\.yaml: \(syntax\): invalid YAML: aliases \(\*name\) expand to too many values/,
    );
  });

  test('deep JSON nesting is a clear error', async () => {
    const deep = `{"routes": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    await assertRejected(
      'deep.json',
      deep,
      /deep\.json: routes(\[0\]){32}: lists or mappings nest more than 32 levels deep/,
    );
    await assertRejected('deep-json.yaml', deep, /nest more than 32 levels deep/);
  });

  test('deep YAML nesting is a clear error', async () => {
    await assertRejected(
      'deep.yaml',
      `routes: ${'['.repeat(100_000)}${']'.repeat(100_000)}`,
      /deep\.yaml:1:\d+: \(syntax\): invalid YAML or JSON: lists or mappings nest too deeply to parse/,
    );
    const indented = Array.from({ length: 100 }, (_, depth) => `${'  '.repeat(depth)}- `);
    await assertRejected(
      'indented.yaml',
      `routes:\n${indented.join('\n')}\n`,
      /indented\.yaml: routes(\[0\]){32}: lists or mappings nest more than 32 levels deep/,
    );
  });

  test('repeated JSON key is an error', async () => {
    const upstreams = '"upstreams": [{"name": "users", "name": "other", "targets": []}]';
    await assertRejected(
      'repeated.json',
      `{${upstreams}}`,
      /repeated\.json:1:\d+: \(syntax\): invalid JSON: key "name" appears twice in one object/,
    );
    await assertRejected(
      'repeated-json.yaml',
      `{${upstreams}}`,
      /repeated-json\.yaml:1:\d+: \(syntax\): invalid YAML or JSON: Map keys must be unique/,
    );
  });

  test('invalid UTF-8 names its place', async () => {
    const latin1 = Buffer.concat([
      Buffer.from('routes:\n  - name: caf'),
      Buffer.from([0xe9]),
      Buffer.from('\n    paths: [/cafe]\n    upstream: users\n'),
    ]);
    await assertRejected(
      'latin1.yaml',
      latin1,
      /latin1\.yaml:2:14: \(file\): invalid UTF-8: byte 0xe9 at offset 21; save the file as UTF-8/,
    );
  });

  test('endless pipe of zeros stops early', async () => {
    const fifo = join(fleet.dir, 'endless.yaml');
    execFileSync('mkfifo', [fifo]);
    // The writer ends on its own: after 300 MiB, or when loomctl closes the pipe.
    const writer = spawn('sh', ['-c', `head -c ${300 * 1024 * 1024} /dev/zero > '${fifo}'`], {
      stdio: 'ignore',
    });
    try {
      const before = await stored();
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', fifo]);
      assert.equal(result.code, 1, result.stderr);
      assert.match(
        result.stderr,
        /endless\.yaml:1:1: \(file\): cannot read config: NUL byte \(0x00\) at offset 0, /,
      );
      assert.equal(await stored(), before);
    } finally {
      writer.kill();
      rmSync(fifo, { force: true });
    }
  });

  test('stdin of zeros stops early', async () => {
    const before = await stored();
    const result = await applyEndless(Buffer.alloc(64 * 1024));

    assert.equal(result.code, 1, result.stderr);
    assert.equal(
      result.stderr.trimEnd().split('\n')[1],
      '  (stdin):1:1: (file): cannot read config: NUL byte (0x00) at offset 0, which YAML and ' +
        'JSON text never contains, so the input is not a config file; pass a YAML or JSON file',
    );
    // The pipe buffer and the first read: far less than the size limit.
    assert.ok(result.written <= 4 * 1024 * 1024, `wrote ${result.written} bytes`);
    assert.equal(await stored(), before);
  });

  test('file over 32 MiB is rejected', async () => {
    // YAML text that parses, so only the size can reject it.
    const text = Buffer.from('# padding\n'.repeat(Math.ceil((33 * 1024 * 1024) / 10)));
    await assertRejected(
      'large.yaml',
      text,
      /large\.yaml: \(file\): cannot read config: larger than 32 MiB, more than loomctl can parse/,
    );
  });

  test('files over 32 MiB together are rejected', async () => {
    const before = await stored();
    const half = Buffer.from('# padding\n'.repeat(Math.ceil((17 * 1024 * 1024) / 10)));
    const first = join(fleet.dir, 'half-1.yaml');
    const second = join(fleet.dir, 'half-2.yaml');
    writeFileSync(first, half);
    writeFileSync(second, half);
    const result = await loomctl(fleet.controlPlane, ['apply', '-f', first, '-f', second]);

    assert.equal(result.code, 1, result.stderr);
    assert.match(
      result.stderr,
      /\(2 files\): \(file\): cannot read config: the files add up to 34\.0 MiB, more than the 32 MiB/,
    );
    assert.equal(await stored(), before);
  });

  test('endless stdin stops at 32 MiB', async () => {
    const before = await stored();
    const result = await applyEndless(Buffer.from('a: b\n'.repeat(16 * 1024)));

    assert.equal(result.code, 1, result.stderr);
    const stderr = result.stderr.trimEnd().split('\n');
    assert.equal(stderr.length, 2, result.stderr);
    assert.equal(
      stderr[1],
      '  (stdin): (file): cannot read config: larger than 32 MiB, more than loomctl can parse ' +
        'in its memory (about 350,000 short routes); check that the input is a config file',
    );
    const limit = 32 * 1024 * 1024;
    assert.ok(result.written > limit, `wrote ${result.written} bytes`);
    assert.ok(result.written <= limit + 4 * 1024 * 1024, `wrote ${result.written} bytes`);
    assert.equal(await stored(), before);
  });

  for (const device of ['/dev/zero', '/dev/null']) {
    test(`${device} rejected before reading`, async () => {
      const before = await stored();
      const result = await loomctl(fleet.controlPlane, ['apply', '-f', device]);

      assert.equal(result.code, 1, result.stderr);
      assert.match(
        result.stderr,
        new RegExp(
          `${device}: \\(file\\): cannot read config: it is a character device, not a regular ` +
            'file; pass a config file, a folder, or "-" to read standard input',
        ),
      );
      assert.equal(await stored(), before);
    });
  }

  test('folder skips a FIFO', async () => {
    const folder = join(fleet.dir, 'with-fifo');
    mkdirSync(folder);
    writeFileSync(join(folder, 'a.yaml'), baseline);
    // Nothing ever writes to it, so a read would block until loomctl's 60 s timeout.
    execFileSync('mkfifo', [join(folder, 'b.yaml')]);
    const result = await loomctl(fleet.controlPlane, ['validate', '-f', folder]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^configuration is valid: 1 route, 1 upstream/);
  });

  test('__proto__ header name is kept', async () => {
    const text = `${baseline}    responseHeaders:
      set:
        __proto__: kept
        x-other: also-kept
`;
    const result = await apply('proto-header.yaml', text);
    assert.equal(result.code, 0, result.stderr);
    const route = (
      JSON.parse(await stored()) as { routes: { name: string; responseHeaders?: unknown }[] }
    ).routes.find((item) => item.name === 'get-user');
    assert.deepEqual(route?.responseHeaders, {
      set: [
        { name: '__proto__', value: 'kept' },
        { name: 'x-other', value: 'also-kept' },
      ],
      remove: [],
    });

    const proxy = fleet.proxies[0];
    // node:http leaves a `__proto__` header out of `headers`, so the raw list is read.
    await waitFor('proxy sends the __proto__ header', 20_000, async () => {
      const raw: string[] = await rawResponseHeaders(proxy.url('/users/1')).catch(() => []);
      return raw.includes('__proto__') && raw[raw.indexOf('__proto__') + 1] === 'kept';
    });
    const diff = await loomctl(fleet.controlPlane, [
      'diff',
      '-f',
      join(fleet.dir, 'proto-header.yaml'),
    ]);
    assert.equal(diff.code, 0, diff.stdout);
  });
});
