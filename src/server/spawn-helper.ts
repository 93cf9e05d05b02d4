/**
 * The spawn helper: a small long-lived Python process that starts jobs for the server with
 * `posix_spawn` (glibc: `clone(CLONE_VM|CLONE_VFORK)`), so starting `/bin/sh` no longer
 * forks the whole Node process (about 8 ms of server CPU per job against about 1.2 ms in the
 * server and 1 ms in the helper; see
 * docs/server.md, "Starting jobs").
 *
 * Conversation (docs/server.md has the full contract):
 * - argv[1], when given and not empty, is the `cgroup.procs` of a cgroup of the helper's own
 *   (src/server/containment.ts): it moves there first, and back there after each spawn.
 * - The helper writes `ready` once it listens to its stdin.
 * - stdin, one JSON object per line: `{"op":"run","id":N,"cwd":D,"cmd":C,"env":{…},"cg":P}`,
 *   `{"op":"kill","id":N}`, `{"op":"go","id":N}` or `{"op":"close","id":N,"stream":"o"|"e"}`.
 *   `env` is added to the helper's environment for that job; `cg`, when not null, is the
 *   `cgroup.procs` of the job's cgroup: the helper moves itself there just before it spawns,
 *   so the job's first process is inside before it runs a thing, and moves back after.
 * - A `run` with `"after": A` (a queued job, chained by the server's job slots) waits while
 *   job A runs and starts the moment A is reaped, right after A's `x` line; at once if A is
 *   not running (or already has a successor). `go` starts such a waiting job now (nothing
 *   for one that has started); `kill` of a waiting job forgets it and answers `f ID "given
 *   up before it started"`.
 * - For `run`, it makes two pipes, then spawns `/bin/sh -c C` in D, in a process group of
 *   its own, with stdin from /dev/null and stdout and stderr on the pipes' write ends, which
 *   it then closes: the job's processes hold the only ones. As make does, a
 *   command of plain words (no quotes, `$`, globs, redirections, operators, assignments,
 *   and not a shell builtin) is run without the shell, with `PWD` set to D; if that program
 *   cannot be started, the shell runs the command after all (and reports it as usual).
 * - stdout, one line per event: `s ID PID HOW` (started; HOW is how its first process got
 *   into the job's cgroup: `clone3`, `moved` or `none`, see below), `f ID "message"` (could
 *   not start; a JSON string), `x ID STATUS` (the shell ended; STATUS is 128 + n for signal
 *   n). Before it writes `x`, the helper kills whatever is left of the job's process group.
 *   And once, `m VERDICT MS`: what moving into a cgroup after a pause costs here (`cheap` or
 *   `costly`, and the move it judged by, in ms), measured while it was idle (see below).
 * - The job's output, between those lines: the helper reads the pipes (non-blocking, at
 *   most 64 KiB at a time) and writes what it read as frames, `o ID LEN` (stdout) or
 *   `e ID LEN` (stderr) + a newline + LEN bytes as the job wrote them; `o ID 0` / `e ID 0`
 *   marks the end of that stream (every process holding the pipe closed it), and may come
 *   before or after `x`. `close` asks the helper to close its end of a stream the server no
 *   longer wants (a process the job left kept it open past the job's end): whatever still
 *   writes to it gets EPIPE.
 * - The helper never blocks on its stdout: what the server has not read yet waits in the
 *   helper, and once that is 1 MiB (OUT_LIMIT) it stops reading every job's pipes until the
 *   server has taken half; a job that writes on then blocks on its full pipe. Requests are
 *   still read and jobs still started and reaped meanwhile.
 * - With a `cg`, the job is started by `clone3(CLONE_INTO_CGROUP)` (Linux 5.7): created inside
 *   its cgroup, a copy of the helper that makes itself the job (process group, signals,
 *   stdio) and execs; a pipe closed on exec tells the helper it started or why not. Where
 *   clone3 cannot (an older kernel, a seccomp filter), or with `RAKE_CLONE_INTO_CGROUP=0`,
 *   the helper moves itself into the cgroup, spawns, and moves back (`moved`): each move
 *   is a write to `cgroup.procs`, which waits for an RCU grace period once the hierarchy
 *   has been quiet (about 4 ms each here), on every job's path.
 * - Where such moves are cheap (cgroup2 mounted with `favordynmods`: no grace period), every
 *   job is moved and started by posix_spawn, which costs less CPU than clone3's copy of the
 *   helper. The helper finds out by timing moves of itself into its own cgroup while idle
 *   (`RAKE_CGROUP_MOVES=cheap|costly` tells it instead), and reports it with an `m` line.
 * - `kill` sends SIGKILL to the job's process group if the job has not ended yet.
 * - On end of stdin (the server exited, even by SIGKILL) it kills every job's process group
 *   and cgroup, then exits.
 * - Nothing a job sends can end the helper: any error while handling one request (a command
 *   that `posix_spawn` refuses, such as one holding a NUL byte, a line that is not JSON) is
 *   that job's `f` line, or a line on stderr when the request names no job. The helper
 *   serves every client's jobs: were it to die, all of them would die with it.
 */
