import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { ROOT } from '../../scripts/processes.js';
import { generateProto } from '../../scripts/generate-proto.js';

test('generated proto code matches proto sources', () => {
  const outDir = mkdtempSync(join(tmpdir(), 'loom-proto-'));
  try {
    generateProto(outDir);
    const committedDir = join(ROOT, 'proto', 'gen', 'loom', 'v1');
    const freshDir = join(outDir, 'loom', 'v1');
    assert.deepEqual(readdirSync(committedDir).sort(), readdirSync(freshDir).sort());
    for (const name of readdirSync(freshDir)) {
      const committed = readFileSync(join(committedDir, name), 'utf8');
      const fresh = readFileSync(join(freshDir, name), 'utf8');
      assert.equal(committed, fresh, `proto/gen/loom/v1/${name} is stale; run "npm run generate"`);
    }
  } finally {
    rmSync(outDir, { recursive: true, force: true });
  }
});
