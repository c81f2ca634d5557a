"""Per-request counters of the client-cost cases, from separate runs that are
never timed: epoll_ctl calls, bytes allocated by the Lua state (the avideo
script's --count-alloc, the GC stopped around the work), and user-space
instructions (valgrind's callgrind; see instr_count).

epoll_ctl calls are counted by bench/lib/epoll_count.c preloaded into the
client (LD_PRELOAD), which lets the client run at its own speed, or with
--epoll-counter strace by `strace -f -e trace=epoll_ctl`. The two agree
call for call on the same run, but strace stops the client at every system
call, and that changes what is counted: slowed down, libcurl finds more
answers already there when it sends a request and finishes them without
asking to watch the socket at all. The C client's 3.0 calls per request
(preloaded counter, the same in every run) measured anywhere from 0.4 to
2.9 under strace on the client's core, depending on the machine's load,
and 0.05 with strace free to run on the other core. So the preloaded
counter is the default.

Each counter is taken twice, at N requests and at N = C (one request per
connection: start-up, connection set-up and shut-down only), and reported
per request beyond those C: (count(N) - count(C)) / (N - C), the cost the
request path adds once connections exist. With N <= C it is count(N) / N.
"""
import errno as errno_names
import os
import re
import shutil
import tempfile
from collections import Counter

import procs

# Clients the counters are taken for: the ones this project wrote.
COUNTED = ("floor", "c", "avideo", "avideo-talk", "avideo-luajit")
LUA_COUNTED = ("avideo", "avideo-talk")
KINDS = ("epoll", "lua", "instr")
# The instruction counter's runs: C + INSTR_WARM and C + INSTR_WARM +
# INSTR_N requests, so that the count per request is the steady state's,
# without start-up or the first requests' warm-up (tables growing, libcurl's
# caches filling), which 20,000 timed requests spread thin but 2,000 would
# not. callgrind runs a client some 50 times slower: 2,000 is enough.
INSTR_WARM = 1000
INSTR_N = 2000

CALL_RE = re.compile(r"epoll_ctl\(\d+, (EPOLL_CTL_\w+)")
DONE_RE = re.compile(r"\)\s+=\s+(-?\d+)(?:\s+(E[A-Z0-9]+))?")


class CounterError(Exception):
    """No count from this run (the text is why)."""


def parse_strace(text):
    """epoll_ctl calls in an `strace -f -e trace=epoll_ctl` log: total, by
    operation, and failures by errno."""
    calls, ops, errs = 0, Counter(), Counter()
    for line in text.splitlines():
        call = CALL_RE.search(line)
        if call:
            calls += 1
            ops[call.group(1)[len("EPOLL_CTL_"):]] += 1
            if "<unfinished" in line:
                continue  # its result comes on the "resumed" line
        elif "epoll_ctl resumed>" not in line:
            continue
        done = DONE_RE.search(line)
        if done and int(done.group(1)) < 0:
            errs[done.group(2) or "?"] += 1
    return {"calls": calls, "ops": dict(ops), "errors": dict(errs)}


COUNT_LINE_RE = re.compile(r"(add|mod|del|fail\.\d+)=(\d+)")


def parse_preload(text):
    """The lines epoll_count.so appended, one per process, summed."""
    ops, errs = Counter(), Counter()
    for line in text.splitlines():
        for key, value in COUNT_LINE_RE.findall(line):
            if key.startswith("fail."):
                number = int(key[5:])
                errs[errno_names.errorcode.get(number, f"errno {number}")] += int(value)
            else:
                ops[key.upper()] += int(value)
    return {"calls": sum(ops.values()), "ops": {k: v for k, v in ops.items() if v}, "errors": dict(errs)}


def preload_count(ctx, argv, env, timeout):
    if not os.path.exists(ctx.epoll_count_lib):
        raise CounterError(f"no {ctx.epoll_count_lib}")
    with tempfile.NamedTemporaryFile("r", prefix="avideo-bench-epoll-") as counts:
        env = dict(env if env is not None else os.environ)
        env["LD_PRELOAD"] = " ".join(x for x in (ctx.epoll_count_lib, env.get("LD_PRELOAD")) if x)
        env["BENCH_EPOLL_COUNTS"] = counts.name
        run = procs.run_measured(ctx.launcher, argv, ctx.args.client_core, timeout, env=env)
        check(run, "counting run")
        text = counts.read()
        if "pid=" not in text:
            raise CounterError("the preloaded counter wrote nothing")
        return parse_preload(text)


def check(run, what):
    failure = run.failure()
    if failure:
        raise CounterError(f"{what}: {failure}")
    if run.result.get("errors"):
        raise CounterError(f"{what}: {run.result['errors']:.0f} requests failed")


def strace_count(ctx, argv, env, timeout):
    with tempfile.NamedTemporaryFile("r", prefix="avideo-bench-strace-") as log:
        traced = ["strace", "-f", "-qq", "-e", "trace=epoll_ctl", "-e", "signal=none",
                  "-o", log.name] + [str(a) for a in argv]
        run = procs.run_measured(ctx.launcher, traced, ctx.args.client_core, timeout, env=env)
        check(run, "strace run")
        return parse_strace(log.read())


def lua_count(ctx, argv, env, timeout):
    run = procs.run_measured(ctx.launcher, list(argv) + ["--count-alloc"], ctx.args.client_core,
                             timeout, env=env)
    check(run, "counting run")
    if "lua_bytes" not in run.result:
        raise CounterError("counting run printed no lua_bytes")
    return run.result["lua_bytes"]


