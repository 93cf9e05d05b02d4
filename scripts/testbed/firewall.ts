/**
 * Dropping a host's incoming SYNs, so connecting to it times out as it would to a host that
 * has vanished from the network (no RST, unlike a dead server on a live host). iptables when
 * installed, nft otherwise; `scripts/testbed/install-tools.sh` installs iptables.
 *
 * In netns mode the rule lives inside the host's own namespace and goes away with it. In
 * loopback mode it lives in the root namespace, tagged with the test bed's prefix so teardown
 * (and a later run's stale cleanup) can find and remove exactly its own rules.
 */
import { hasTool, inNamespace, runCommand, TestbedError } from './exec.js';
import type { Support } from './netns.js';

/** The firewall tools available here, best first. */
export function firewallTool(): 'iptables' | 'nft' | undefined {
  if (hasTool('iptables')) return 'iptables';
  if (hasTool('nft')) return 'nft';
  return undefined;
}

/** The iptables comment and nft table that mark a test bed's rules in the root namespace. */
export function firewallTag(prefix: string): { comment: string; table: string } {
  return { comment: `rk-testbed-${prefix}`, table: `rktestbed_${prefix}` };
}

/** Whether SYN drops can be done for hosts in `ns` (root namespace when undefined). */
export function synDropSupport(ns: string | undefined): Support {
  const tool = firewallTool();
  if (tool === undefined) {
    return {
      supported: false,
      reason:
        'neither iptables nor nft is installed (scripts/testbed/install-tools.sh installs iptables)',
    };
  }
  const probe = runCommand(
    ...split(
      inNamespace(
        ns,
        tool === 'iptables' ? ['iptables', '-w', '5', '-S', 'INPUT'] : ['nft', 'list', 'tables'],
      ),
    ),
  );
  if (!probe.ok)
    return { supported: false, reason: `${tool} does not work here: ${probe.message}` };
  return { supported: true, via: ns === undefined ? `${tool} (root namespace, lo)` : tool };
}

/** Turns SYN dropping to `address:port` on and off; idempotent both ways. */
export class SynDropper {
  #on = false;

  constructor(
    private readonly tool: 'iptables' | 'nft',
    private readonly ns: string | undefined,
    private readonly address: string,
    private readonly port: number,
    private readonly prefix: string,
  ) {}

  set(on: boolean): void {
    if (on === this.#on) return;
    for (const argv of on ? this.#addCommands() : this.#removeCommands()) {
      const result = runCommand(...split(inNamespace(this.ns, argv)));
      if (!result.ok) throw new TestbedError(`dropSyn(${on}): ${result.message}`);
    }
    this.#on = on;
  }

  #iptablesRule(): string[] {
    const rule = ['-d', this.address, '-p', 'tcp', '--syn', '--dport', String(this.port)];
    if (this.ns === undefined) {
      rule.unshift('-i', 'lo');
      rule.push('-m', 'comment', '--comment', firewallTag(this.prefix).comment);
    }
    return [...rule, '-j', 'DROP'];
  }

  #table(): string {
    return this.ns === undefined ? firewallTag(this.prefix).table : 'rktestbed';
  }

  #chain(): string {
    return `syn_${this.address.replaceAll('.', '_')}_${this.port}`;
  }

  #addCommands(): string[][] {
    if (this.tool === 'iptables') {
      return [['iptables', '-w', '5', '-I', 'INPUT', '1', ...this.#iptablesRule()]];
    }
    const table = this.#table();
    const chain = this.#chain();
    return [
      ['nft', 'add', 'table', 'ip', table],
      ['nft', `add chain ip ${table} ${chain} { type filter hook input priority -10 ; }`],
      [
        'nft',
        `add rule ip ${table} ${chain} ip daddr ${this.address} tcp dport ${this.port} tcp flags & (syn | ack) == syn drop`,
      ],
    ];
  }

  #removeCommands(): string[][] {
    if (this.tool === 'iptables') {
      return [['iptables', '-w', '5', '-D', 'INPUT', ...this.#iptablesRule()]];
    }
    const where = ['ip', this.#table(), this.#chain()];
    return [
      ['nft', 'flush', 'chain', ...where],
      ['nft', 'delete', 'chain', ...where],
    ];
  }
}

/** Removes every root-namespace rule tagged with `prefix` (loopback mode's SYN drops). */
export function removeTaggedRules(prefix: string): void {
  const { comment, table } = firewallTag(prefix);
  if (hasTool('iptables')) {
    const listed = runCommand('iptables', ['-w', '5', '-S', 'INPUT']);
    if (listed.ok) {
      for (const line of listed.stdout.split('\n')) {
        if (!line.startsWith('-A INPUT ') || !line.includes(comment)) continue;
        const args = line
          .slice('-A INPUT '.length)
          .split(' ')
          .filter((word) => word !== '');
        runCommand('iptables', ['-w', '5', '-D', 'INPUT', ...args.map(unquote)]);
      }
    }
  }
  if (hasTool('nft')) runCommand('nft', ['delete', 'table', 'ip', table]);
}

function unquote(word: string): string {
  return word.startsWith('"') && word.endsWith('"') ? word.slice(1, -1) : word;
}

function split(argv: readonly string[]): [string, string[]] {
  const [command, ...args] = argv;
  if (command === undefined) throw new Error('empty command');
  return [command, args];
}