export const SPAWN_HELPER_SOURCE = String.raw`
import collections, ctypes, itertools, json, os, re, selectors, signal, sys, time

# clone3(2) with CLONE_INTO_CGROUP (Linux 5.7): the job's first process is created inside its
# cgroup. Moving the helper in and out instead (a write to cgroup.procs each way) waits for
# an RCU grace period when the hierarchy has been quiet: 4-8 ms per job, on the job's path.
SYS_CLONE3 = 435
CLONE_INTO_CGROUP = 0x200000000
class CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        'flags', 'pidfd', 'child_tid', 'parent_tid', 'exit_signal', 'stack', 'stack_size',
        'tls', 'set_tid', 'set_tid_size', 'cgroup')]
class Stream:
    """A job's stdout or stderr, read from the helper's end of its pipe."""
    __slots__ = ('fd', 'job', 'tag')
    def __init__(self, fd, job, tag):
        self.fd, self.job, self.tag = fd, job, tag

# Most the helper reads from a job's output at once (a pipe holds 64 KiB).
OUT_CHUNK = 1 << 16
# Bytes waiting for the server past which jobs' output is no longer read (see flush).
OUT_LIMIT = 1 << 20

class NotStarted(Exception):
    """The job's process could not become the command: why, as the child said."""

try:
    _syscall = ctypes.CDLL(None, use_errno=True).syscall
    _syscall.restype = ctypes.c_long
except (OSError, AttributeError):
    _syscall = None

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

# When the helper last started a job in a cgroup (monotonic seconds).
last_start = [float('-inf')]
# Jobs that start within this long of each other are a burst: moving into their cgroups is
# cheap then (measured here: two moves cost 0.1-0.2 ms up to 20 ms after the last, 6-8 ms
# from 30 ms on: the hierarchy's lock stays in its fast mode that long), and a move plus
# posix_spawn (vfork) costs about 1 ms less than clone3's copy of the helper. A job after a
# pause (a compile, a sleep) is cloned into its cgroup; a burst's first move pays once.
BURST = 0.02
# When the helper last wrote to a cgroup.procs (monotonic seconds): a move after a pause
# (PROBE_QUIET) shows what moving costs here.
last_move = [float('-inf')]
# What moving into a cgroup costs after a pause, as measured here (docs/server.md, "Starting
# jobs"): None until known; 'costly' where the write waits for an RCU grace period (4-10 ms,
# most kernels as they boot); 'cheap' (0.2 ms) where the cgroup hierarchy favours dynamic
# changes (cgroup2 mounted with favordynmods, Linux 6.0+). Where moves are cheap, every job
# is moved and started by posix_spawn (vfork), which costs about 1.4 ms of CPU less than
# clone3's copy of the helper. RAKE_CGROUP_MOVES=cheap|costly sets it; otherwise the helper
# probes once it has been idle: PROBES moves of itself into its own cgroup, each after
# PROBE_QUIET without a move, all under MOVE_CHEAP for 'cheap' (a move by some other process
# just before can make one look cheap, hence more than one); the first costly one ends it
# (one wait of a grace period, once in the helper's life). A move after a pause that turns
# out costly later sets 'costly' for good.
MOVE_CHEAP = 0.001
PROBE_QUIET = 0.05
PROBES = 3

def main():
    home = sys.argv[1] if len(sys.argv) > 1 else ''
    if home:
        write_pid(home)
        last_move[0] = time.monotonic()
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
    # Running job id -> the run request (job, cwd, cmd, env, cg) chained to it: started the
    # moment that job is reaped, before its x line is even read by the server.
    successor = {}

    # What is still to be written to the server (stdout, non-blocking), oldest first, and
    # how many bytes that is. Lines and frames wait here rather than block the helper on a
    # slow server; past OUT_LIMIT the helper stops reading jobs' output (they then block on
    # their full pipes) until the server has taken half of it.
    out = collections.deque()
    queued = [0]
    os.set_blocking(1, False)
    # Whether jobs' output pipes are registered with the selector (not paused).
    reading = [True]
    # Each job's open output pipes by read end: the job's stdout (b'o') and stderr (b'e').
    streams = {}
    sel = selectors.DefaultSelector()

    def queue(data):
        out.append(data)
        queued[0] += len(data)

    def emit(line):
        queue((line + '\n').encode())

    def flush():
        while out:
            try:
                n = os.writev(1, list(itertools.islice(out, 0, 64)))
            except BlockingIOError:
                return
            except BrokenPipeError:
                # The server is gone: its end of stdin follows; nobody reads this any more.
                out.clear()
                queued[0] = 0
                return
            queued[0] -= n
            while n:
                head = out[0]
                if n >= len(head):
                    out.popleft()
                    n -= len(head)
                else:
                    out[0] = head[n:]
                    n = 0

    def pause(stop):
        # Stops reading jobs' output, or starts again.
        reading[0] = not stop
        for fd, stream in streams.items():
            if stop:
                sel.unregister(fd)
            else:
                sel.register(fd, selectors.EVENT_READ, stream)

    def forward(stream):
        # One read of a job's output pipe, forwarded as a frame: "o ID LEN" + LEN bytes;
        # LEN 0 marks the end of that stream.
        try:
            data = os.read(stream.fd, OUT_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b''
        queue(b'%s %d %d\n' % (stream.tag, stream.job, len(data)))
        if data:
            queue(data)
        else:
            close_stream(stream)

    def close_stream(stream):
        del streams[stream.fd]
        if reading[0]:
            sel.unregister(stream.fd)
        os.close(stream.fd)

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
            nxt = successor.pop(job, None)
            if nxt is not None:
                start(*nxt)

    def killcg(cg):
        try:
            with open(os.path.join(cg, 'cgroup.kill'), 'w') as f:
                f.write('1')
        except OSError:
            pass

    # Whether clone3 can start a job inside its cgroup here: None until the first try, then
    # True, or False (an old kernel, or a seccomp filter refusing clone3) for good.
    clone_into = [None]

    def exec_job(cmd, words, env, cwd, stdout, stderr, report):
        # In the child of clone3, which is a copy of this helper (a fork): make it the job,
        # as posix_spawn's attributes do, then exec. Nothing here may return.
        try:
            os.setpgid(0, 0)
            for s in defaults:
                signal.signal(s, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.dup2(devnull, 0)
            os.dup2(stdout, 1)
            os.dup2(stderr, 2)
            if words is not None and words[0] is not None:
                try:
                    os.execve(words[0], words[1], words[2])
                except OSError:
                    pass
            os.execve('/bin/sh', ['/bin/sh', '-c', cmd], env)
        except BaseException as e:
            try:
                msg = str(e) if isinstance(e, OSError) else '%s: %s' % (type(e).__name__, e)
                os.write(report, msg.encode('utf-8', 'replace')[:4000])
            finally:
                os._exit(127)

    def find_program(name, env):
        # What execvp would run, looked up here rather than in the clone3 child: there every
        # failed execve along PATH costs a copy of the helper's page tables (15 on a PATH of
        # 15 directories: about 1 ms per job). None when nothing on PATH can be run: the
        # shell then says so, as it would have.
        if '/' in name:
            return name
        for d in os.get_exec_path(env):
            path = os.path.join(d or '.', name)
            if os.access(path, os.X_OK) and not os.path.isdir(path):
                return path
        return None

    def spawn_into(cg, cmd, words, env, cwd, stdout, stderr):
        """The job's pid, started inside the cgroup whose cgroup.procs is cg; None when clone3
        cannot do it here, or the job comes in a burst (BURST): the caller then moves itself
        into the cgroup instead."""
        choice = os.environ.get('RAKE_CLONE_INTO_CGROUP', 'auto')
        if clone_into[0] is False or _syscall is None or choice == '0':
            return None
        if choice != '1' and (moves[0] == 'cheap' or time.monotonic() - last_start[0] < BURST):
            return None
        if words is not None:
            # (program, argv, environment), all made before the copy.
            words = (find_program(words[0], env), words, dict(env, PWD=cwd))
        try:
            cgfd = os.open(os.path.dirname(cg), os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise OSError(e.errno, "cannot open the job's cgroup %s: %s" % (cg, e.strerror))
        report_r, report_w = os.pipe()
        try:
            args = CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgfd)
            pid = _syscall(SYS_CLONE3, ctypes.byref(args), ctypes.sizeof(args))
            if pid == 0:
                exec_job(cmd, words, env, cwd, stdout, stderr, report_w)
            if pid < 0:
                err = ctypes.get_errno()
                if clone_into[0] is None:
                    # ENOSYS, EINVAL (no CLONE_INTO_CGROUP before 5.7), EPERM (seccomp): not here.
                    clone_into[0] = False
                    sys.stderr.write('spawn helper: clone3 into a cgroup failed (%s): moving into '
                                     'each job\'s cgroup instead\n' % os.strerror(err))
                    sys.stderr.flush()
                    return None
                raise OSError(err, 'clone3: %s' % os.strerror(err))
            clone_into[0] = True
            os.close(report_w)
            report_w = -1
            # The report pipe closes on exec (EOF: started) or carries why the job could not be.
            why = b''
            while True:
                chunk = os.read(report_r, 4096)
                if not chunk:
                    break
                why += chunk
            if why:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
                raise NotStarted(why.decode('utf-8', 'replace'))
            return pid
        finally:
            os.close(cgfd)
            os.close(report_r)
            if report_w >= 0:
                os.close(report_w)

    def run(job, cwd, cmd, extra, cg):
        pipes = []  # (read end, write end) of stdout, then of stderr
        moved = False
        failed = None
        try:
            env = dict(os.environ, **extra)
            # Both ends close on exec (os.pipe): the job gets its write ends as fds 1 and 2
            # and nothing else, so no other job holds them open.
            pipes.append(os.pipe())
            pipes.append(os.pipe())
            out_w, err_w = pipes[0][1], pipes[1][1]
            os.chdir(cwd)
            pid = None
            words = plain_words(cmd)
            if cg:
                pid = spawn_into(cg, cmd, words, env, cwd, out_w, err_w)
            spawn = dict(setpgroup=0, setsigmask=(), setsigdef=defaults,
                         file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0),
                                       (os.POSIX_SPAWN_DUP2, out_w, 1),
                                       (os.POSIX_SPAWN_DUP2, err_w, 2)])
            if cg and pid is None:
                began = time.monotonic()
                try:
                    write_pid(cg)
                except OSError as e:
                    raise OSError(e.errno, "cannot enter the job's cgroup %s: %s" % (cg, e.strerror))
                moved = True
                took = time.monotonic() - began
                if (moves[0] == 'cheap' and began - last_move[0] >= PROBE_QUIET
                        and took >= 2 * MOVE_CHEAP):
                    judge('costly', took)
                last_move[0] = time.monotonic()
            if pid is None and words is not None:
                # As make does: a command of plain words needs no shell. Anything the
                # shell would report (not found, not executable) goes through it below.
                try:
                    pid = os.posix_spawnp(words[0], words, dict(env, PWD=cwd), **spawn)
                except OSError:
                    pid = None
            if pid is None:
                pid = os.posix_spawn('/bin/sh', ['/bin/sh', '-c', cmd], env, **spawn)
        except Exception as e:
            # OSError (no such directory, E2BIG, EMFILE), ValueError (an embedded NUL byte),
            # UnicodeEncodeError: this job's failure, never the helper's.
            failed = (str(e) if isinstance(e, (OSError, NotStarted))
                      else '%s: %s' % (type(e).__name__, e))
        finally:
            if moved:
                # Back home before any word to the server, which kills the job's cgroup as
                # soon as it hears the job failed or ended: that must never reach the helper.
                write_pid(home)
                last_move[0] = time.monotonic()
            # Only the job writes to its output: its end is the end of its output.
            for _, w in pipes:
                os.close(w)
            os.chdir('/')
        if failed is not None:
            for r, _ in pipes:
                os.close(r)
            emit('f %d %s' % (job, json.dumps(failed)))
            return
        pid_of[job] = pid
        id_of[pid] = job
        if cg:
            cg_of[job] = os.path.dirname(cg)
            last_start[0] = time.monotonic()
        emit('s %d %d %s' % (job, pid, 'moved' if moved else 'clone3' if cg else 'none'))
        for (r, _), tag in zip(pipes, (b'o', b'e')):
            os.set_blocking(r, False)
            stream = Stream(r, job, tag)
            streams[r] = stream
            if reading[0]:
                sel.register(r, selectors.EVENT_READ, stream)

    forced = os.environ.get('RAKE_CGROUP_MOVES')
    moves = [forced if forced in ('cheap', 'costly') else None]
    # No probe without cgroups, or where RAKE_CLONE_INTO_CGROUP fixes the way in.
    probing = [bool(home) and moves[0] is None
               and os.environ.get('RAKE_CLONE_INTO_CGROUP', 'auto') not in ('0', '1')]
    probes = [0]

    def judge(verdict, took):
        moves[0] = verdict
        probing[0] = False
        emit('m %s %.3f' % (verdict, took * 1000))

    def probe():
        began = time.monotonic()
        try:
            write_pid(home)
        except OSError:
            probing[0] = False
            return
        took = time.monotonic() - began
        last_move[0] = time.monotonic()
        if took >= MOVE_CHEAP:
            judge('costly', took)
            return
        probes[0] += 1
        if probes[0] >= PROBES:
            judge('cheap', took)

    def start(job, cwd, cmd, extra, cg):
        # Never raises: a request that cannot run is that job's f line.
        try:
            run(job, cwd, cmd, extra, cg)
        except Exception as e:
            if job not in pid_of:
                emit('f %d %s' % (job, json.dumps('bad request: %s: %s' % (type(e).__name__, e))))

    def waiting(job):
        # The job this one is chained to, if it waits for one.
        for before, req in successor.items():
            if req[0] == job:
                return before
        return None

    def handle(line):
        job = None
        try:
            msg = json.loads(line)
            job = msg.get('id')
            if msg['op'] == 'run':
                req = (job, msg['cwd'], msg['cmd'], msg.get('env') or {}, msg.get('cg'))
                after = msg.get('after')
                if after is not None and after in pid_of and after not in successor:
                    successor[after] = req
                else:
                    run(*req)
            elif msg['op'] == 'go':
                before = waiting(job)
                if before is not None:
                    start(*successor.pop(before))
            elif msg['op'] == 'kill':
                if job in pid_of:
                    killpg(pid_of[job])
                else:
                    before = waiting(job)
                    if before is not None:
                        del successor[before]
                        emit('f %d %s' % (job, json.dumps('given up before it started')))
            elif msg['op'] == 'close':
                # The server gave up on this output (a descendant kept it open past the
                # job's end): whatever still writes to it gets EPIPE.
                tag = msg['stream'].encode()
                for stream in [s for s in streams.values() if s.job == job and s.tag == tag]:
                    close_stream(stream)
        except Exception as e:
            if isinstance(job, int) and job not in pid_of:
                emit('f %d %s' % (job, json.dumps('bad request: %s: %s' % (type(e).__name__, e))))
            else:
                sys.stderr.write('spawn helper: bad request: %s: %s\n' % (type(e).__name__, e))
                sys.stderr.flush()

    sel.register(stdin, selectors.EVENT_READ, 'in')
    sel.register(wake_r, selectors.EVENT_READ, 'child')
    emit('ready')
    flush()
    pending = b''
    writing = False
    while True:
        timeout = None
        if probing[0]:
            timeout = max(0.0, last_move[0] + PROBE_QUIET - time.monotonic())
        events = sel.select(timeout)
        if not events and probing[0]:
            if time.monotonic() - last_move[0] >= PROBE_QUIET:
                probe()
        for key, _ in events:
            if key.data == 'child':
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                reap()
                continue
            if key.data == 'out':
                continue
            if isinstance(key.data, Stream):
                # A stream closed earlier in this round may have left its fd number to a
                # new job's pipe: only the stream registered now is read.
                if streams.get(key.fd) is key.data and reading[0]:
                    forward(key.data)
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
                # Each answer (s, f) as soon as it is known, not after the whole batch.
                flush()
        # A SIGCHLD that arrived while a request was being handled.
        reap()
        flush()
        if queued[0] >= OUT_LIMIT and reading[0]:
            pause(True)
        elif queued[0] <= OUT_LIMIT // 2 and not reading[0]:
            pause(False)
        if bool(out) != writing:
            writing = bool(out)
            if writing:
                sel.register(1, selectors.EVENT_WRITE, 'out')
            else:
                sel.unregister(1)

main()
`;
