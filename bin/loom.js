#!/usr/bin/env node
// Entry point of `loom`: loads the TypeScript sources through tsx, so no build step is needed.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/loom.ts');
const code = await main(process.argv.slice(2));
// A failed start may leave timers or sockets of a half-started server behind; exit anyway.
if (code !== undefined) process.exit(code);
