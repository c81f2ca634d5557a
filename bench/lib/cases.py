"""What the benchmarks run: the clients, and the cases built from them.

A case is one row of the report: a command to run once per repetition (plus
an optional baseline command run just before it, in the same repetition),
and how to read the result from the measured run. Cases that need a client
or a server that is not there are kept, with the reason, and skipped.
"""
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Callable, Optional

import procs


class Unusable(Exception):
    """A run finished but gave no number to report (the reason is the text)."""


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------

CURL_PARALLEL_MAX = 300  # curl's tool caps --parallel-max here


@dataclass
class Client:
    name: str                      # as in --only
    label: str                     # as in the table
    argv: Callable                 # (ctx, url, n, limit) -> argv
    env: Callable = lambda ctx: None
    ours: bool = True              # our script or program: prints a RESULT line
    decodes: bool = True           # decodes each JSON body (and then takes --discard)
    cost_label: str = ""           # its label in the cost section, if not label


def _script(ctx, name):
    return os.path.join(ctx.bench_dir, "clients", name)


CLIENTS = {c.name: c for c in [
    Client("floor", "floor: libcurl+libuv, no JSON",
           lambda ctx, url, n, limit: [ctx.floor_client, url, n, limit], decodes=False),
    Client("c", "C libcurl+libuv+jansson",
           lambda ctx, url, n, limit: [ctx.c_client, url, n, limit]),
    Client("avideo", "avideo (Lua)",
           lambda ctx, url, n, limit: ["lua5.4", _script(ctx, "avideo_get.lua"), url, n, limit],
           env=lambda ctx: ctx.avideo_env, cost_label="avideo gather{limit=C}"),
    Client("avideo-traced", "avideo gather{limit=C}, traced",
           lambda ctx, url, n, limit: ["lua5.4", _script(ctx, "avideo_get.lua"), url, n, limit,
                                       "--trace", os.path.join(ctx.args.build_dir, "bench-trace.json")],
           env=lambda ctx: ctx.avideo_env),
    Client("avideo-talk", "avideo session{limit_per_host=C}, one gather",
           lambda ctx, url, n, limit: ["lua5.4", _script(ctx, "avideo_get.lua"), url, n, limit,
                                       "--limit-per-host"],
           env=lambda ctx: ctx.avideo_env),
    Client("avideo-luajit", "avideo (LuaJIT)",
           lambda ctx, url, n, limit: ["luajit", _script(ctx, "avideo_get.lua"), url, n, limit],
           env=lambda ctx: ctx.avideo_luajit_env, cost_label="avideo gather{limit=C}, LuaJIT"),
    Client("wrk", "wrk (raw sockets)",
           lambda ctx, url, n, limit: ["wrk", "-t1", f"-c{limit}", f"-d{ctx.args.wrk_seconds}s",
                                       "--timeout", "10s", url],
           ours=False, decodes=False),
    Client("curl", "curl --parallel",
           lambda ctx, url, n, limit: ["curl", "--parallel", "--parallel-max",
                                       min(limit, CURL_PARALLEL_MAX), "--no-progress-meter",
                                       "--fail", "-o", "/dev/null", f"{url}?[1-{n}]"],
           ours=False, decodes=False),
    Client("aiohttp", "aiohttp 3.8",
           lambda ctx, url, n, limit: ["/usr/bin/python3", _script(ctx, "aiohttp_get.py"), url, n, limit]),
    Client("lua-http", "lua-http (Lua 5.3)",
           lambda ctx, url, n, limit: ["lua5.3", _script(ctx, "luahttp_get.lua"), url, n, limit]),
]}
AVIDEO_CLIENTS = ("avideo", "avideo-talk", "avideo-traced", "avideo-luajit")  # the same script
BASELINES = ("floor", "c")  # always run in the cost section: the ratios are against them


