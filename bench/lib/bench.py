"""bench/run's harness: build, start the servers, run every case once per
repetition, and report the medians as one table (text, and markdown with
--markdown FILE). See bench/README.md for what each case measures.
"""
import argparse
import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases as bench_cases  # noqa: E402
import counters  # noqa: E402
import procs  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCH_DIR)
SECTIONS = ("cost", "memory", "scenario", "cancel", "download")
FULL = {"n": 20000, "in_flight": "1000,10000", "queued": "100000",
        "scenarios": "limit10,gather", "wrk_seconds": 2, "cancel_queued": "100000"}
QUICK = {"n": 2000, "in_flight": "1000", "queued": "10000",
         "scenarios": "limit10", "wrk_seconds": 1, "cancel_queued": "100000"}
PACKAGES = ["nginx", "libnginx-mod-http-echo", "wrk", "curl", "libcurl4", "libuv1",
            "libjansson4", "lua5.4", "lua5.3", "lua-http", "lua-cjson", "python3-aiohttp", "strace",
            "valgrind"]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="avideo's benchmarks: client cost against nginx, memory at scale, "
                    "the talk's scenarios on the emulator. One table of medians.")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma list of cost, memory, scenario, cancel, download (default: all)")
    p.add_argument("--only", help="comma list of clients: " + ",".join(bench_cases.CLIENTS)
                   + " (default: all; floor and c always run in the cost section,"
                   " ratios are against them)")
    p.add_argument("--limits", default="10,100,1000", help="cost section: requests in flight")
    p.add_argument("--results", default=",".join(bench_cases.RESULTS),
                   help="cost section: kept (every decoded document kept to the end, as gather"
                   " returns them), discarded (dropped once decoded), or both (default);"
                   " wrk and curl decode nothing and run with kept only")
    p.add_argument("--n", type=int, help="cost section: requests per run (default 20000, quick 2000)")
    p.add_argument("--reps", type=int, default=3, help="repetitions, the median is reported (default 3)")
    p.add_argument("--quick", action="store_true", help="CI-sized run")
    p.add_argument("--in-flight", help="memory section: in-flight counts (default 1000,10000)")
    p.add_argument("--queued", help="memory section: queued counts behind limit 100 (default 100000)")
    p.add_argument("--memory-server", choices=("nginx", "emulator"), default="nginx",
                   help="server that holds the memory section's requests (default nginx)")
    p.add_argument("--scenarios", help="scenario section: sequential,gather,limit10 (default limit10,gather)")
    p.add_argument("--cancel-queued", help="cancel section: requests gathered, then cancelled (default 100000)")
    p.add_argument("--counters", default=",".join(counters.KINDS),
                   help="cost section, separate untimed runs: epoll (epoll_ctl calls per request),"
                   " lua (Lua bytes allocated per request), instr (user-space instructions per request,"
                   " under valgrind); 'none' for none (default: epoll,lua,instr)")
    p.add_argument("--epoll-counter", choices=("preload", "strace"), default="preload",
                   help="how epoll_ctl calls are counted: bench/lib/epoll_count.c preloaded"
                   " (default; the client runs at its own speed) or strace -f (slows every call,"
                   " which changes how often libcurl asks to watch a socket)")
    p.add_argument("--wrk-seconds", type=int, help="wrk's run length (default 2, quick 1)")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as markdown")
    p.add_argument("--json", metavar="FILE", help="also write every run's numbers as JSON")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    p.add_argument("--no-build", action="store_true", help="use what --build-dir already has")
    p.add_argument("--module-build", metavar="DIR",
                   help="take avideo.core from DIR/lib instead of building it in --build-dir")
    p.add_argument("--server-binary", help="avideo-server to use instead of building it")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--client-core", type=int, default=1)
    p.add_argument("--timeout", type=float, default=300, help="seconds before one run is killed")
    p.add_argument("--check", action="store_true", help="exit 1 when a measured target is missed")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = split(args.sections)
    args.only = split(args.only) if args.only else list(bench_cases.CLIENTS)
    for s in args.sections:
        if s not in SECTIONS:
            p.error(f"unknown section {s}")
    for c in args.only:
        if c not in bench_cases.CLIENTS:
            p.error(f"unknown client {c}")
    for m in split(args.scenarios):
        if m not in bench_cases.SCENARIOS:
            p.error(f"unknown scenario {m}")
    args.counters = [] if args.counters == "none" else split(args.counters)
    for k in args.counters:
        if k not in counters.KINDS:
            p.error(f"unknown counter {k} (epoll, lua, instr or none)")
    args.results = list(dict.fromkeys(split(args.results)))  # in order, once each
    if not args.results or any(m not in bench_cases.RESULTS for m in args.results):
        p.error(f"--results takes {' and/or '.join(bench_cases.RESULTS)}")
    if args.reps < 1:
        p.error("--reps must be at least 1")
    return args


