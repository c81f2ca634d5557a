"""Processes of the benchmarks: measured client runs and the servers they hit.

A client run is one process pinned to the client core; its CPU time (user +
sys) and peak RSS come from wait4(2) in bench/lib/launch.c, so they cover the
whole process and every thread it started, and nothing else.
"""
import os
import re
import resource
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field


# ---------------------------------------------------------------------------
# Measured runs
# ---------------------------------------------------------------------------

@dataclass
class Run:
    argv: list
    rc: int
    cpu: float          # user + sys seconds
    wall: float         # seconds from spawn to reaped
    maxrss_kib: int
    stdout: str
    stderr: str
    timed_out: bool
    result: dict = field(default_factory=dict)  # the RESULT line's k=v
    stopped: bool = False  # ended by the harness's stop_when, on purpose
    in_flight: int = None  # connections seen by the stop_when, if any

    def failure(self):
        """A one-line reason this run cannot be used, or None."""
        if self.timed_out:
            tail = self.stderr.strip().splitlines()
            return "timed out" + (f" (its last words: {tail[-1][:160]})" if tail else "")
        if self.stopped and self.rc == -signal.SIGTERM:
            return None
        if self.rc < 0:
            return f"killed by signal {-self.rc}"
        if self.rc != 0 or not self.result:
            tail = (self.stderr.strip() or self.stdout.strip()).splitlines()
            return f"exit {self.rc}" + (f": {tail[-1][:160]}" if tail else "")
        return None


RESULT_RE = re.compile(r"^RESULT((?: \w+=\S+)+)\s*$", re.M)


def parse_result(text):
    """The k=v pairs of the last 'RESULT k=v ...' line (numbers as floats)."""
    found = RESULT_RE.findall(text)
    if not found:
        return {}
    pairs = (kv.split("=", 1) for kv in found[-1].split())
    out = {}
    for k, v in pairs:
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def raise_nofile():
    """Let this process and its children open as many sockets as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_measured(launcher, argv, core, timeout, env=None, cwd=None, stop_when=None):
    """Run argv pinned to one core through the launcher (bench/lib/launch.c),
    which forks it, waits for it with wait4 and reports its rusage.
    stop_when, if given, is polled while the client runs; once it returns
    true the client gets SIGTERM (the launcher ignores it and reports)."""
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as usage:
        proc = subprocess.Popen([launcher, str(core), usage.name] + argv,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, cwd=cwd, start_new_session=True)
        deadline = time.monotonic() + timeout
        stopped = False
        try:
            while stop_when and not stopped and proc.poll() is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(argv, timeout)
                if stop_when():
                    os.killpg(proc.pid, signal.SIGTERM)
                    stopped = True
                else:
                    time.sleep(0.25)
            proc.wait(max(deadline - time.monotonic(), 0.1))
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the client
            proc.wait()
            timed_out = True
        except BaseException:  # interrupted: leave nothing running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        fields = usage.read().split()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if len(fields) == 5:
        user_us, sys_us, maxrss, wall_us, rc = (int(x) for x in fields)
    else:  # the launcher itself was killed
        user_us = sys_us = maxrss = wall_us = 0
        rc = proc.returncode
    return Run(argv=argv, rc=rc, cpu=(user_us + sys_us) / 1e6, wall=wall_us / 1e6,
               maxrss_kib=maxrss, stdout=stdout, stderr=stderr, timed_out=timed_out,
               result=parse_result(stdout), stopped=stopped)


def established(port):
    """How many client-side TCP connections to 127.0.0.1:port are established."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"dport = :{port}"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    return out.count("\n")


class InFlight:
    """A stop_when for run_measured: true `settle` seconds after `want`
    connections to port are established, or after their number stopped
    growing for `stall` seconds. `reached` is the most seen."""

    def __init__(self, port, want, settle=0.5, stall=15.0):
        self.port, self.want, self.settle, self.stall = port, want, settle, stall
        self.reached, self.since, self.done_at = 0, None, None

    def __call__(self):
        now = time.monotonic()
        count = established(self.port)
        if self.since is None or count > self.reached:
            self.reached, self.since = max(count, self.reached), now
        if self.done_at is None and (count >= self.want or now - self.since > self.stall):
            self.done_at = now
        return self.done_at is not None and now - self.done_at >= self.settle


# ---------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class ServerError(Exception):
    pass


class Nginx:
    """nginx with bench/nginx/nginx.conf.in on a free loopback port."""

    ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"

    def __init__(self, template, body_file, core, nofile):
        self.template, self.body_file = template, body_file
        self.core, self.nofile = core, nofile
        self.proc = self.dir = None
        self.port = None

    def start(self):
        body = open(self.body_file).read().strip()
        if any(ch in body for ch in "'\\$"):
            raise ServerError(f"{self.body_file}: no ' \\ or $ allowed")
        self.dir = tempfile.mkdtemp(prefix="avideo-bench-nginx-")
        self.port = free_port()
        conf = open(self.template).read()
        for key, value in (("DIR", self.dir), ("PORT", self.port),
                           ("BODY", body), ("ECHO_MODULE", self.ECHO_MODULE),
                           ("NOFILE", self.nofile)):
            conf = conf.replace(f"@{key}@", str(value))
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        os.chmod(self.dir, 0o755)  # nginx's workers (nobody) read /big/ from it
        os.makedirs(os.path.join(self.dir, "big"))
        with open(os.path.join(self.dir, "big", "1g.bin"), "wb") as f:
            f.truncate(1 << 30)  # sparse: no disk, and the page cache holds zeros
        os.chmod(os.path.join(self.dir, "big", "1g.bin"), 0o644)
        log = open(os.path.join(self.dir, "stderr.log"), "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(self.core), "nginx", "-p", self.dir, "-c",
             path, "-e", os.path.join(self.dir, "error.log")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        if not wait_listening(self.port, self.proc):
            tail = self._log_tail()  # before stop() removes the directory
            self.stop()
            raise ServerError("nginx did not start: " + tail)
        return self

    def url(self, path="/video"):
        return f"http://127.0.0.1:{self.port}{path}"

    def _log_tail(self):
        for name in ("stderr.log", "error.log"):
            try:
                lines = open(os.path.join(self.dir, name)).read().strip()
            except OSError:
                continue
            if lines:
                return lines.splitlines()[-1]
        return "no log"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: /hold/ never ends
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.dir:
            subprocess.run(["rm", "-rf", self.dir], check=False)
            self.dir = None


class Emulator:
    """avideo-server on a free port; it prints its URL on its first line."""

    LINE_RE = re.compile(r"avideo-server listening on (http://[\d.]+:\d+)")

    def __init__(self, binary, core, args=()):
        self.binary, self.core, self.args = binary, core, list(args)
        self.proc = None
        self.base = None
        self.output = []

    def start(self):
        if not (self.binary and os.access(self.binary, os.X_OK)):
            raise ServerError(f"no avideo-server at {self.binary}")
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(self.core), self.binary, "--host",
             "127.0.0.1", "--port", "0", *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 10)
        line = self.proc.stdout.readline().decode(errors="replace") if ready else ""
        match = self.LINE_RE.search(line)
        if not match:
            self.stop()
            raise ServerError("avideo-server did not start: "
                              + (line.strip() or "no listening line in 10 s"))
        self.base = match.group(1)
        self.port = int(self.base.rsplit(":", 1)[1])
        # Keep reading so the server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self):
        for line in self.proc.stdout:
            self.output.append(line)
            del self.output[:-50]

    def url(self, path=""):
        return self.base + path

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
