// A real `rakeserver` program (the CLI's entry, through tsx) in a child process of its own,
// for specs that stop, freeze (SIGSTOP) or count a server from outside.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { waitUntil } from './wait.js';

const root = new URL('../..', import.meta.url).pathname;
const entry =
  "import('./src/cli/rakeserver.ts').then(async (m) => { process.exitCode = await m.main(process.argv.slice(1)); })";

/** A rakeserver program with its own workdir, listening. */
export interface RakeserverProgram {
  readonly child: ChildProcess;
  readonly port: number;
  readonly workdir: string;
  /** Ends it (SIGCONT first, should a spec have frozen it) and waits for its exit. */
  stop(): Promise<void>;
}

/** Starts `rakeserver --port 0 --workdir workdir …extra`; resolves once it says where it listens. */
export async function rakeserverProgram(
  workdir: string,
  extra: readonly string[] = [],
): Promise<RakeserverProgram> {
  await mkdir(workdir, { recursive: true });
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '-e', entry, '--', '--port', '0', '--workdir', workdir, ...extra],
    { cwd: root, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let text = '';
  child.stderr?.on('data', (c: Buffer) => {
    text += c.toString();
  });
  const exited = new Promise<void>((ok) => child.once('exit', () => ok()));
  await waitUntil(() => /"msg":"listening"/.test(text) || child.exitCode !== null, {
    ms: 60_000,
    what: 'the rakeserver listening line',
  });
  const line = text.split('\n').find((l) => l.includes('"msg":"listening"'));
  assert.ok(line, `rakeserver did not start: ${text}`);
  return {
    child,
    port: (JSON.parse(line) as { port: number }).port,
    workdir,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGTERM');
      }
      await exited;
    },
  };
}
