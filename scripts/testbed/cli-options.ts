/**
 * The test bed command line (`npm run testbed -- --hosts 4 --delay 20ms`), parsed into
 * {@link TestbedOptions}. Kept apart from cli.ts so it can be tested without starting a bed.
 */
import { parseArgs } from 'node:util';
import type { NetemOptions, TestbedOptions } from './netns.js';

/** What the command line asks for: the bed, and where to write a Rakefile HOSTS line. */
export interface CliOptions {
  readonly testbed: TestbedOptions;
  readonly server: 'echo' | 'rakeserver';
  readonly rakefile: string | undefined;
  /** Only remove beds whose owning process died, then exit. */
  readonly cleanup: boolean;
}

/** A command line the test bed cannot run; the message says which option and why. */
export type CliParse =
  | { readonly ok: true; readonly options: CliOptions }
  | { readonly ok: false; readonly message: string };

export const USAGE = `usage: node --import tsx scripts/testbed/cli.ts [options]
  --hosts N          number of hosts (default 3)
  --delay 20ms       one-way delay on each direction of every host link
  --jitter 5ms       delay varies by up to this much either way
  --loss 5%          packet loss on each direction
  --port P           port every host listens on (netns mode; default 6238)
  --prefix NAME      namespace/link name prefix, 1-8 of [a-z0-9] (default from the pid)
  --server KIND      rakeserver (default; from source) or echo (the test bed's stand-in)
  --loopback         skip namespaces, use loopback addresses and free ports
  --rakefile OUT     write a Rakefile HOSTS line for the bed to OUT
  --cleanup          only remove test beds whose process was killed, then exit`;

/** Parses `argv` (without node and script); never throws. */
export function parseCliOptions(argv: readonly string[]): CliParse {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: [...argv],
      options: {
        hosts: { type: 'string', default: '3' },
        delay: { type: 'string' },
        jitter: { type: 'string' },
        loss: { type: 'string' },
        port: { type: 'string' },
        prefix: { type: 'string' },
        server: { type: 'string', default: 'rakeserver' },
        loopback: { type: 'boolean', default: false },
        rakefile: { type: 'string' },
        cleanup: { type: 'boolean', default: false },
      },
      strict: true,
    }).values;
  } catch (err) {
    return { ok: false, message: (err as Error).message };
  }
  const hosts = Number(values.hosts);
  if (!Number.isInteger(hosts) || hosts < 1 || hosts > 99) {
    return { ok: false, message: `--hosts must be an integer from 1 to 99, not ${values.hosts}` };
  }
  const netem: { delayMs?: number; jitterMs?: number; lossPercent?: number } = {};
  for (const [flag, key, parse] of [
    ['delay', 'delayMs', parseDuration],
    ['jitter', 'jitterMs', parseDuration],
    ['loss', 'lossPercent', parsePercent],
  ] as const) {
    const text = values[flag];
    if (typeof text !== 'string') continue;
    const value = parse(text);
    if (value === undefined) return { ok: false, message: `--${flag}: cannot read "${text}"` };
    netem[key] = value;
  }
  const server = values.server;
  if (server !== 'echo' && server !== 'rakeserver') {
    return { ok: false, message: `--server must be echo or rakeserver, not ${server}` };
  }
  let port: number | undefined;
  if (typeof values.port === 'string') {
    port = Number(values.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return { ok: false, message: `--port must be 1-65535, not ${values.port}` };
    }
  }
  const testbed: TestbedOptions = {
    hosts,
    mode: values.loopback === true ? 'loopback' : 'auto',
    ...(Object.keys(netem).length > 0 ? { netem: netem as NetemOptions } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(typeof values.prefix === 'string' ? { namePrefix: values.prefix } : {}),
  };
  const rakefile = typeof values.rakefile === 'string' ? values.rakefile : undefined;
  return { ok: true, options: { testbed, server, rakefile, cleanup: values.cleanup === true } };
}

/** `20ms`, `0.5s` or a bare number of milliseconds; undefined when unreadable or negative. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(text.trim());
  if (match === null) return undefined;
  const value = Number(match[1]);
  return match[2] === 's' ? value * 1000 : value;
}

/** `5%` or `5`; undefined when unreadable or above 100. */
export function parsePercent(text: string): number | undefined {
  const match = /^(\d+(?:\.\d+)?)%?$/.exec(text.trim());
  if (match === null) return undefined;
  const value = Number(match[1]);
  return value <= 100 ? value : undefined;
}
