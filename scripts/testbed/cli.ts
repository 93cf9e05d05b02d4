/**
 * `npm run testbed -- --hosts 4 --delay 20ms`: starts a test bed, prints one line per host,
 * runs until Ctrl-C (or SIGTERM/SIGHUP), then tears everything down. See docs/testbed.md.
 */
import { writeFileSync } from 'node:fs';
import { parseCliOptions, USAGE } from './cli-options.js';
import {
  cleanupAbandoned,
  echoServerCommand,
  rakeserverCommand,
  startTestbed,
  type Testbed,
} from './netns.js';

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  const parsed = parseCliOptions(argv);
  if (!parsed.ok) {
    console.error(`testbed: ${parsed.message}\n${USAGE}`);
    return 64;
  }
  const { testbed, server, rakefile, cleanup } = parsed.options;
  if (cleanup) {
    const removed = cleanupAbandoned();
    console.error(`testbed: removed ${removed.length} abandoned bed(s) ${removed.join(' ')}`);
    return 0;
  }

  let bed: Testbed | undefined;
  let stopping = false;
  const keepAlive = setInterval(() => undefined, 1 << 30);
  const stopped = new Promise<number>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      console.error(`testbed: ${signal}, tearing down`);
      const done = bed?.teardown() ?? Promise.resolve();
      done.then(
        () => resolve(0),
        (err: unknown) => {
          console.error(`testbed: teardown failed: ${String(err)}`);
          resolve(1);
        },
      );
    };
    // Registered before the bed's own handlers, so this runs first and the process stays up
    // until the teardown has finished.
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, stop);
  });

  try {
    bed = await startTestbed({
      ...testbed,
      serverCommand: server === 'rakeserver' ? rakeserverCommand : echoServerCommand,
    });
  } catch (err) {
    clearInterval(keepAlive);
    if (stopping) return 130;
    console.error(`testbed: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
  for (const host of bed.hosts) {
    const where = host.namespace === undefined ? 'loopback' : `ns ${host.namespace}`;
    console.log(`${host.name} ${host.address}:${host.port} (${where})`);
    void host.exited.then((status) => {
      if (!stopping) console.error(`testbed: ${host.name} server exited ${JSON.stringify(status)}`);
    });
  }
  const { netem, dropSyn } = bed.capabilities;
  console.error(
    `testbed: ${bed.hosts.length} hosts, ${bed.mode} mode, client ${bed.clientAddress}; ` +
      `shaping ${netem.supported ? netem.via : `unsupported (${netem.reason})`}; ` +
      `SYN drops ${dropSyn.supported ? dropSyn.via : `unsupported (${dropSyn.reason})`}`,
  );
  if (rakefile !== undefined) {
    writeFileSync(rakefile, `${bed.rakefileHosts()}\n`);
    console.error(`testbed: wrote ${rakefile}`);
  }
  console.error('testbed: ready; Ctrl-C tears down');
  const code = await stopped;
  clearInterval(keepAlive);
  console.error('testbed: torn down');
  return code;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 70;
  },
);
