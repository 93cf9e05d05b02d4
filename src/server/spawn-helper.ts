/**
 * The spawn helper: a small long-lived Python process that starts jobs for the server with
 * `posix_spawn` (glibc: `clone(CLONE_VM|CLONE_VFORK)`), so starting `/bin/sh` no longer
 * forks the whole Node process (about 8 ms of server CPU per job against about 1.2 ms in the
 * server and 1 ms in the helper; see
 * docs/server.md, "Starting jobs").
 *
 * Conversation (docs/server.md has the full contract):
 * - argv[1] is a Unix socket the server listens on, in a directory only this user can enter.
 * - argv[2], when not empty, is the `cgroup.procs` of a cgroup of the helper's own
 *   (src/server/containment.ts): it moves there first, and back there after each spawn.
 * - The helper writes `ready` once it listens to its stdin.
 * - stdin, one JSON object per line: `{"op":"run","id":N,"cwd":D,"cmd":C,"env":{…},"cg":P}`
 *   or `{"op":"kill","id":N}`. `env` is added to the helper's environment for that job;
 *   `cg`, when not null, is the `cgroup.procs` of the job's cgroup: the helper moves itself
 *   there just before it spawns, so the job's first process is inside before it runs a
 *   thing, and moves back after.
 * - For `run`, it connects to the socket twice, sends `o` or `e` + the id in 15 digits + a
 *   newline on each, then spawns `/bin/sh -c C` in D, in a process group of its own, with
 *   stdin from /dev/null and stdout and stderr on those two connections. As make does, a
 *   command of plain words (no quotes, `$`, globs, redirections, operators, assignments,
 *   and not a shell builtin) is run without the shell, with `PWD` set to D; if that program
 *   cannot be started, the shell runs the command after all (and reports it as usual).
 * - stdout, one line per event: `s ID PID` (started), `f ID "message"` (could not start; a
 *   JSON string), `x ID STATUS` (the shell ended; STATUS is 128 + n for signal n). Before
 *   it writes `x`, the helper kills whatever is left of the job's process group.
 * - `kill` sends SIGKILL to the job's process group if the job has not ended yet.
 * - On end of stdin (the server exited, even by SIGKILL) it kills every job's process group
 *   and cgroup, then exits.
 * - Nothing a job sends can end the helper: any error while handling one request (a command
 *   that `posix_spawn` refuses, such as one holding a NUL byte, a line that is not JSON) is
 *   that job's `f` line, or a line on stderr when the request names no job. The helper
 *   serves every client's jobs: were it to die, all of them would die with it.
 */