def probe_clients(ctx, run):
    """{name: reason} for each client that cannot run here; run(argv, env) -> Run.
    Ours are run with N=0, which loads everything and sends nothing."""
    missing = {}
    for client in CLIENTS.values():
        argv = client.argv(ctx, "http://127.0.0.1:1/", 0, 1)
        if not shutil.which(argv[0]):
            missing[client.name] = f"{os.path.basename(argv[0])} not installed or built"
        elif client.ours:
            failure = run(argv, client.env(ctx)).failure()
            if failure:
                missing[client.name] = "does not start: " + failure
    return missing


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------

@dataclass
class Case:
    section: str                   # "client cost", "memory", "scenario"
    name: str                      # what varies inside the section
    client: str                    # a CLIENTS name
    server: str                    # "nginx", "hold" (nginx, fresh per run) or "emulator"
    command: Callable              # (ctx, server, case) -> argv
    read: Callable                 # (case, run, baseline_run) -> metrics dict
    baseline: Optional[Callable] = None  # (ctx, server, case) -> argv, run first
    stop: Optional[Callable] = None  # (server, n) -> stop_when for a run of n requests
    fresh: bool = False            # restart the server before each run
    n: Optional[int] = None        # requests, for the table
    limit: Optional[int] = None    # requests in flight, for the table
    note: str = ""                 # shown in the table
    target: Optional[Callable] = None  # (row, rows) -> (text, ok) or None
    skip: Optional[str] = None     # reason this case is not run
    timeout: Optional[float] = None  # seconds before a run is killed, if less than --timeout
    extra: dict = field(default_factory=dict)


# Client cost: N keep-alive GETs of the small JSON from nginx.

def read_requests(case, run, _baseline=None):
    """CPU per request, throughput and peak RSS of one run."""
    requests = run.result.get("finished", run.result.get("requests"))
    errors = run.result.get("errors", 0)
    if not requests:
        raise Unusable("no requests done")
    if errors:
        raise Unusable(f"{errors:.0f} of {requests:.0f} requests failed")
    return {"requests": requests, "cpu_us": run.cpu * 1e6 / requests,
            "rps": requests / run.wall, "rss_mib": run.maxrss_kib / 1024}


WRK_REQUESTS = re.compile(r"(\d+) requests in ")
WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)|"
                        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def read_wrk(case, run, _baseline=None):
    """wrk runs for a duration, not a count, and prints its own summary."""
    found = WRK_REQUESTS.search(run.stdout)
    if not found:
        raise Unusable("no wrk summary")
    errors = sum(int(x) for m in WRK_ERRORS.findall(run.stdout) for x in m if x)
    run.result = {"requests": float(found.group(1)), "errors": float(errors)}
    return read_requests(case, run)


def read_traced(case, run, _baseline=None):
    """A traced run: its CPU per request without the file's writing at the
    end (the client reports that CPU), which is reported on its own."""
    metrics = read_requests(case, run)
    write = run.result.get("trace_write_seconds", 0.0)
    metrics["cpu_us"] = (run.cpu - write) * 1e6 / metrics["requests"]
    metrics["write_us"] = write * 1e6 / metrics["requests"]
    return metrics


def read_curl(case, run, _baseline=None):
    """curl prints nothing; --fail turns any failed transfer into its exit code."""
    run.result = {"requests": float(case.n), "errors": 0.0}
    return read_requests(case, run)


def cost_target(row, rows):
    """Issue 14's targets at 10 and 100 in flight, results kept: CPU per
    request within 1.3× the floor client's for gather{limit}, within 1.4×
    for the talk's pattern."""
    case, ratio = row["case"], row["metrics"].get("x_floor")
    if case.client == "avideo-traced":
        return traced_target(row, rows)
    if case.limit not in (10, 100) or ratio is None or case.extra.get("results") == "discarded":
        return None
    bound = {"avideo": 1.3, "avideo-talk": 1.4}.get(case.client)
    if bound is None:
        return None
    return (f"≤ {bound}× floor", ratio <= bound)


