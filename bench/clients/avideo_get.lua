-- avideo client of the benchmarks: N GETs of one URL through one session,
-- each answer's status checked and its body decoded as JSON.
--
--   lua5.4 avideo_get.lua URL N LIMIT [--session-limit | --limit-per-host]
--                         [--hold SECONDS | --cancel] [--discard] [--count-alloc]
--                         [--trace FILE]
--
-- Where LIMIT goes:
--   (default)          gather's: `avideo.gather(tasks, {limit = LIMIT})` on a
--                      session without limit, so at most LIMIT coroutines
--                      live at once: the client-cost benchmark;
--   --session-limit    the session's: `avideo.session{limit = LIMIT}` and
--                      one gather of all N, so N - LIMIT requests wait
--                      queued in the session: the memory benchmark;
--   --limit-per-host   the talk's pattern: `avideo.session{limit_per_host =
--                      LIMIT}` and one gather of all N without a gather
--                      limit. The session's total limit stays at its
--                      default, 100, which would bind above 100: there it
--                      is raised to LIMIT, so that LIMIT run at once.
-- gather returns every decoded document, kept until the end; --discard
-- returns nothing per request instead (the C baseline's --discard).
-- --hold stops after SECONDS whatever is still in flight: the memory
-- benchmarks read the peak RSS while requests wait on a slow server.
-- --cancel (on a server that holds requests): once all N are in the
-- session (LIMIT in flight, the rest queued), cancel the task waiting in
-- the gather, as avideo.timeout's watchdog does, and time it:
-- cancel_seconds from the cancel to the end of the gather (the cancelled
-- error raised out of it), settle_seconds until every task it started has
-- ended; queue_seconds is how long queueing all N took.
-- --count-alloc stops the Lua GC around the work (session, tasks, gather)
-- and reports lua_bytes, the bytes the Lua state allocated meanwhile
-- (collectgarbage("count")): a counting run, not a timed one.
-- --trace records the run with avideo.trace into FILE (its format from the
-- extension) and reports trace_write_seconds, the CPU the file's writing
-- took at the end (part of the run's CPU too).
-- Prints "RESULT requests=N finished=F errors=0 ..."; any failed request
-- raises out of gather, so the script fails. Runs under LuaJIT too (the
-- avideo-luajit row): sessions are closed with :close(), not <close>.
local avideo = require "avideo"

local function usage()
  io.stderr:write("usage: avideo_get.lua URL N LIMIT [--session-limit | --limit-per-host]"
    .. " [--hold SECONDS | --cancel] [--discard] [--count-alloc] [--trace FILE]\n")
  os.exit(2)
end

local url, n, limit = arg[1], tonumber(arg[2]), tonumber(arg[3])
if not (url and n and limit) then usage() end
local where, hold, cancel, discard, count_alloc, trace = "gather", nil, false, false, false, nil
local i = 4
while arg[i] do
  if arg[i] == "--session-limit" then
    where, i = "session", i + 1
  elseif arg[i] == "--limit-per-host" then
    where, i = "per_host", i + 1
  elseif arg[i] == "--discard" then
    discard, i = true, i + 1
  elseif arg[i] == "--count-alloc" then
    count_alloc, i = true, i + 1
  elseif arg[i] == "--cancel" then
    cancel, i = true, i + 1
  elseif arg[i] == "--trace" and arg[i + 1] then
    trace, i = arg[i + 1], i + 2
  elseif arg[i] == "--hold" and tonumber(arg[i + 1]) then
    hold, i = tonumber(arg[i + 1]), i + 2
  else
    usage()
  end
end
if hold and cancel then usage() end

local function new_session()
  if where == "session" then return avideo.session { limit = limit } end
  if where == "per_host" then
    if limit > 100 then return avideo.session { limit_per_host = limit, limit = limit } end
    return avideo.session { limit_per_host = limit }
  end
  return avideo.session { limit = 0 }
end
local gather_opts = { limit = where == "gather" and limit or nil }

-- Every decoded document returned (kept by gather), or none (--discard).
local function get_tasks(session)
  local tasks = {}
  for t = 1, n do
    if discard then
      tasks[t] = function() session:get(url):raise_for_status():json() return true end
    else
      tasks[t] = function() return session:get(url):raise_for_status():json() end
    end
  end
  return tasks
end

local function result(fields)
  local out = { ("RESULT requests=%d"):format(n) }
  for _, kv in ipairs(fields) do out[#out + 1] = ("%s=%s"):format(kv[1], kv[2]) end
  io.stdout:write(table.concat(out, " "), "\n")
  io.stdout:flush()
end

if hold then
  avideo.run(function()
    local session = new_session()
    local done = 0
    local tasks = {}
    for t = 1, n do
      tasks[t] = function()
        local video = session:get(url):raise_for_status():json()
        done = done + 1
        return video
      end
    end
    avideo.spawn(avideo.gather, tasks, gather_opts)
    avideo.sleep(hold)
    result { { "finished", done }, { "errors", 0 } }
    os.exit(0, false) -- leave the rest in flight: the process ends here
  end)
end

if cancel then
  -- Progress goes to stderr, so that a run that hangs says where.
  local started = avideo.now()
  local function progress(fmt, ...)
    io.stderr:write(("avideo_get.lua: %.3f s: "):format(avideo.now() - started), fmt:format(...), "\n")
    io.stderr:flush()
  end
  avideo.run(function()
    local session = new_session()
    local base_tasks = avideo.stats().tasks
    local t0 = avideo.now()
    local g = avideo.spawn(avideo.gather, get_tasks(session), gather_opts)
    local s
    repeat
      avideo.sleep(0.01)
      s = session:stats()
      if avideo.now() - t0 > 60 then
        error(("only %d of %d requests in the session after 60 s"):format(s.in_flight + s.queued, n), 0)
      end
    until s.in_flight + s.queued >= n or g:done()
    local queued_at = avideo.now()
    progress("%d in flight, %d queued", s.in_flight, s.queued)
    avideo.sleep(0.2) -- let the connections settle: the loop is idle when the cancel comes
    s = session:stats()
    progress("%d in flight, %d queued; cancelling", s.in_flight, s.queued)
    local c0 = avideo.now()
    g:cancel("cancelled by the benchmark")
    local ok, err = pcall(g.wait, g)
    local c1 = avideo.now()
    progress("the gather ended")
    while avideo.stats().tasks > base_tasks do avideo.sleep(0) end
    local c2 = avideo.now()
    progress("its tasks ended")
    if ok or not avideo.is_error(err, "cancelled") then
      error("the gather was not cancelled: " .. (ok and "it ended" or tostring(err)), 0)
    end
    -- measured: say so now, whatever the end of the run does
    result { { "finished", 0 }, { "errors", 0 }, { "in_flight", s.in_flight }, { "queued", s.queued },
             { "queue_seconds", ("%.4f"):format(queued_at - t0) },
             { "cancel_seconds", ("%.4f"):format(c1 - c0) },
             { "settle_seconds", ("%.4f"):format(c2 - c0) }, { "left_queued", session:stats().queued } }
    session:close()
  end)
  progress("the run ended")
  return
end

local lua_bytes
if trace then avideo.trace.start(trace) end
local finished = avideo.run(function()
  local before
  if count_alloc then
    collectgarbage("collect")
    collectgarbage("stop")
    before = collectgarbage("count")
  end
  local session = new_session()
  local got = #avideo.gather(get_tasks(session), gather_opts)
  session:close()
  if count_alloc then
    lua_bytes = (collectgarbage("count") - before) * 1024
    collectgarbage("restart")
  end
  return got
end)
local fields = { { "finished", finished }, { "errors", 0 } }
if trace then
  local c0 = os.clock()
  avideo.trace.stop()
  fields[#fields + 1] = { "trace_write_seconds", ("%.4f"):format(os.clock() - c0) }
end
if lua_bytes then fields[#fields + 1] = { "lua_bytes", ("%.0f"):format(lua_bytes) } end
result(fields)
