import { Argument, Option, type Command } from 'commander';

import { LoomError } from '../../common/errors.js';
import { describeMissingResource } from '../../config/limits.js';
import type { GetConfigResponse } from '../../proto/gen/loom/v1/admin.js';
import type { Route, Upstream } from '../../proto/gen/loom/v1/config.js';
import { exitHelp, parseResourceName, withClient } from '../context.js';
import { configDocument, formatDocument, formatTable, printUnreadableKeys } from '../output.js';

type Format = 'yaml' | 'json' | 'table';

const KINDS: Record<string, 'route' | 'upstream'> = {
  route: 'route',
  routes: 'route',
  upstream: 'upstream',
  upstreams: 'upstream',
};

/** Registers `loomctl get`. */
export function registerGet(program: Command): void {
  program
    .command('get')
    .description(
      'Print stored routes and upstreams. Without a kind, print the whole configuration ' +
        'with its version and epoch.',
    )
    .addArgument(
      new Argument('[kind]', 'routes or upstreams (singular works too)').choices(
        Object.keys(KINDS),
      ),
    )
    .argument('[name]', 'print only this resource', parseResourceName)
    .addOption(
      new Option(
        '-o, --output <format>',
        'output format (default: table for a kind, yaml for the whole configuration)',
      ).choices(['yaml', 'json', 'table']),
    )
    .addHelpText(
      'after',
      '\nThe yaml and json output of a kind is a config document that "apply -f" accepts.\n' +
        exitHelp('success', 'unreachable control plane, resource not found'),
    )
    .action(
      async (
        kind: string | undefined,
        name: string | undefined,
        options: { output?: Format },
        command: Command,
      ) => {
        const config = await withClient(command, (client) => client.getConfig());
        printUnreadableKeys(config.unreadable, config.unreadableTotal);
        if (kind === undefined) {
          printWhole(config, options.output ?? 'yaml');
          return;
        }
        printKind(config, KINDS[kind], name, options.output ?? 'table');
      },
    );
}

function printWhole(config: GetConfigResponse, format: Format): void {
  if (format === 'table') {
    printKind(config, 'upstream', undefined, 'table');
    process.stdout.write('\n');
    printKind(config, 'route', undefined, 'table');
    return;
  }
  const document = {
    ...configDocument(config.routes, config.upstreams),
    version: config.version,
    epoch: config.epoch,
  };
  process.stdout.write(formatDocument(document, format));
}

function printKind(
  config: GetConfigResponse,
  kind: 'route' | 'upstream',
  name: string | undefined,
  format: Format,
): void {
  const all: { name: string }[] = kind === 'route' ? config.routes : config.upstreams;
  const selected = name === undefined ? all : all.filter((resource) => resource.name === name);
  if (name !== undefined && selected.length === 0) {
    throw new LoomError('LOOM_NOT_FOUND', describeMissingResource(kind, name));
  }

  if (format === 'table') {
    process.stdout.write(
      kind === 'route' ? routeTable(selected as Route[]) : upstreamTable(selected as Upstream[]),
    );
    return;
  }
  const document =
    kind === 'route'
      ? configDocument(selected as Route[], [])
      : configDocument([], selected as Upstream[]);
  delete document[kind === 'route' ? 'upstreams' : 'routes'];
  process.stdout.write(formatDocument(document, format));
}

function routeTable(routes: Route[]): string {
  const list = (values: string[], empty: string) => (values.length > 0 ? values.join(',') : empty);
  return formatTable(
    ['NAME', 'HOSTS', 'METHODS', 'UPSTREAM', 'PATHS'],
    routes.map((route) => [
      route.name,
      list(route.hosts, '*'),
      list(route.methods, '*'),
      route.upstream,
      route.paths.join(','),
    ]),
  );
}

function upstreamTable(upstreams: Upstream[]): string {
  return formatTable(
    ['NAME', 'BALANCER', 'TARGETS'],
    upstreams.map((upstream) => [
      upstream.name,
      upstream.balancer ?? 'round-robin',
      upstream.targets.map((target) => `${target.url} (weight ${target.weight})`).join(', '),
    ]),
  );
}