def traced_target(row, rows):
    """Issue 17: recording a trace costs under 2 µs a request over the same
    run untraced; the file's writing, at the end, is shown beside it."""
    case, m = row["case"], row["metrics"]
    plain = next((r["metrics"] for r in rows.values() if r["case"].client == "avideo"
                  and r["case"].name == case.name and "cpu_us" in r["metrics"]), None)
    if plain is None or "cpu_us" not in m:
        return None
    extra = m["cpu_us"] - plain["cpu_us"]
    return (f"recording ≤ 2 µs/req over untraced (+{extra:.1f}); writing the file "
            f"{m.get('write_us', 0):.0f} µs/req", extra <= 2.0)


def cost_command(ctx, srv, case):
    argv = CLIENTS[case.client].argv(ctx, srv.url("/video"), case.n, case.limit)
    return argv + (["--discard"] if case.extra.get("results") == "discarded" else [])


# Results "kept": every decoded document lives until the end, as a gather
# returns them (the talk's way); "discarded": each is dropped once decoded.
# Both sides of a × C ratio do the same, so it measures the library, not
# what keeping 20,000 documents costs the allocator. Clients that decode
# nothing (the floor, wrk, curl) run once, with the kept rows; × floor
# compares every row of a limit with that one floor run.
RESULTS = ("kept", "discarded")


def cost_cases(ctx, clients, limits, n, results=RESULTS):
    cases = []
    for mode in results:
        for limit in limits:
            for name in clients:
                if mode == "discarded" and not CLIENTS[name].decodes:
                    continue
                note = []
                if name == "floor":
                    note.append("libcurl's default headers")
                elif not CLIENTS[name].decodes:
                    note.append("no JSON decoding")
                if name == "wrk":
                    note.append(f"runs {ctx.args.wrk_seconds} s, not N requests")
                if name == "curl" and limit > CURL_PARALLEL_MAX:
                    note.append(f"curl caps --parallel-max: ran {CURL_PARALLEL_MAX} in flight")
                read = {"wrk": read_wrk, "curl": read_curl, "avideo-traced": read_traced}.get(name, read_requests)
                label = f"c={limit}" + (", discarded" if mode == "discarded" else "")
                cases.append(Case("client cost", label, name, "nginx", cost_command, read,
                                  n=n, limit=limit, note="; ".join(note), target=cost_target,
                                  extra={"results": mode}))
    return cases


# Memory: the peak RSS of a client holding requests on a server that does not
# answer them yet (nginx's /hold/, or the emulator's queue), minus the same
# client's peak RSS holding its baseline, per extra request. The server is
# restarted before each run: nginx's echo_sleep does not notice a client
# that went away, so held requests would pile up to worker_connections.
# - in flight: N = limit = M. The harness ends the client (SIGTERM) once the
#   server's port has M established connections from it (or their number
#   stalls), plus half a second; the baseline holds 1. The divisor is the
#   connections actually seen, so a client that could not open them all is
#   not flattered.
# - queued: N requests behind limit 100; the client ends itself after --hold
#   seconds (it queues all N on its first loop turns); the baseline is N=100.

def memory_argv(ctx, srv, case, n):
    argv = CLIENTS[case.client].argv(ctx, srv.url(ctx.hold_path), n, case.limit if case.extra["queued"] else n)
    if not case.extra["queued"]:
        return argv
    if case.client == "avideo":
        argv.append("--session-limit")
    return argv + ["--hold", round(1.5 + n / 50000, 1)]


def memory_command(ctx, srv, case):
    return memory_argv(ctx, srv, case, case.n)


def memory_baseline(ctx, srv, case):
    return memory_argv(ctx, srv, case, case.extra["base_n"])


def memory_stop(srv, n):
    return procs.InFlight(srv.port, n)