def split(text):
    return [x.strip() for x in str(text).split(",") if x.strip()]


def counts(text):
    return [int(x) for x in split(text)]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Build and probe
# ---------------------------------------------------------------------------

def cmake(*cmd):
    res = subprocess.run(["cmake", *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        errors = [l for l in res.stdout.splitlines() if "error" in l.lower()] or res.stdout.splitlines()
        return errors[0].strip() if errors else f"cmake exit {res.returncode}"
    return None


def build(args, wanted):
    """Build the targets in wanted; {target: reason} for those that failed."""
    problems = {}
    if args.no_build:
        return problems
    log(f"building {', '.join(wanted)} in {args.build_dir}")
    server = "ON" if "avideo-server" in wanted else "OFF"
    err = cmake("-S", ROOT, "-B", args.build_dir, "-DCMAKE_BUILD_TYPE=Release",
                "-DAVIDEO_TESTS=OFF", "-DAVIDEO_BUILD_BENCH=ON", f"-DAVIDEO_BUILD_SERVER={server}")
    if err:
        return {t: "cmake configure failed: " + err for t in wanted}
    for target in wanted:
        if target == "avideo_core_luajit":
            continue
        err = cmake("--build", args.build_dir, "--target", target, "-j2")
        if err:
            problems[target] = "build failed: " + err
    if "avideo_core_luajit" in wanted:
        # the module for LuaJIT: a build dir of its own (-DAVIDEO_LUA=luajit)
        jit_dir = luajit_build_dir(args)
        err = (cmake("-S", ROOT, "-B", jit_dir, "-DCMAKE_BUILD_TYPE=Release", "-DAVIDEO_LUA=luajit",
                     "-DAVIDEO_TESTS=OFF", "-DAVIDEO_BUILD_BENCH=OFF", "-DAVIDEO_BUILD_SERVER=OFF")
               or cmake("--build", jit_dir, "--target", "avideo_core", "-j2"))
        if err:
            problems["avideo_core_luajit"] = "build failed: " + err
    return problems


def luajit_build_dir(args):
    return os.path.join(args.build_dir, "luajit")


def make_context(args):
    ctx = SimpleNamespace(args=args, bench_dir=BENCH_DIR, root=ROOT, hold_path="/hold/video")
    ctx.c_client = os.path.join(args.build_dir, "bench", "c_client")
    ctx.floor_client = os.path.join(args.build_dir, "bench", "floor_client")
    ctx.epoll_count_lib = os.path.join(args.build_dir, "bench", "epoll_count.so")
    ctx.launcher = os.path.join(args.build_dir, "bench", "launch")
    module_lib = os.path.join(args.module_build or args.build_dir, "lib")
    ctx.emulator_binary = args.server_binary or os.path.join(args.build_dir, "src", "server", "avideo-server")
    wanted = ["bench_launch", "bench_c_client", "bench_floor_client"]
    if "cost" in args.sections and "epoll" in args.counters:
        wanted.append("bench_epoll_count")
    wants_avideo = any(c in args.only for c in bench_cases.AVIDEO_CLIENTS)
    if wants_avideo and not args.module_build:
        wanted.append("avideo_core")
    if "avideo-luajit" in args.only:
        wanted.append("avideo_core_luajit")
    if ("scenario" in args.sections or args.memory_server == "emulator") and not args.server_binary:
        wanted.append("avideo-server")
    problems = build(args, wanted)
    if "bench_launch" in problems or not os.access(ctx.launcher, os.X_OK):
        sys.exit("bench/run: the launcher did not build: "
                 + problems.get("bench_launch", "no " + ctx.launcher))
    if "bench_c_client" in problems:
        log("the C baseline did not build: " + problems["bench_c_client"])
    if "bench_floor_client" in problems:
        log("the floor client did not build: " + problems["bench_floor_client"])
    ctx.emulator_problem = problems.get("avideo-server")

    env = {k: v for k, v in os.environ.items()
           if k not in ("LUA_PATH", "LUA_CPATH", "LUA_PATH_5_4", "LUA_CPATH_5_4")}
    lua_dir = os.path.join(ROOT, "lua")
    env["LUA_PATH"] = f"{lua_dir}/?.lua;{lua_dir}/?/init.lua;;"
    env["LUA_CPATH"] = f"{module_lib}/?.so;;"
    ctx.avideo_env = env
    ctx.avideo_luajit_env = dict(env, LUA_CPATH=f"{os.path.join(luajit_build_dir(args), 'lib')}/?.so;;")
    if not os.path.exists(os.path.join(lua_dir, "avideo.lua")):
        ctx.avideo_problem = "module not there yet: no lua/avideo.lua"
    elif "avideo_core" in problems:  # an older core.so may be there: not that one
        ctx.avideo_problem = "avideo.core not built: " + problems["avideo_core"]
    elif not os.path.exists(os.path.join(module_lib, "avideo", "core.so")):
        ctx.avideo_problem = f"avideo.core not built: no {module_lib}/avideo/core.so"
    else:
        ctx.avideo_problem = None
    return ctx


def probe(ctx):
    def run(argv, env):
        return procs.run_measured(ctx.launcher, argv, ctx.args.client_core, 30, env=env)
    missing = bench_cases.probe_clients(ctx, run)
    for name in bench_cases.AVIDEO_CLIENTS:
        if name in missing:
            missing[name] = ctx.avideo_problem or "module does not load: " + missing[name]
    return missing


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------

class Servers:
    """Started on first use; a server that fails to start skips its cases."""

    def __init__(self, ctx, nofile):
        self.ctx, self.nofile = ctx, nofile
        self.running, self.problems = {}, {}

    def get(self, kind, fresh=False):
        if fresh and kind in self.running:
            self.running.pop(kind).stop()
        if kind in self.running or kind in self.problems:
            return self.running.get(kind)
        args = self.ctx.args
        try:
            if kind in ("nginx", "hold"):
                srv = procs.Nginx(os.path.join(BENCH_DIR, "nginx", "nginx.conf.in"),
                                  os.path.join(BENCH_DIR, "nginx", "video.json"),
                                  args.server_core, self.nofile).start()
                self.running[kind] = srv
                if kind == "nginx":
                    self.warm_up(srv)
            else:
                if self.ctx.emulator_problem:
                    raise procs.ServerError("avideo-server " + self.ctx.emulator_problem)
                srv = procs.Emulator(self.ctx.emulator_binary, args.server_core).start()
                self.running[kind] = srv
                if args.memory_server == "emulator":
                    self.ctx.hold_path = "/videos/" + first_video_id(srv)
            if not fresh:
                log(f"{kind} listening on {srv.url('')}")
            return srv
        except (procs.ServerError, OSError, ValueError) as e:
            self.problems[kind] = str(e)
            log(f"{kind}: {e}")
            return None

    def warm_up(self, srv):
        if os.access(self.ctx.c_client, os.X_OK):
            procs.run_measured(self.ctx.launcher, [self.ctx.c_client, srv.url("/video"), 2000, 10],
                               self.ctx.args.client_core, 60)

    def stop(self):
        for srv in self.running.values():
            srv.stop()


def first_video_id(emulator):
    with urllib.request.urlopen(emulator.url("/videos/?n=1"), timeout=10) as r:
        ids = json.load(r)
    if not ids:
        raise ValueError("the emulator lists no videos")
    return str(ids[0])


def run_case(ctx, servers, case, rep, baseline_cache):
    """Metrics of one case in one repetition, or the reason there are none."""
    env = bench_cases.CLIENTS[case.client].env(ctx)

    def measure(argv_of, n):
        srv = servers.get(case.server, fresh=case.fresh)
        if srv is None:
            return None
        argv = argv_of(ctx, srv, case)
        stop = case.stop(srv, n) if case.stop else None
        timeout = min(ctx.args.timeout, case.timeout) if case.timeout else ctx.args.timeout
        run = procs.run_measured(ctx.launcher, argv, ctx.args.client_core, timeout,
                                 env=env, stop_when=stop)
        run.in_flight = stop.reached if stop else None
        return run

    base = None
    if case.baseline:
        key = (rep, case.section, case.client, case.extra["base_n"])
        if key not in baseline_cache:
            baseline_cache[key] = measure(case.baseline, case.extra["base_n"])
        base = baseline_cache[key]
    run = measure(case.command, case.n)
    if run is None:
        return None, f"skipped: {case.server} not running: {servers.problems[case.server]}"
    if not bench_cases.CLIENTS[case.client].ours:
        run.result = run.result or {"tool": 1.0}  # wrk and curl print no RESULT line
    failure = run.failure()
    if failure:
        return None, failure
    try:
        return case.read(case, run, base), None
    except bench_cases.Unusable as e:
        return None, str(e)


def add_ratios(results, rep):
    """The ratios within one repetition: × floor, a client's CPU per request
    over the floor's at the same limit (the floor decodes nothing, so it has
    one run per limit for the kept and the discarded rows alike); × C, over
    the C (jansson) client's in the same case (same limit, results kept or
    discarded alike)."""
    def cpu_of(client, key):
        return {key(case): m["cpu_us"] for case, per_rep in results
                if case.section == "client cost" and case.client == client
                for m, _ in [per_rep[rep] or (None, None)] if m}
    floor = cpu_of("floor", lambda case: case.limit)
    c = cpu_of("c", lambda case: case.name)
    # download: × curl, CPU per GiB over curl's in the same repetition
    curl = next((m["value"] for case, per_rep in results
                 if case.section == "download" and case.client == "curl"
                 for m, _ in [per_rep[rep] or (None, None)] if m), None)
    for case, per_rep in results:
        metrics, _ = per_rep[rep] or (None, None)
        if case.section == "download" and metrics and curl and case.client != "curl":
            metrics["x_curl"] = metrics["value"] / curl
        if case.section != "client cost" or not metrics:
            continue
        if case.limit in floor:
            metrics["x_floor"] = metrics["cpu_us"] / floor[case.limit]
        if case.name in c:
            metrics["x_c"] = metrics["cpu_us"] / c[case.name]


def describe(case, metrics):
    if not metrics:
        return ""
    if "cpu_us" in metrics:
        text = f"{metrics['cpu_us']:.1f} µs/req, {metrics['rps']:.0f} req/s"
        if "x_floor" in metrics:
            text += f", {metrics['x_floor']:.2f}× floor"
        if "x_c" in metrics:
            text += f", {metrics['x_c']:.2f}× C"
        return text
    return f"{metrics['value']:.3f}"


def count_cases(ctx, servers, results):
    """The counters of the cost cases (see bench/lib/counters.py), from
    separate untimed runs after the timed repetitions: {(section, name,
    client): (values, problems)}."""
    kinds = ctx.args.counters
    counted = {}
    if not kinds:
        return counted
    for case, per_rep in results:
        if case.section != "client cost" or case.skip or case.client not in counters.COUNTED:
            continue
        if not any(m for m, _ in per_rep):
            continue  # no good timed run: no count either
        srv = servers.get(case.server)
        if srv is None:
            continue
        env = bench_cases.CLIENTS[case.client].env(ctx)
        values, problems = counters.measure(
            ctx, case, lambda n: case.command(ctx, srv, dataclasses.replace(case, n=n)),
            env, kinds, ctx.args.timeout)
        counted[(case.section, case.name, case.client)] = (values, problems)
        log(f"[counters] {case.name} {case.client}: "
            + ", ".join([f"{k} {v:.3f}" for k, v in values.items() if isinstance(v, float)]
                        + [f"{k}: {v}" for k, v in problems.items()]))
    return counted


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

COLUMNS = ["section", "case", "client", "N", "in flight", "CPU µs/req", "× floor", "× C",
           "req/s", "peak RSS MiB", "Lua B/req", "instr/req (× floor)", "epoll_ctl/req", "failed epoll_ctl/req",
           "result", "target", "note"]
KEPT_COLUMNS = ("section", "case", "client")  # shown even when empty; others only when used
RATIOS = {"x_floor": "floor", "x_c": "c", "x_curl": "curl"}  # ratio metric: the client it is taken against


def summarize(results, reps, counted=None):
    """One row per case: the median of each metric over its good runs, and
    the counters of its counting runs (counted: {(section, name, client):
    (values, problems)})."""
    counted = counted or {}
    rows = {}
    for case, per_rep in results:
        good = [m for m, _ in per_rep if m]
        failures = [f for _, f in per_rep if f]
        metrics = {}
        for key in {k for m in good for k in m}:
            values = [m[key] for m in good if key in m]
            metrics[key] = statistics.median(values)
            if key in RATIOS and len(values) >= 4 and case.client != RATIOS[key]:
                # the spread of the ratio over the repetitions: how far to trust it
                metrics[key + "_q1"], _, metrics[key + "_q3"] = statistics.quantiles(values, n=4)
        note = case.note
        if case.skip:
            note = "skipped: " + case.skip
        elif failures and failures[0].startswith("skipped:"):
            note = failures[0]
        elif failures:
            note = (f"{len(failures)} of {reps} runs failed: " if good else "failed: ") + failures[0]
        key = (case.section, case.name, case.client)
        values, problems = counted.get(key, ({}, {}))
        if problems:
            note = "; ".join(([note] if note else []) + [f"{k} counter: {v}" for k, v in problems.items()])
        rows[key] = {"case": case, "metrics": metrics, "note": note, "counters": values}
    for row in rows.values():
        row["target"] = row["case"].target(row, rows) if row["case"].target and row["metrics"] else None
    return rows


def floor_counters(row, rows):
    """The counters of the floor client in row's case ("c=10, discarded"
    takes those of "c=10": the floor decodes nothing and runs once)."""
    case = row["case"]
    for name in (case.name, case.name.split(",")[0]):
        floor = rows.get((case.section, name, "floor"))
        if floor:
            return floor.get("counters", {})
    return {}


def cells(row, rows):
    case, m = row["case"], row["metrics"]
    fmt = lambda key, spec: format(m[key], spec) if key in m else ""  # noqa: E731
    n = f"{m['requests']:,.0f}" if case.client == "wrk" and "requests" in m else (f"{case.n:,}" if case.n else "")
    if "value" not in m:
        result = ""
    elif case.section == "memory":
        result = f"{m['value']:.2f} KiB"
        if m.get("in_flight", case.n) < case.n:
            result += f" ({m['in_flight']:,.0f} seen in flight)"
    elif case.section == "cancel":
        result = f"{m['value']:.3f} s (all tasks ended {m['settle']:.3f} s)"
    elif case.section == "download":
        result = f"{m['value']:.3f} s CPU/GiB, {m['mib_s']:,.0f} MiB/s"
        if "x_curl" in m:
            result += f", {ratio_cell(m, 'x_curl')}× curl"
    else:
        result = f"{m['value']:.3f} s"
    target = ""
    if row["target"]:
        text, ok = row["target"]
        target = f"{text}: {'ok' if ok else 'MISSED'}"
    cnt = row.get("counters", {})
    client = bench_cases.CLIENTS[case.client]
    label = client.cost_label if case.section == "client cost" and client.cost_label else client.label
    if case.section == "download" and case.client == "curl":
        label = "curl -o /dev/null"  # one transfer, not --parallel
    return [case.section, case.name, label, n,
            f"{case.limit:,}" if case.limit else "", fmt("cpu_us", ".1f"),
            ratio_cell(m, "x_floor"), ratio_cell(m, "x_c"), fmt("rps", ",.0f"), fmt("rss_mib", ".1f"),
            counters.lua_cell(cnt), counters.instr_cell(cnt, floor_counters(row, rows)),
            counters.epoll_cell(cnt), counters.failed_cell(cnt),
            result, target, row["note"]]


def ratio_cell(m, key):
    """The median ratio, and its quartiles over the repetitions when there are 4 or more."""
    if key not in m:
        return ""
    if key + "_q1" not in m:
        return f"{m[key]:.2f}"
    return f"{m[key]:.2f} ({m[key + '_q1']:.2f}–{m[key + '_q3']:.2f})"


def used_table(rows):
    """The header and the cells, without the columns no row uses."""
    body = [cells(r, rows) for r in rows.values()]
    keep = [i for i, name in enumerate(COLUMNS) if name in KEPT_COLUMNS or any(r[i] for r in body)]
    return [[r[i] for i in keep] for r in [COLUMNS] + body]


def text_table(rows):
    table = used_table(rows)
    columns = table[0]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns) - 1)]
    lines = []
    for i, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(line.rstrip() for line in lines)