I_REFS_RE = re.compile(r"I\s+refs:\s+([\d,]+)")


def instr_count(ctx, argv, env, timeout):
    """User-space instructions the client ran (callgrind's "I refs": every
    library and the Lua VM, not the kernel). Steady where CPU time is not:
    on a shared machine the timed ratios move by a third between
    repetitions, these counts by up to 2.5% and the ratio of two clients
    counted one after the other by about 1%. They are the instructions of a
    client slowed down some 50 times, which finds every answer already
    there when it looks: a fair comparison of clients and of changes to
    one, not a prediction of the CPU ratio."""
    if not shutil.which("valgrind"):
        raise CounterError("skipped: valgrind not installed")
    with tempfile.NamedTemporaryFile("r", prefix="avideo-bench-callgrind-") as log:
        # all-non-file: LuaJIT writes the machine code it then runs
        counted = ["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--callgrind-out-file=/dev/null",
                   "--log-file=" + log.name] + [str(a) for a in argv]
        run = procs.run_measured(ctx.launcher, counted, ctx.args.client_core, timeout, env=env)
        check(run, "callgrind run")
        found = I_REFS_RE.search(log.read())
        if not found:
            raise CounterError("callgrind reported no instruction count")
        return int(found.group(1).replace(",", ""))


def per_request(at_n, at_base, n, base):
    if at_base is None:
        return at_n / n
    return (at_n - at_base) / (n - base)


def measure(ctx, case, argv_for, env, kinds, timeout):
    """The counters of one cost case: {key: value}, and {kind: why} for
    those that could not be taken. argv_for(n) is the case's command for n
    requests."""
    n, limit = case.n, case.limit
    base = limit if n > limit else None
    values, problems = {}, {}
    if "epoll" in kinds and case.client in COUNTED:
        count = strace_count if ctx.args.epoll_counter == "strace" else preload_count
        if count is strace_count and not shutil.which("strace"):
            problems["epoll"] = "skipped: strace not installed"
        else:
            try:
                big = count(ctx, argv_for(n), env, timeout)
                small = count(ctx, argv_for(base), env, timeout) if base else None
                values["epoll_ctl"] = per_request(big["calls"], small and small["calls"], n, base)
                for op in set(big["ops"]) | set(small["ops"] if small else ()):
                    values["epoll_" + op.lower()] = per_request(
                        big["ops"].get(op, 0), small and small["ops"].get(op, 0), n, base)
                failed = {}
                for errno in set(big["errors"]) | set(small["errors"] if small else ()):
                    failed[errno] = per_request(big["errors"].get(errno, 0),
                                                small and small["errors"].get(errno, 0), n, base)
                values["epoll_failed"] = failed
                values["epoll_raw"] = {"n": big, "base": small, "base_n": base}
            except CounterError as e:
                problems["epoll"] = str(e)
    if "lua" in kinds and case.client in LUA_COUNTED:
        try:
            big = lua_count(ctx, argv_for(n), env, timeout)
            small = lua_count(ctx, argv_for(base), env, timeout) if base else None
            values["lua_bytes"] = per_request(big, small, n, base)
        except CounterError as e:
            problems["lua"] = str(e)
    if "instr" in kinds and case.client in COUNTED:
        try:
            if base:
                low = base + INSTR_WARM
                big = instr_count(ctx, argv_for(low + INSTR_N), env, timeout)
                small = instr_count(ctx, argv_for(low), env, timeout)
                values["instr"] = per_request(big, small, low + INSTR_N, low)
            else:  # one request per connection: everything counts, as above
                values["instr"] = instr_count(ctx, argv_for(n), env, timeout) / n
        except CounterError as e:
            problems["instr"] = str(e)
    return values, problems


def header(kinds, epoll_counter):
    """The report's line on how the counters it shows were taken."""
    parts = [f"counters ({', '.join(kinds)}): separate untimed runs"]
    at_n = [name for kind, name in (("epoll", "epoll_ctl"), ("lua", "Lua B")) if kind in kinds]
    if at_n:
        parts.append(f"{' and '.join(at_n)} at N and at N=C, per request beyond the first C")
    if "lua" in kinds:
        parts.append("Lua B = bytes the Lua state allocated with its GC stopped")
    if "instr" in kinds:
        parts.append(f"instr = user-space instructions under valgrind (callgrind), between runs of "
                     f"C + {INSTR_WARM:,} and C + {INSTR_WARM + INSTR_N:,} requests, × the floor's")
    if "epoll" in kinds:
        parts.append("epoll_ctl calls counted by "
                     + ("strace -f" if epoll_counter == "strace" else "bench/lib/epoll_count.c (LD_PRELOAD)")
                     + ", failed ones by errno")
    return "; ".join(parts)


def epoll_cell(values):
    if "epoll_ctl" not in values:
        return ""
    return f"{values['epoll_ctl']:.3f}"


def failed_cell(values):
    failed = values.get("epoll_failed")
    if failed is None:
        return ""
    shown = [f"{v:.3f} {k}" for k, v in sorted(failed.items()) if abs(v) >= 0.0005]
    return ", ".join(shown) or "0"


def instr_cell(values, floor_values):
    """Instructions per request, in thousands, and × the floor client's."""
    if "instr" not in values:
        return ""
    cell = f"{values['instr'] / 1000:,.1f}k"
    if floor_values and floor_values.get("instr"):
        cell += f" ({values['instr'] / floor_values['instr']:.2f}×)"
    return cell


def lua_cell(values):
    return f"{values['lua_bytes']:,.0f}" if "lua_bytes" in values else ""
