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
