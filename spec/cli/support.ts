import { Writable } from 'node:stream';
import { main } from '../../src/cli/main.js';

/** A writable stream that keeps what is written to it, as UTF-8 text. */
export function capture(): { stream: Writable; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString('utf8');
      cb();
    },
  });
  return { stream, text: () => text };
}

/** Runs the `rake-ts` program in this process, in `cwd`, with captured stdout and stderr. */
export async function rake(
  cwd: string,
  argv: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = capture();
  const err = capture();
  const code = await main(argv, { stdout: out.stream, stderr: err.stream, cwd });
  return { code, stdout: out.text(), stderr: err.text() };
}