def markdown(rows, header):
    out = ["# avideo benchmarks", ""] + [f"- {h}" for h in header] + [""]
    table = used_table(rows)
    out.append("| " + " | ".join(table[0]) + " |")
    out.append("|" + "|".join("---" for _ in table[0]) + "|")
    for r in table[1:]:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    return "\n".join(out) + "\n"


def versions():
    res = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Version}\n", *PACKAGES],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return ", ".join(line for line in res.stdout.splitlines() if line.strip())


def header_lines(args, elapsed):
    return [f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, Linux {os.uname().release}; "
            f"server on core {args.server_core}, clients on core {args.client_core}",
            f"median of {args.reps} repetitions; cost: N={args.n} keep-alive GETs of a "
            f"{os.path.getsize(os.path.join(BENCH_DIR, 'nginx', 'video.json')) - 1}-byte JSON from nginx "
            "(1 worker); CPU = user+sys of the whole client process (wait4); "
            "× floor = CPU per request over the floor client's at the same limit, × C = over the "
            "C (jansson) client's in the same case, both taken within a repetition, median "
            "(quartiles in brackets from 4 repetitions on); every other repetition runs the cases backwards",
            *([counters.header(args.counters, args.epoll_counter)]
              if args.counters and "cost" in args.sections else []),
            f"packages: {versions()}",
            f"took {elapsed:.0f} s"]


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main(argv):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("bench/run: terminated"))
    started = time.monotonic()
    nofile = procs.raise_nofile()
    # The harness itself (ss polls, bookkeeping) stays off the client's core.
    os.sched_setaffinity(0, {args.server_core})
    ctx = make_context(args)
    missing = probe(ctx)
    for name, why in missing.items():
        if name in args.only:
            log(f"skipping {name}: {why}")

    clients = list(args.only)
    all_cases = []
    if "cost" in args.sections:
        cost_clients = list(bench_cases.BASELINES) + [c for c in clients if c not in bench_cases.BASELINES]
        all_cases += bench_cases.cost_cases(ctx, cost_clients, counts(args.limits), args.n, args.results)
    if "memory" in args.sections:
        # the floor always runs: in-flight memory is judged against it
        memory_clients = ["floor"] + [c for c in clients if c != "floor"]
        all_cases += bench_cases.memory_cases(ctx, memory_clients, counts(args.in_flight), counts(args.queued))
    if "scenario" in args.sections:
        all_cases += bench_cases.scenario_cases(ctx, clients, split(args.scenarios))
    if "cancel" in args.sections:
        all_cases += bench_cases.cancel_cases(ctx, clients, counts(args.cancel_queued))
    if "download" in args.sections:
        # curl is the reference of the target
        all_cases += bench_cases.download_cases(ctx, ["curl"] + [c for c in clients if c != "curl"])
    for case in all_cases:
        case.skip = missing.get(case.client)

    servers = Servers(ctx, nofile)
    results = [(case, [(None, case.skip)] * args.reps if case.skip else [None] * args.reps)
               for case in all_cases]
    try:
        for rep in range(args.reps):
            baseline_cache = {}
            # Every other repetition runs the cases backwards, so neither side
            # of a ratio always runs first (the machine drifts within a run).
            order = results if rep % 2 == 0 else results[::-1]
            for case, per_rep in order:
                if case.skip:
                    continue
                per_rep[rep] = run_case(ctx, servers, case, rep, baseline_cache)
                add_ratios(results, rep)  # once both sides of a ratio ran
                metrics, failure = per_rep[rep]
                log(f"[{rep + 1}/{args.reps}] {case.section} {case.name} {case.client}: "
                    + (describe(case, metrics) or "FAILED " + str(failure)))
        counted = count_cases(ctx, servers, results)
    finally:
        servers.stop()

    rows = summarize(results, args.reps, counted)
    header = header_lines(args, time.monotonic() - started)
    print("\n".join(header))
    print()
    print(text_table(rows))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(rows, header))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"section": c.section, "case": c.name, "client": c.client,
                        "runs": [{"metrics": m, "failure": e} for m, e in per_rep],
                        "counters": counted.get((c.section, c.name, c.client), ({}, {}))[0],
                        "counter_problems": counted.get((c.section, c.name, c.client), ({}, {}))[1]}
                       for c, per_rep in results], f, indent=1)
    missed = [r for r in rows.values() if r["target"] and not r["target"][1]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
