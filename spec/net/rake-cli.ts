/**
 * Starts `rake-ts` from source (through tsx) for specs that run the client as a child
 * process: the same as bin/rake-ts.js, which runs the compiled copy in dist/.
 */
import { main } from '../../src/cli/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 70;
  },
);
