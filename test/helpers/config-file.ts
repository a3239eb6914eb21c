import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Writes `DIR/NAME`: one upstream `users` with a target on 127.0.0.1:`port`, and one route to it
 * for each entry of `routes` (route name to path). Returns the file's path.
 */
export function writeUsersConfig(
  dir: string,
  name: string,
  port: number,
  routes: Record<string, string>,
): string {
  const lines = ['upstreams:', '  - name: users', '    targets:'];
  lines.push(`      - url: http://127.0.0.1:${port}`, 'routes:');
  for (const [route, path] of Object.entries(routes)) {
    lines.push(`  - name: ${route}`, `    paths: [${path}]`, '    upstream: users');
  }

  const file = join(dir, name);
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

/** Ten levels of aliases, each a list of ten of the one before: 10^10 strings when expanded. */
export const ALIAS_BOMB = [
  'a: &a ["x","x","x","x","x","x","x","x","x","x"]',
  ...'bcdefghij'.split('').map((name, index) => {
    const previous = 'abcdefghij'[index];
    return `${name}: &${name} [${Array(10).fill(`*${previous}`).join(',')}]`;
  }),
].join('\n');
