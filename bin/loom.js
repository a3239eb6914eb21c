#!/usr/bin/env node
// Entry point of `loom`: loads the TypeScript sources through tsx, so no build step is needed.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/loom.ts');
const code = await main(process.argv.slice(2));
if (code !== undefined) process.exitCode = code;
