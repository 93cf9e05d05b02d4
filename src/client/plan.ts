import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Rakefile } from '../../grammar/model.js';
import { HERE, hostKey } from './endpoint.js';
import type { ActionRef } from './events.js';
import { wireName } from './requirements.js';
import { actionRef, type RunOptions, resolveTargets } from './run.js';

/** One required file in a plan: as written, as sent, and whether it exists now. */
export interface PlannedFile {
  readonly path: string;
  readonly wireName: string;
  readonly line: number;
  /** False for files an earlier actionset is expected to produce, or a mistake. */
  readonly present: boolean;
}

/** One action in a plan: where it would run and what it would send. */
export interface PlannedStep {
  readonly action: ActionRef;
  /**
   * `localhost:PORT` for a local action (`here` with `localHere`: the Rakefile's directory);
   * for a remote one, the hosts it would poll.
   */
  readonly target: string;
  readonly requires: readonly PlannedFile[];
}

/** What `rake-ts -n` prints: the run, resolved, without contacting any server. */
export interface Plan {
  readonly file: string;
  readonly directory: string;
  readonly hosts: readonly string[];
  readonly local: string;
  readonly actionsets: ReadonlyArray<{
    readonly name: string;
    readonly line: number;
    readonly steps: readonly PlannedStep[];
  }>;
}

/** Resolves a Rakefile into a {@link Plan}: reads the file system, never the network. */
export async function planRun(rakefile: Rakefile, options: RunOptions = {}): Promise<Plan> {
  const targets = resolveTargets(rakefile, options);
  const hosts = targets.hosts.map(hostKey);
  const local = hostKey(targets.local);
  const present = new Map<string, Promise<boolean>>();
  const exists = (path: string) => {
    const abs = resolve(targets.directory, path);
    let p = present.get(abs);
    if (p === undefined) {
      p = stat(abs).then(
        (s) => s.isFile(),
        () => false,
      );
      present.set(abs, p);
    }
    return p;
  };
  const actionsets = await Promise.all(
    rakefile.actionsets.map(async (set) => ({
      name: set.name,
      line: set.position.line,
      steps: await Promise.all(
        set.actions.map(async (a, i) => ({
          action: actionRef(set, i),
          target: a.remote ? hosts.join(' ') : options.localHere === true ? HERE : local,
          requires: await Promise.all(
            a.requires.map(async (r) => ({
              path: r.path,
              wireName: wireName(targets.directory, r.path),
              line: r.position.line,
              present: await exists(r.path),
            })),
          ),
        })),
      ),
    })),
  );
  return { file: rakefile.file, directory: targets.directory, hosts, local, actionsets };
}

/** Renders a plan for a terminal: one block per actionset, one line per action. */
export function formatPlan(plan: Plan): string {
  const lines: string[] = [
    `# dry run of ${plan.file}: nothing is sent`,
    `# directory ${plan.directory}`,
    `# hosts ${plan.hosts.join(' ') || '(none)'}; local server ${plan.local}`,
  ];
  let actions = 0;
  for (const set of plan.actionsets) {
    lines.push(`${set.name}:  # line ${set.line}, ${set.steps.length} action(s) in parallel`);
    for (const step of set.steps) {
      actions++;
      const where = step.action.remote ? 'remote' : 'local ';
      const target = step.action.remote ? `cheapest of ${step.target}` : step.target;
      lines.push(
        `  [${where}] ${step.action.command}  # line ${step.action.position.line}, on ${target}`,
      );
      if (step.requires.length > 0) {
        const files = step.requires.map((f) => {
          // Above the directory: kept in place by a rake-ts server (extension `cwd`), under
          // its base name on a base-protocol host (docs/client.md, "Wire names").
          const renamed =
            f.wireName === f.path
              ? ''
              : f.path.startsWith('../')
                ? ` (in place on a rake-ts server; as ${f.wireName} on a base-protocol host)`
                : ` as ${f.wireName}`;
          return `${f.path}${renamed}${f.present ? '' : ' (not present now)'}`;
        });
        // Run here, a local action reads its files in place: nothing is sent.
        const verb = step.target === HERE ? 'reads' : 'sends';
        lines.push(`           ${verb} ${files.join(', ')}`);
      }
    }
  }
  lines.push(`# ${plan.actionsets.length} actionset(s), ${actions} action(s)`);
  return `${lines.join('\n')}\n`;
}
