--- Issue 18's numbers, against avideo-server at capacities nobody tells
-- the client:
--  1. the table: the talk's 100 and 1,000 videos at capacity 10 and 40,
--     fixed limit_per_host 5/10/20/100 next to "auto" (wall time and the
--     server's most requests in flight, from its /stats), one run each at
--     --scale (default 0.1: a few seconds a row);
--  2. the targets: "auto" against the right fixed limit (the capacity) in
--     the same run, medians over --reps (default 3) at --target-scale
--     (default 1: the talk's own time, where a millisecond of scheduling
--     noise is 0.5% of a round trip, not 5%). About a minute a repetition.
--
--   lua5.4 bench/adaptive.lua [--scale S] [--target-scale S] [--reps N] [--targets-only]
--
-- Times are printed in the talk's seconds (measured / scale). Needs the
-- module and the emulator built (LUA_CPATH, AVIDEO_SERVER as for the specs).
local avideo = require "avideo"

local opts = { scale = 0.1, ["target-scale"] = 1, reps = 3 }
do
  local i = 1
  while arg[i] do
    local name = arg[i]:match("^%-%-(.+)$")
    if name == "targets-only" then
      opts[name] = true
    elseif name and opts[name] and tonumber(arg[i + 1]) then
      opts[name] = tonumber(arg[i + 1])
      i = i + 1
    else
      io.stderr:write("usage: lua5.4 bench/adaptive.lua [--scale S] [--target-scale S] [--reps N] [--targets-only]\n")
      os.exit(2)
    end
    i = i + 1
  end
end

-- Gather the first n videos at limit; the wall time in the talk's seconds
-- and the server's most in flight during the run.
local function run(server, ids, n, limit, scale)
  avideo.run(function()
    local s <close> = avideo.session()
    s:get(server.url .. "/stats?reset=1")
  end)
  local t0 = avideo.now()
  avideo.run(function()
    local s <close> = avideo.session { limit_per_host = limit }
    local fns = {}
    for i = 1, n do fns[i] = function() return s:get(server.url .. "/videos/" .. ids[i], { raise_for_status = true }) end end
    avideo.gather(fns)
  end)
  local took = avideo.now() - t0
  -- the reset request was the one in flight when the count restarted: the
  -- run's own most is what the server reports
  return took / scale, server:stats().max_in_flight
end

local function start(capacity, scale)
  local server = avideo.testing.server { time_scale = scale, args = { "--video-capacity", capacity } }
  local ids = avideo.run(function()
    local s <close> = avideo.session()
    return s:get(server.url .. "/videos/?n=1000"):json()
  end)
  return server, ids
end

local function median(t)
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

if not opts["targets-only"] then
  print(("## The table (time scale %g, one run a row; times in the talk's seconds)"):format(opts.scale))
  print()
  print("| capacity | videos | limit_per_host | wall time | server's most in flight |")
  print("|---:|---:|---|---:|---:|")
  for _, capacity in ipairs { 10, 40 } do
    local server, ids = start(capacity, opts.scale)
    for _, n in ipairs { 100, 1000 } do
      for _, limit in ipairs { 5, 10, 20, 100, "auto" } do
        local took, most = run(server, ids, n, limit, opts.scale)
        print(("| %d | %d | %s | %.2f s | %d |"):format(capacity, n, tostring(limit), took, most))
        io.stdout:flush()
      end
    end
    server:close()
  end
  print()
end

-- The issue's targets: auto / the right fixed limit, same run.
local TARGETS = { { 10, 100, 1.25 }, { 10, 1000, 1.15 }, { 40, 1000, 1.25 } }
local scale = opts["target-scale"]
print(("## The targets (time scale %g, medians of %d runs, auto against a fixed limit at the capacity)"):format(
  scale, opts.reps))
print()
print("| capacity | videos | fixed | auto | auto / fixed | target | each run's ratio | auto's most in flight |")
print("|---:|---:|---:|---:|---:|---:|---|---:|")
for _, t in ipairs(TARGETS) do
  local capacity, n, target = t[1], t[2], t[3]
  local server, ids = start(capacity, scale)
  local fixed, auto, ratios, most = {}, {}, {}, 0
  for r = 1, opts.reps do
    fixed[r] = run(server, ids, n, capacity, scale)
    local m
    auto[r], m = run(server, ids, n, "auto", scale)
    ratios[r] = ("%.2f"):format(auto[r] / fixed[r])
    if m > most then most = m end
  end
  server:close()
  local f, a = median(fixed), median(auto)
  print(("| %d | %d | %.2f s | %.2f s | %.2f | %.2f | %s | %d |"):format(capacity, n, f, a, a / f, target,
    table.concat(ratios, " "), most))
  io.stdout:flush()
end
