import { readFileSync } from 'node:fs';

let cached: string | undefined;

/**
 * This package's version from package.json, found from this file in src/ (tsx), dist/src/
 * (built) or a program bundled into dist/ (scripts/bundle.mjs); `undefined` if none is there.
 * Servers announce it to our clients; `rake-ts --version` prints it.
 */
export function packageVersion(): string | undefined {
  if (cached !== undefined) return cached;
  for (const up of ['../package.json', '../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(up, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'rake-ts' && pkg.version !== undefined) {
        cached = pkg.version;
        return cached;
      }
    } catch {
      // Not at this depth; try the next.
    }
  }
  return undefined;
}
