// Generates TypeScript for proto/loom/v1/*.proto into proto/gen with ts-proto,
// using the protoc binary that the npm `protoc` package ships.
// Usage: tsx scripts/generate-proto.ts [OUT_DIR]
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

/** ts-proto settings; changing them changes every generated file. */
export const TS_PROTO_OPTIONS = [
  'outputServices=grpc-js',
  'esModuleInterop=true',
  'importSuffix=.js',
  'forceLong=number',
  'oneof=unions',
  'env=node',
  'useExactTypes=false',
].join(',');

/** Writes the generated code for every proto file into outDir, replacing what was there. */
export function generateProto(outDir: string): void {
  const protoDir = join(root, 'proto');
  const files = readdirSync(join(protoDir, 'loom', 'v1'))
    .filter((name) => name.endsWith('.proto'))
    .map((name) => `loom/v1/${name}`);
  const protoc = require.resolve('protoc/protoc.cjs');
  const plugin = join(root, 'node_modules', '.bin', 'protoc-gen-ts_proto');

  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  execFileSync(process.execPath, [
    protoc,
    `--plugin=protoc-gen-ts_proto=${plugin}`,
    `--ts_proto_out=${outDir}`,
    `--ts_proto_opt=${TS_PROTO_OPTIONS}`,
    `--proto_path=${protoDir}`,
    ...files,
  ]);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  generateProto(resolve(process.argv[2] ?? join(root, 'proto', 'gen')));
}