def read_memory(case, run, baseline):
    """KiB per request beyond the baseline."""
    if baseline is None or baseline.failure():
        raise Unusable("baseline run failed: " + (baseline.failure() if baseline else "none"))
    if case.extra["queued"]:
        extra = case.n - case.extra["base_n"]
    else:
        extra = (run.in_flight or 0) - (baseline.in_flight or 0)
        if extra <= 0:
            raise Unusable("no connections seen")
    metrics = {"value": (run.maxrss_kib - baseline.maxrss_kib) / extra,
               "rss_mib": run.maxrss_kib / 1024, "base_rss_mib": baseline.maxrss_kib / 1024}
    if not case.extra["queued"]:
        metrics["in_flight"] = run.in_flight
    return metrics


def memory_target(row, rows):
    case, value = row["case"], row["metrics"].get("value")
    if case.client != "avideo" or value is None:
        return None
    if case.extra["queued"]:
        return ("≤ 1.5 KiB", value <= 1.5)
    # issue 14: an in-flight request costs at most 1.5 KiB more than the floor client's
    peer = rows.get((case.section, case.name, "floor"))
    floor_value = peer["metrics"].get("value") if peer else None
    if floor_value is None:
        return None
    return (f"≤ floor + 1.5 ({floor_value + 1.5:.1f} KiB)", value <= floor_value + 1.5)


def memory_cases(ctx, clients, in_flight, queued, queued_limit=100):
    server = "hold" if ctx.args.memory_server == "nginx" else "emulator"
    cases = []
    for count in in_flight:
        for name in (c for c in ("floor", "c", "avideo", "aiohttp") if c in clients):
            cases.append(Case("memory", f"{count:,} in flight", name, server,
                              memory_command, read_memory, baseline=memory_baseline,
                              stop=memory_stop, fresh=True, n=count, limit=count,
                              note="KiB per request in flight", target=memory_target,
                              extra={"queued": False, "base_n": 1}))
    for count in queued:
        for name in (c for c in ("avideo", "aiohttp") if c in clients):
            cases.append(Case("memory", f"{count:,} queued", name, server,
                              memory_command, read_memory, baseline=memory_baseline,
                              fresh=True, n=count, limit=queued_limit,
                              note=f"KiB per request queued behind limit={queued_limit}",
                              target=memory_target, extra={"queued": True, "base_n": queued_limit}))
    return cases


# Cancel: the talk's session (limit_per_host = 10) and one gather of N
# requests that nginx's /hold/ never answers; once all N are in the session
# (10 in flight, the rest queued) the task waiting in the gather is
# cancelled, as avideo.timeout's watchdog would; the script times the cancel
# to the end of the gather (and to the end of every task it started). Always
# on nginx (fresh per run), whatever --memory-server says.

CANCEL_TIMEOUT = 120  # a run takes about 10 s; one that hangs is killed sooner than --timeout


def cancel_command(ctx, srv, case):
    return CLIENTS[case.client].argv(ctx, srv.url("/hold/video"), case.n, case.limit) + ["--cancel"]


def read_cancel(case, run, _baseline=None):
    r = run.result
    if "cancel_seconds" not in r:
        raise Unusable("no cancel_seconds")
    if r.get("in_flight") != case.limit or r.get("in_flight", 0) + r.get("queued", 0) != case.n:
        raise Unusable(f"{r.get('in_flight')} in flight and {r.get('queued')} queued when cancelled,"
                       f" not {case.limit} and {case.n - case.limit}")
    if r.get("left_queued"):
        raise Unusable(f"{r['left_queued']:.0f} requests still queued after the cancel")
    return {"value": r["cancel_seconds"], "settle": r["settle_seconds"],
            "queue_seconds": r["queue_seconds"], "rss_mib": run.maxrss_kib / 1024}


def cancel_target(row, rows):
    value = row["metrics"].get("value")
    return None if value is None else ("≤ 0.5 s", value <= 0.5)


def cancel_cases(ctx, clients, counts, limit=10):
    if "avideo-talk" not in clients:
        return []
    return [Case("cancel", f"{count:,} queued, cancelled", "avideo-talk", "hold",
                 cancel_command, read_cancel, fresh=True, n=count, limit=limit,
                 note="from task:cancel() to the gather's end",
                 target=cancel_target, timeout=CANCEL_TIMEOUT)
            for count in counts]


