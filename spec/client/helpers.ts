import type { Action, Actionset, Rakefile, SourcePosition } from '../../grammar/model.js';

/** An action line for {@link model}: `'remote-cc -c a.c'`, or with requirements. */
export type ActionLine = string | readonly [command: string, requires: readonly string[]];

/**
 * Builds a Rakefile model directly (no parser), with line numbers as a Rakefile laid out
 * in the obvious way would have them: HOSTS on line 1, then each actionset's header and its
 * actions, a `requires` line after an action that has any.
 */
export function model(spec: {
  readonly file?: string;
  readonly port?: number;
  readonly hosts: readonly string[];
  readonly sets: Readonly<Record<string, readonly ActionLine[]>>;
}): Rakefile {
  const file = spec.file ?? 'Rakefile';
  const port = spec.port ?? 6238;
  const at = (line: number, column = 1): SourcePosition => ({ file, line, column });
  let line = 2;
  const actionsets: Actionset[] = Object.entries(spec.sets).map(([name, lines]) => {
    const position = at(line++);
    const actions: Action[] = lines.map((l) => {
      const [text, requires] = typeof l === 'string' ? [l, []] : l;
      const remote = text.startsWith('remote-');
      const action: Action = {
        command: remote ? text.slice('remote-'.length) : text,
        remote,
        position: at(line++, 2),
        requires: requires.map((path, i) => ({ path, position: at(line, 12 + i) })),
      };
      if (requires.length > 0) line++;
      return action;
    });
    return { name, actions, position };
  });
  const hosts = spec.hosts.map((h) => {
    const m = /^(.*):(\d+)$/.exec(h);
    return m
      ? { host: m[1] as string, port: Number(m[2]), position: at(1, 9) }
      : { host: h, port, position: at(1, 9) };
  });
  return { file, port, hosts, actionsets };
}
