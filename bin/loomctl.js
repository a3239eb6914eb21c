#!/usr/bin/env node
// Entry point of `loomctl`: loads the TypeScript sources through tsx, so no build step is needed.
import { register } from 'tsx/esm/api';

// A reader that stops early, such as `loomctl get | head`, is not an error of loomctl.
process.stdout.on('error', (error) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});
register();
const { main } = await import('../cli/loomctl.ts');
process.exitCode = await main(process.argv.slice(2));
