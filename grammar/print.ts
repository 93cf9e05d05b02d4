import { isIPv6 } from 'node:net';
import { TLS_SCHEME } from './hosts.js';
import { type HostSpec, NO_CACHE_MARK, type Rakefile } from './model.js';

/**
 * Writes a model back as a Rakefile in canonical form: `PORT = n`, then `HOSTS = ...` (a
 * host's port only when it differs from PORT), then each actionset after a blank line,
 * actions indented with one tab and their files on one `requires` line with two.
 *
 * Parsing the output gives the same model again (positions aside) for any model
 * `parseRakefile` produced; the property tests in spec/grammar/ hold it to that.
 */
export function printRakefile(rakefile: Rakefile): string {
  const out: string[] = [`PORT = ${rakefile.port}`];
  if (rakefile.hosts.length > 0) {
    out.push(`HOSTS = ${rakefile.hosts.map((h) => printHost(h, rakefile.port)).join(' ')}`);
  }
  for (const actionset of rakefile.actionsets) {
    out.push('', `${actionset.name}:`);
    for (const action of actionset.actions) {
      const mark = action.noCache ? `  ${NO_CACHE_MARK}` : '';
      out.push(`\t${action.remote ? 'remote-' : ''}${action.command}${mark}`);
      if (action.requires.length > 0) {
        out.push(`\t\trequires ${action.requires.map((r) => r.path).join(' ')}`);
      }
    }
  }
  return `${out.join('\n')}\n`;
}

function printHost(spec: HostSpec, defaultPort: number): string {
  const host = `${spec.tls ? TLS_SCHEME : ''}${isIPv6(spec.host) ? `[${spec.host}]` : spec.host}`;
  return spec.port === defaultPort ? host : `${host}:${spec.port}`;
}
