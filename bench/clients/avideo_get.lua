-- avideo client of the benchmarks: N GETs of one URL through one session,
-- each answer's status checked and its body decoded as JSON.
--
--   lua5.4 avideo_get.lua URL N LIMIT [--session-limit] [--hold SECONDS] [--discard]
--
-- By default LIMIT is gather's (`{limit = LIMIT}`) and the session has none,
-- so at most LIMIT coroutines live at once: the client-cost benchmark.
-- --session-limit moves it to the session (`avideo.session{limit = LIMIT}`)
-- and gathers all N at once, so N - LIMIT requests wait queued in the
-- session: the memory benchmark of queued requests.
-- gather returns every decoded document, kept until the end; --discard
-- returns nothing per request instead (the C baseline's --discard).
-- --hold stops after SECONDS whatever is still in flight: the memory
-- benchmarks read the peak RSS while requests wait on a slow server.
-- Prints "RESULT requests=N finished=F errors=0"; any failed request
-- raises out of gather, so the script fails.
local avideo = require "avideo"

local function usage()
  io.stderr:write("usage: avideo_get.lua URL N LIMIT [--session-limit] [--hold SECONDS] [--discard]\n")
  os.exit(2)
end

local url, n, limit = arg[1], tonumber(arg[2]), tonumber(arg[3])
if not (url and n and limit) then usage() end
local session_limit, hold, discard = false, nil, false
local i = 4
while arg[i] do
  if arg[i] == "--session-limit" then
    session_limit, i = true, i + 1
  elseif arg[i] == "--discard" then
    discard, i = true, i + 1
  elseif arg[i] == "--hold" and tonumber(arg[i + 1]) then
    hold, i = tonumber(arg[i + 1]), i + 2
  else
    usage()
  end
end

local finished = avideo.run(function()
  local session <close> = avideo.session { limit = session_limit and limit or 0 }
  local gather_opts = { limit = not session_limit and limit or nil }
  local tasks = {}
  if not hold then
    for t = 1, n do
      if discard then
        tasks[t] = function() session:get(url):raise_for_status():json() return true end
      else
        tasks[t] = function() return session:get(url):raise_for_status():json() end
      end
    end
    return #avideo.gather(tasks, gather_opts)
  end
  local done = 0
  for t = 1, n do
    tasks[t] = function()
      local video = session:get(url):raise_for_status():json()
      done = done + 1
      return video
    end
  end
  avideo.spawn(avideo.gather, tasks, gather_opts)
  avideo.sleep(hold)
  io.stdout:write(("RESULT requests=%d finished=%d errors=0\n"):format(n, done))
  io.stdout:flush()
  os.exit(0, false) -- leave the rest in flight: the process ends here
end)
print(("RESULT requests=%d finished=%d errors=0"):format(n, finished))
