"""Fresh processes for the tests in a fraction of a second: a Python that has imported
TensorFlow, Keras and the scripts once, and forks a child for each process a test starts.

A test whose promise is about a process (a kill, Ctrl-C, a full disk, an exit status)
needs a process of its own, but a new Python spends ~4 s importing TensorFlow before the
script's first line and ~1 s exiting. The child of a fork starts where the import ended,
with nothing run yet: it runs the script as `python script.py ARGS` would (`__main__`,
sys.argv, the environment, the working folder, stdin from /dev/null, stdout and stderr
where the test asked), and its pid takes signals and kills like any process's. Its exit
status comes back as Popen's returncode (negative: the signal that ended it).

Where the promise is the first lines a user sees of a new Python (TensorFlow's own start-up
lines, then ours) or needs other import-time settings, the tests exec a real Python
(conftest.run_process). `ProcessServer.popen` refuses an environment whose
import-time variables differ from the server's, rather than run it as if they applied.
"""

import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

# Read once, while TensorFlow is imported: a child cannot change them.
IMPORT_TIME = ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS", "CUDA_VISIBLE_DEVICES",
               "PYTHONUNBUFFERED", "PYTHONPATH", "TF_XLA_FLAGS", "OMP_NUM_THREADS")
STATUS = struct.Struct("i")


class ForkedProcess:
    """What the tests use of subprocess.Popen, for a child of the server."""

    def __init__(self, args, pid, status, stdout, stderr):
        self.args, self.pid, self.returncode = args, pid, None
        self._status = status  # Read end of a pipe: the server writes the exit status.
        self.stdout, self.stderr = stdout, stderr

    def poll(self):
        if self.returncode is None:
            ready, _, _ = select.select([self._status], [], [], 0)
            if ready:
                self._read_status()
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            ready, _, _ = select.select([self._status], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._read_status()
        return self.returncode

    def _read_status(self):
        data = os.read(self._status, STATUS.size)
        os.close(self._status)
        if len(data) != STATUS.size:
            raise RuntimeError("the process server died before the child's exit status")
        self.returncode = STATUS.unpack(data)[0]

    def communicate(self, timeout=None):
        """Everything the child writes to its pipes until it exits, as Popen's does."""
        streams = [stream for stream in (self.stdout, self.stderr) if stream is not None]
        texts = {id(stream): [] for stream in streams}
        readers = [threading.Thread(target=lambda s=stream: texts[id(s)].append(s.read()),
                                    daemon=True) for stream in streams]
        for reader in readers:
            reader.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for reader in readers:
            reader.join(None if deadline is None else max(0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0, deadline - time.monotonic()))
        output = ["".join(texts[id(stream)]) if stream is not None else None
                  for stream in (self.stdout, self.stderr)]
        for stream in streams:
            stream.close()
        return tuple(output)

    def send_signal(self, signum):
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class ProcessServer:
    """Start the server (about as long as one Python importing TensorFlow) and fork
    processes from it with `popen` and `run`."""

    def __init__(self, root, env):
        self.root, self.env = str(root), dict(env)
        ours, theirs = socket.socketpair()
        self._socket = ours
        self._lock = threading.Lock()
        self._server = subprocess.Popen(
            [sys.executable, __file__, str(theirs.fileno()), self.root],
            pass_fds=[theirs.fileno()], env=self.env, cwd=self.root, stdin=subprocess.DEVNULL)
        theirs.close()
        if self._socket.recv(5) != b"ready":
            raise RuntimeError("the process server did not start")

    def popen(self, argv, stdout=None, stderr=None, env=None, cwd=None, preexec=None,
              text=True):
        """Like Popen([sys.executable, *argv], ...): argv is a script's path and its
        arguments, "-m", a module and its, or "-c", code and its. stdout and stderr: PIPE,
        DEVNULL, STDOUT (stderr only), an open file, or None (the test's own)."""
        env = dict(self.env if env is None else env)
        changed = [name for name in IMPORT_TIME if env.get(name) != self.env.get(name)]
        if changed:
            raise ValueError(f"{changed} differ from the server's: exec a real Python")
        sent, ours = [], []

        def stream(choice, default):
            if choice is subprocess.PIPE:
                read, write = os.pipe()
                sent.append(write)
                ours.append(write)
                return open(read, "r" if text else "rb", encoding="utf-8" if text else None)
            if choice is subprocess.DEVNULL:
                sent.append(os.open(os.devnull, os.O_WRONLY))
                ours.append(sent[-1])
            elif choice is None:
                sent.append(default)
            else:
                sent.append(choice.fileno())
            return None

        out = stream(stdout, 1)
        if stderr is subprocess.STDOUT:
            sent.append(sent[-1])
            err = None
        else:
            err = stream(stderr, 2)
        status_read, status_write = os.pipe()
        sent.append(status_write)
        ours.append(status_write)
        request = pickle.dumps({"argv": [str(part) for part in argv], "env": env,
                                "cwd": str(cwd or self.root), "preexec": preexec})
        try:
            with self._lock:
                socket.send_fds(self._socket, [struct.pack("Q", len(request)) + request],
                                sent)
                pid = STATUS.unpack(self._receive(STATUS.size))[0]
        finally:
            for fd in ours:
                os.close(fd)
        return ForkedProcess([sys.executable, *map(str, argv)], pid, status_read, out, err)

    def run(self, argv, timeout=600, env=None, cwd=None, preexec=None):
        """Like subprocess.run([sys.executable, *argv], capture_output=True, text=True)."""
        process = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                             cwd=cwd, preexec=preexec)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def _receive(self, size):
        data = b""
        while len(data) < size:
            chunk = self._socket.recv(size - len(data))
            if not chunk:
                raise RuntimeError("the process server died")
            data += chunk
        return data

    def close(self):
        self._socket.close()  # The server exits when its socket closes.
        self._server.wait(timeout=60)