# Download: one 1 GiB body from nginx (/big/1g.bin, sparse), CPU seconds per
# GiB and throughput: curl -o /dev/null, the floor client (libcurl + libuv,
# bytes counted and dropped), avideo streaming it through chunks() (at the
# top of a script, blocking, and inside avideo.run) and through save() (to
# /dev/null).

DOWNLOAD_GIB = 1


def download_command(ctx, srv, case):
    url = srv.url("/big/1g.bin")
    if case.client == "curl":
        return ["curl", "--fail", "--no-progress-meter", "-o", "/dev/null", url]
    if case.client == "floor":
        return [ctx.floor_client, url, 1, 1]
    return ["lua5.4", _script(ctx, "avideo_download.lua"), url, case.extra["mode"]]


def read_download(case, run, _baseline=None):
    gib = run.result.get("bytes", DOWNLOAD_GIB << 30) / (1 << 30)  # curl prints nothing: --fail vouches
    if gib < DOWNLOAD_GIB:
        raise Unusable(f"only {gib:.3f} GiB came")
    return {"value": run.cpu / gib, "mib_s": gib * 1024 / run.wall, "rss_mib": run.maxrss_kib / 1024}


def download_target(row, rows):
    """Issue 15's: avideo's CPU per GiB within 1.2× curl's, as the median of
    the ratios taken within each repetition (this machine's speed drifts
    from one repetition to the next more than the ratio does)."""
    case, ratio = row["case"], row["metrics"].get("x_curl")
    if case.client != "avideo" or ratio is None:
        return None
    return ("≤ 1.2× curl", ratio <= 1.2)


def download_cases(ctx, clients):
    cases = []
    for name in (c for c in ("curl", "floor") if c in clients):
        cases.append(Case("download", "1 GiB", name, "nginx", download_command, read_download, n=1,
                          note="to /dev/null" if name == "curl" else "bytes counted and dropped"))
    if "avideo" in clients:
        for mode, name, note in (("chunks", "chunks()", "stream = true, blocking"),
                                 ("task", "chunks() in a task", "stream = true, inside avideo.run"),
                                 ("save", "save()", "stream = true")):
            cases.append(Case("download", f"1 GiB, {name}", "avideo", "nginx", download_command,
                              read_download, n=1, target=download_target, extra={"mode": mode},
                              note=note))
    return cases


# Scenarios: the talk's 100 videos against the emulator, timed by the script.

SCENARIO_SCRIPTS = {"avideo": ("lua5.4", "avideo_videos.lua"),
                    "aiohttp": ("/usr/bin/python3", "aiohttp_videos.py")}
SCENARIOS = {"sequential": (1, "s for 100 videos, one at a time"),
             "gather": (100, "s for 100 videos at once (limit_per_host=100): overload"),
             "limit10": (10, "s for 100 videos, limit_per_host=10: the server's capacity")}


def scenario_command(ctx, srv, case):
    interpreter, script = SCENARIO_SCRIPTS[case.client]
    return [interpreter, _script(ctx, script), srv.url(), case.name]


def read_scenario(case, run, _baseline=None):
    videos = run.result.get("videos")
    if videos != 100:
        raise Unusable(f"got {videos} videos, not 100")
    return {"value": run.result["seconds"], "rss_mib": run.maxrss_kib / 1024}


def scenario_target(row, rows):
    case, value = row["case"], row["metrics"].get("value")
    if case.client != "avideo" or case.name != "limit10" or value is None:
        return None
    return ("2.0 s ± 3%", abs(value - 2.0) <= 0.06)


def scenario_cases(ctx, clients, modes):
    cases = []
    for mode in modes:
        limit, note = SCENARIOS[mode]
        for name in (c for c in SCENARIO_SCRIPTS if c in clients):
            cases.append(Case("scenario", mode, name, "emulator", scenario_command,
                              read_scenario, n=100, limit=limit, note=note,
                              target=scenario_target))
    return cases