export const SPAWN_HELPER_SOURCE = String.raw`
import json, os, re, selectors, signal, socket, sys

# Words the shell would treat as nothing but themselves: no quoting, expansion, globbing,
# redirection, operators, assignments or comments.
PLAIN = re.compile(r'[A-Za-z0-9_./+,:@%=-]+(?: +[A-Za-z0-9_./+,:@%=-]+)*')
# dash's builtins and keywords: a command starting with one keeps its shell.
SHELL_WORDS = set(
    '. : [ alias bg break cd chdir command continue echo eval exec exit export false fc fg '
    'getopts hash jobs kill local printf pwd read readonly return set shift test times trap '
    'true type ulimit umask unalias unset wait case do done elif else esac fi for if in then '
    'until while'.split())

def plain_words(cmd):
    cmd = cmd.strip(' ')
    if not PLAIN.fullmatch(cmd):
        return None
    words = cmd.split()
    if '=' in words[0] or words[0] in SHELL_WORDS:
        return None
    return words

def write_pid(procs):
    with open(procs, 'w') as f:
        f.write(str(os.getpid()))

def main():
    sock_path = sys.argv[1]
    home = sys.argv[2] if len(sys.argv) > 2 else ''
    if home:
        write_pid(home)
    # Neither a terminal's Ctrl-C nor a hangup may take the jobs' parent away: the helper
    # lives exactly as long as its stdin.
    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    # Signals a job starts with at their default action, whatever Python or the server set.
    defaults = [s for s in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGHUP,
                            signal.SIGTERM, signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1,
                            signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGTSTP)]
    devnull = os.open(os.devnull, os.O_RDONLY)
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    pid_of = {}  # job id -> pid, until the job is reaped
    id_of = {}   # pid -> job id
    cg_of = {}   # job id -> its cgroup directory, until the job is reaped

    def emit(line):
        data = (line + '\n').encode()
        while data:
            n = os.write(1, data)
            data = data[n:]

    def killpg(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    def reap():
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            killpg(pid)
            job = id_of.pop(pid, None)
            if job is None:
                continue
            del pid_of[job]
            cg_of.pop(job, None)
            code = os.waitstatus_to_exitcode(status)
            emit('x %d %d' % (job, code if code >= 0 else 128 - code))

    def killcg(cg):
        try:
            with open(os.path.join(cg, 'cgroup.kill'), 'w') as f:
                f.write('1')
        except OSError:
            pass

    def run(job, cwd, cmd, extra, cg):
        conns = []
        moved = False
        failed = None
        try:
            env = dict(os.environ, **extra)
            for tag in ('o', 'e'):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conns.append(c)
                c.connect(sock_path)
                c.sendall(('%s%015d\n' % (tag, job)).encode())
            os.chdir(cwd)
            spawn = dict(setpgroup=0, setsigmask=(), setsigdef=defaults,
                         file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                       (os.POSIX_SPAWN_DUP2, conns[0].fileno(), 1),
                                       (os.POSIX_SPAWN_DUP2, conns[1].fileno(), 2)])
            if cg:
                try:
                    write_pid(cg)
                except OSError as e:
                    raise OSError(e.errno, "cannot enter the job's cgroup %s: %s" % (cg, e.strerror))
                moved = True
            pid = None
            words = plain_words(cmd)
            if words is not None:
                # As make does: a command of plain words needs no shell. Anything the
                # shell would report (not found, not executable) goes through it below.
                try:
                    pid = os.posix_spawnp(words[0], words, dict(env, PWD=cwd), **spawn)
                except OSError:
                    pid = None
            if pid is None:
                pid = os.posix_spawn('/bin/sh', ['/bin/sh', '-c', cmd], env, **spawn)
        except Exception as e:
            # OSError (no such directory, E2BIG), ValueError (an embedded NUL byte),
            # UnicodeEncodeError: this job's failure, never the helper's.
            failed = str(e) if isinstance(e, OSError) else '%s: %s' % (type(e).__name__, e)
        finally:
            if moved:
                # Back home before any word to the server, which kills the job's cgroup as
                # soon as it hears the job failed or ended: that must never reach the helper.
                write_pid(home)
            for c in conns:
                c.close()
            os.chdir('/')
        if failed is not None:
            emit('f %d %s' % (job, json.dumps(failed)))
            return
        pid_of[job] = pid
        id_of[pid] = job
        if cg:
            cg_of[job] = os.path.dirname(cg)
        emit('s %d %d' % (job, pid))

    def handle(line):
        job = None
        try:
            msg = json.loads(line)
            job = msg.get('id')
            if msg['op'] == 'run':
                run(job, msg['cwd'], msg['cmd'], msg.get('env') or {}, msg.get('cg'))
            elif msg['op'] == 'kill' and job in pid_of:
                killpg(pid_of[job])
        except Exception as e:
            if isinstance(job, int) and job not in pid_of:
                emit('f %d %s' % (job, json.dumps('bad request: %s: %s' % (type(e).__name__, e))))
            else:
                sys.stderr.write('spawn helper: bad request: %s: %s\n' % (type(e).__name__, e))
                sys.stderr.flush()

    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, 'in')
    sel.register(wake_r, selectors.EVENT_READ, 'child')
    emit('ready')
    pending = b''
    while True:
        for key, _ in sel.select():
            if key.data == 'child':
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                reap()
                continue
            try:
                chunk = os.read(stdin, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                for pid in list(id_of):
                    killpg(pid)
                for cg in cg_of.values():
                    killcg(cg)
                return
            pending += chunk
            lines = pending.split(b'\n')
            pending = lines.pop()
            for line in lines:
                handle(line)
        # A SIGCHLD that arrived while a request was being handled.
        reap()

main()
`;
