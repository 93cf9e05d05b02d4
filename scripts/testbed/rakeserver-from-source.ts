/**
 * Starts rakeserver from source (through tsx), so the test bed needs no `npm run build`:
 * the same as bin/rakeserver.js, which runs the compiled copy in dist/.
 */
import { main } from '../../src/cli/rakeserver.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 70;
  },
);
