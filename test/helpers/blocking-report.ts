// Makes a test file's stdout pipe blocking; test/run.ts loads it into every test process.
// The file's results reach the runner through that pipe. Under --test-force-exit, process.exit()
// drops writes still queued on a full pipe, and the runner then reports fewer tests than ran.
interface BlockingHandle {
  setBlocking?: (blocking: boolean) => number;
}

if (process.env.NODE_TEST_CONTEXT !== undefined) {
  const handle = (process.stdout as unknown as { _handle?: BlockingHandle })._handle;
  handle?.setBlocking?.(true);
}
