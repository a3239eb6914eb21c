import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';

import type { Command } from 'commander';
import { parse } from 'yaml';
import { z } from 'zod';

import { describeUnsendableToken, isSendableToken } from '../common/auth.js';
import { LoomError } from '../common/errors.js';
import { checkServerNameHasTls, parseTlsServerName, type ClientTlsFiles } from '../common/tls.js';
import { setDefaultAdminConnection } from './admin-client.js';
import { EXIT, ExitError } from './context.js';

const ConfigSchema = z
  .object({
    controlPlane: z.string().min(1).optional(),
    token: z.string().min(1).optional(),
    tls: z
      .object({
        ca: z.string().min(1).optional(),
        cert: z.string().min(1).optional(),
        key: z.string().min(1).optional(),
        serverName: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

/** Contents of a loomctl config file. */
export type LoomctlConfig = z.infer<typeof ConfigSchema>;

/** Global flags of loomctl that choose the control plane and the credentials. */
export interface ConnectionFlags {
  controlPlane?: string;
  config?: string;
  token?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
}

/**
 * Returns the default config file: `$XDG_CONFIG_HOME/loom/loomctl.yaml`, else
 * `~/.config/loom/loomctl.yaml`.
 */
export function defaultConfigPath(): string {
  const base = process.env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'loom', 'loomctl.yaml');
}

/** Descriptions of the usual errors of reading the loomctl config file, by error code. */
const CONFIG_READ_ERRORS: Record<string, string> = {
  ENOENT: 'file not found',
  EACCES: 'permission denied',
  EISDIR: 'it is a directory, not a file',
};

/**
 * Reads a loomctl config file. A missing default file is an empty config; a
 * missing file named by `--config` or `LOOMCTL_CONFIG` is an error. Relative
 * TLS paths are resolved against the file's folder.
 *
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming the file and the problem.
 */
export function loadLoomctlConfig(explicitPath: string | undefined): LoomctlConfig {
  const path = explicitPath ?? defaultConfigPath();
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && explicitPath === undefined) return {};
    const reason = CONFIG_READ_ERRORS[code ?? ''] ?? String(error);
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `cannot read loomctl config ${path}: ${reason}; name a readable file with --config or ` +
        'LOOMCTL_CONFIG, or unset them to use the default file',
    );
  }

  const parsed = parseConfigYaml(path, text) ?? {};
  const result = ConfigSchema.safeParse(parsed);
  if (!result.success) {
    if (isGatewayConfig(parsed)) {
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `invalid loomctl config ${path}: it declares routes or upstreams, which are given with ` +
          `-f, such as: loomctl apply -f ${path}. A loomctl config (--config or LOOMCTL_CONFIG) ` +
          'contains only controlPlane, token and tls',
      );
    }
    const problems = result.error.issues.map(
      (issue) => `${issue.path.join('.') || '(top level)'}: ${issue.message}`,
    );
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid loomctl config ${path}: ${problems.join('; ')}; ` +
        'allowed keys are controlPlane, token and tls (ca, cert, key, serverName)',
    );
  }
  const config = result.data;
  const relativeTo = (file: string | undefined) =>
    file === undefined || isAbsolute(file) ? file : resolve(dirname(path), file);
  if (config.tls !== undefined) {
    config.tls = {
      ...config.tls,
      ca: relativeTo(config.tls.ca),
      cert: relativeTo(config.tls.cert),
      key: relativeTo(config.tls.key),
    };
  }
  return config;
}

/** Tells whether a parsed file has a top-level key of the routes and upstreams format. */
function isGatewayConfig(parsed: unknown): boolean {
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return false;
  return ['apiVersion', 'routes', 'upstreams'].some((key) => Object.hasOwn(parsed, key));
}

/**
 * Parses the YAML of a loomctl config file.
 * @throws LoomError `LOOM_INVALID_ARGUMENT` with the parser's reason on one line, also for
 *   aliases that expand to too many values and for nesting too deep to parse.
 */
function parseConfigYaml(path: string, text: string): unknown {
  try {
    return parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
    throw new LoomError(
      'LOOM_INVALID_ARGUMENT',
      `invalid loomctl config ${path}: invalid YAML: ${reason}`,
    );
  }
}

/**
 * Returns `token` when gRPC metadata can carry it.
 * @throws LoomError `LOOM_INVALID_ARGUMENT` naming where the token came from, never the token.
 */
function checkToken(token: string | undefined, source: string): string | undefined {
  if (token === undefined || isSendableToken(token)) return token;
  throw new LoomError('LOOM_INVALID_ARGUMENT', describeUnsendableToken(source));
}

/** Adds loomctl's global connection flags. */
export function addConnectionOptions(program: Command): Command {
  return program
    .option(
      '--config <file>',
      'loomctl config file (env LOOMCTL_CONFIG, default ~/.config/loom/loomctl.yaml)',
    )
    .option('--token <token>', 'bearer token for the control plane (env LOOM_TOKEN)')
    .option('--tls-ca <file>', 'PEM CA that verifies the control plane; turns on TLS')
    .option('--tls-cert <file>', 'PEM client certificate for mutual TLS')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option(
      '--tls-server-name <name>',
      "name to expect in the control plane's certificate instead of the host of " +
        '--control-plane, such as through kubectl port-forward (env LOOM_TLS_SERVER_NAME)',
    );
}

/**
 * Resolves the connection before a command runs. Each setting comes from its
 * flag, then its environment variable, then the config file. The token comes
 * from `--token`, `LOOM_TOKEN` or `token`, and the TLS files from `--tls-ca`,
 * `--tls-cert` and `--tls-key` or `tls`. The server name comes from
 * `--tls-server-name`, `LOOM_TLS_SERVER_NAME` or `tls.serverName`. The control
 * plane comes from `--control-plane`, `LOOM_CONTROL_PLANE` or `controlPlane`.
 *
 * @throws ExitError with the usage exit code for an invalid or unusable server name.
 */
export function applyConnectionSettings(program: Command): void {
  const flags = program.opts<ConnectionFlags>();
  const explicitPath = flags.config ?? (process.env.LOOMCTL_CONFIG || undefined);
  const config = loadLoomctlConfig(explicitPath);
  if (
    flags.controlPlane === undefined &&
    !process.env.LOOM_CONTROL_PLANE &&
    config.controlPlane !== undefined
  ) {
    program.setOptionValueWithSource('controlPlane', config.controlPlane, 'config');
  }

  const tlsFlags: ClientTlsFiles = { ca: flags.tlsCa, cert: flags.tlsCert, key: flags.tlsKey };
  const tlsFromFlags = Object.values(tlsFlags).some((value) => value !== undefined);
  const configPath = explicitPath ?? defaultConfigPath();
  if (!tlsFromFlags) checkTlsFiles(config.tls, configPath);
  const tlsFiles = tlsFromFlags ? tlsFlags : config.tls;
  const envToken = process.env.LOOM_TOKEN || undefined;
  const token =
    flags.token !== undefined
      ? checkToken(flags.token, '--token')
      : envToken !== undefined
        ? checkToken(envToken, 'LOOM_TOKEN')
        : checkToken(config.token, `"token" of ${configPath}`);
  setDefaultAdminConnection({
    token,
    tls: withServerName(tlsFiles, flags.tlsServerName, config.tls?.serverName, configPath),
  });
}

/**
 * Adds the TLS server name to `tls`: `--tls-server-name`, then LOOM_TLS_SERVER_NAME, then
 * `tls.serverName` of the config file.
 */
function withServerName(
  tls: ClientTlsFiles | undefined,
  flag: string | undefined,
  configured: string | undefined,
  configPath: string,
): ClientTlsFiles | undefined {
  const fromEnv = process.env.LOOM_TLS_SERVER_NAME || undefined;
  let source = '--tls-server-name';
  if (flag === undefined) {
    source = fromEnv !== undefined ? 'LOOM_TLS_SERVER_NAME' : `tls.serverName of ${configPath}`;
  }
  const value = flag ?? fromEnv ?? configured;
  if (value === undefined) return tls;
  try {
    const named = { ...tls, serverName: parseTlsServerName(value, source) };
    checkServerNameHasTls(named, source);
    return named;
  } catch (error) {
    if (error instanceof LoomError) throw new ExitError(EXIT.usage, error.message);
    throw error;
  }
}

/**
 * Reads each TLS file of a loomctl config once, so that a wrong path names the config key and
 * the config file rather than a --tls-* flag the user never passed.
 */
function checkTlsFiles(tls: LoomctlConfig['tls'], configPath: string): void {
  for (const key of ['ca', 'cert', 'key'] as const) {
    const file = tls?.[key];
    if (file === undefined) continue;
    try {
      readFileSync(file);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      const reason = code === 'ENOENT' ? 'file not found' : (error as Error).message;
      throw new LoomError(
        'LOOM_INVALID_ARGUMENT',
        `cannot read tls.${key} file ${file} of loomctl config ${configPath}: ${reason}; ` +
          'fix the path there (relative paths start at the config file) or pass --tls-*',
        { cause: error },
      );
    }
  }
}
