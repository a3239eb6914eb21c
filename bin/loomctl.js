#!/usr/bin/env node
// Entry point of `loomctl`: loads the TypeScript sources through tsx, so no build step is needed.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/loomctl.ts');
process.exitCode = await main(process.argv.slice(2));
