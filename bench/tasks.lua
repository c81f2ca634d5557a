--- bench/tasks.lua: what avideo's task machinery costs, next to a plain
-- Lua coroutine resume/yield measured in the same run.
--
--   LUA_CPATH='build/lib/?.so;;' lua5.4 bench/tasks.lua [scale]
--
-- Each row runs many iterations and reports process CPU time per operation
-- (os.clock, so run_in_thread rows include the worker threads' CPU), its
-- ratio to resume/yield, and wall time per operation. `scale` (default 1)
-- multiplies every iteration count.
local root = (arg and arg[0] or ""):match("^(.*)/bench/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. package.path
package.cpath = package.cpath .. ";" .. root .. "/build/lib/?.so"

local avideo = require "avideo"

local scale = tonumber(arg and arg[1]) or 1
local now = avideo.now

local rows = {}

-- Time body(n) (which does n operations) in CPU and wall time; keep the best
-- of three runs, so a stray preemption does not decide the figure.
local function measure(name, n, body)
  n = math.max(1, math.floor(n * scale))
  body(math.max(1, n // 10)) -- warm up
  local best_cpu, best_wall = math.huge, math.huge
  for _ = 1, 3 do
    collectgarbage()
    local c0, w0 = os.clock(), now()
    body(n)
    local cpu, wall = os.clock() - c0, now() - w0
    if cpu < best_cpu then best_cpu, best_wall = cpu, wall end
  end
  rows[#rows + 1] = { name = name, n = n, cpu = best_cpu / n * 1e9, wall = best_wall / n * 1e9 }
end

-- Baseline: one coroutine resumed and yielding, n times.
measure("coroutine resume/yield (plain Lua)", 2000000, function(n)
  local co = coroutine.wrap(function()
    while true do coroutine.yield() end
  end)
  for _ = 1, n do co() end
end)

measure("avideo.sleep(0) (yield to the scheduler)", 300000, function(n)
  avideo.run(function()
    for _ = 1, n do avideo.sleep(0) end
  end)
end)

local function noop() end

measure("spawn + wait, one task at a time", 300000, function(n)
  avideo.run(function()
    for _ = 1, n do avideo.spawn(noop):wait() end
  end)
end)

measure("spawn 1000, then wait each (per task)", 300000, function(n)
  avideo.run(function()
    local tasks = {}
    for done = 0, n - 1, 1000 do
      local k = math.min(1000, n - done)
      for i = 1, k do tasks[i] = avideo.spawn(noop) end
      for i = 1, k do tasks[i]:wait() end
    end
  end)
end)

measure("semaphore acquire + release, free", 2000000, function(n)
  local sem = avideo.semaphore(1)
  for _ = 1, n do
    sem:acquire()
    sem:release()
  end
end)

-- Two tasks contend for one unit, holding it across a yield: every acquire
-- waits and every release hands the unit over (includes that sleep(0)).
measure("semaphore handover between 2 tasks (+ sleep(0))", 200000, function(n)
  local sem = avideo.semaphore(1)
  local function worker(k)
    for _ = 1, k do
      sem:acquire()
      avideo.sleep(0)
      sem:release()
    end
  end
  avideo.run(function()
    avideo.gather(function() worker(n // 2) end, function() worker(n - n // 2) end)
  end)
end)

local function square(x) return x * x end

measure("run_in_thread round trip, one at a time", 5000, function(n)
  avideo.run(function()
    for i = 1, n do assert(avideo.run_in_thread(square, i) == i * i) end
  end)
end)

measure("run_in_thread, 100 in flight (per call)", 10000, function(n)
  avideo.run(function()
    for done = 0, n - 1, 100 do
      local fns = {}
      for i = 1, math.min(100, n - done) do
        fns[i] = function() return avideo.run_in_thread(square, i) end
      end
      avideo.gather(fns)
    end
  end)
end)

local s = avideo.stats()
assert(s.tasks == 0 and s.ops == 0, "bench left tasks or ops behind")

local base = rows[1].cpu
print(("avideo %s, %s"):format(avideo._VERSION, _VERSION))
print(("%-50s %10s %12s %10s %12s"):format("operation", "iterations", "CPU ns/op", "x resume", "wall ns/op"))
for _, r in ipairs(rows) do
  print(("%-50s %10d %12.0f %10.1f %12.0f"):format(r.name, r.n, r.cpu, r.cpu / base, r.wall))
end
