/** Returns the value after `name` in `argv`, or undefined when `name` is not given. */
export function stringOption(argv: readonly string[], name: string): string | undefined {
  return argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined;
}

/**
 * Returns the whole number after `name` in `argv`, or `fallback` when `name` is not given.
 *
 * @throws Error when the value is not a whole number.
 */
export function numberOption(argv: readonly string[], name: string, fallback: number): number {
  const index = argv.indexOf(name);
  if (index === -1) return fallback;
  const value = Number(argv[index + 1]);
  if (!Number.isInteger(value) || value < 0) {
    throw new Error(`invalid ${name} ${argv[index + 1]}: expected a whole number, such as 1000`);
  }
  return value;
}

/**
 * Prints `usage` and exits 0 on `--help`, and exits 2 naming the option when `argv` contains one
 * that is not in `flags` (options without a value) or `valued` (options followed by a value).
 */
export function checkOptions(
  argv: readonly string[],
  usage: string,
  flags: readonly string[],
  valued: readonly string[],
): void {
  if (argv.includes('--help')) {
    process.stdout.write(usage);
    process.exit(0);
  }
  for (let index = 0; index < argv.length; index++) {
    const arg = argv[index];
    if (valued.includes(arg)) {
      index++;
    } else if (!flags.includes(arg)) {
      process.stderr.write(`unknown option ${arg}\n${usage}`);
      process.exit(2);
    }
  }
}