def files_at_most(size):
    """A preexec for popen (picklable): every file the child writes stops at `size` bytes,
    like a full disk; writes past it fail with EFBIG, in Python and TensorFlow's C++ alike.
    The limit is the soft one, so the child can lift it to save coverage data on exit."""
    import functools
    return functools.partial(_limit_file_size, size)


def _limit_file_size(size):
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # Fail the write, don't kill.
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))


# --- The server ---------------------------------------------------------------------------


def _serve(connection, root):
    # [root, tests/]: the scripts, and this module for the preexecs a request may pickle.
    assert sys.path[0] == os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, root)
    # Everything a script imports, imported once; nothing run (no op, no thread pool), so a
    # fork's child is as a new process after its imports.
    import importlib
    for name in ("numpy", "tensorflow", "keras", "matplotlib.figure", "imageio.v3", "PIL.Image",
                 "train_fashion_mnist", "train_faces", "train_animals", "train_artworks",
                 "common.quality", "common.generate"):
        importlib.import_module(name)
    connection.sendall(b"ready")
    children = {}  # pidfd -> (pid, status pipe)
    while True:
        ready, _, _ = select.select([connection, *children], [], [])
        for pidfd in [fd for fd in ready if fd in children]:
            pid, status = children.pop(pidfd)
            _, wait_status = os.waitpid(pid, 0)
            try:
                os.write(status, STATUS.pack(os.waitstatus_to_exitcode(wait_status)))
            except OSError:
                pass  # The test let go of it (its process gone): nobody to tell.
            os.close(status)
            os.close(pidfd)
        if connection in ready:
            header, fds, _, _ = socket.recv_fds(connection, 8, 4)
            if not header:
                return  # The tests are done.
            size = struct.unpack("Q", header)[0]
            request = b""
            while len(request) < size:
                chunk = connection.recv(size - len(request))
                if not chunk:
                    return  # The tests went mid-request.
                request += chunk
            request = pickle.loads(request)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                connection.close()
                for pidfd, (_, status) in children.items():  # Its siblings'.
                    os.close(pidfd)
                    os.close(status)
                _child(request, *fds)  # Never returns.
            os.close(fds[0])  # The child's stdout and stderr are the child's alone.
            os.close(fds[1])
            children[os.pidfd_open(pid)] = pid, fds[2]
            connection.sendall(STATUS.pack(pid))


def _child(request, stdout, stderr, status):
    """Become `python ARGV` with the request's environment, folder and streams."""
    import runpy
    import traceback
    os.close(status)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in {null, stdout, stderr} - {0, 1, 2}:
        os.close(fd)
    # A terminal's Python: Ctrl-C raises KeyboardInterrupt, other signals do their default.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    del sys.path[:2]  # The server's own: the repository and tests/ (see _serve).
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    code = 1
    try:
        if request["preexec"] is not None:
            request["preexec"]()
        argv = request["argv"]
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path.insert(0, os.getcwd())  # As `python -m` puts it.
            sys.modules.pop(argv[1], None)  # Else runpy warns that it was imported already.
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        elif argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            sys.path.insert(0, "")  # As `python -c` puts it: the working folder.
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
        code = 0
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT  # Python dies of SIGINT here: below.
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        import atexit
        import resource
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # Room for coverage data.
        atexit._run_exitfuncs()  # What Python runs at exit (coverage.py saves its data).
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
        os._exit(code & 0xFF)


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])), sys.argv[2])
