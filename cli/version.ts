import { readFileSync } from 'node:fs';

/** The version of the `loom` package, printed by `loom --version` and `loomctl --version`. */
export const LOOM_VERSION = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;
