--- Issue 18's table: the talk's 100 and 1,000 videos at server capacity 10
-- and 40, fixed limit_per_host 5/10/20/100 next to "auto": wall time and
-- the server's most requests in flight (its /stats).
--
--   lua5.4 bench/adaptive.lua [time_scale]     (default 0.1; times are
--   printed scaled back to the talk's seconds, i.e. divided by the scale)
--
-- Needs the module and the emulator built (LUA_CPATH, AVIDEO_SERVER as for
-- the specs). A few seconds of wall time per row at the default scale.
local avideo = require "avideo"

local scale = tonumber(arg[1] or "0.1")
local LIMITS = { 5, 10, 20, 100, "auto" }

local function run(server, ids, n, limit)
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

print(("time scale %g; times in the talk's seconds (measured / scale)"):format(scale))
print()
print("| capacity | videos | limit_per_host | wall time | server's most in flight |")
print("|---:|---:|---|---:|---:|")
for _, capacity in ipairs { 10, 40 } do
  local server = avideo.testing.server { time_scale = scale, args = { "--video-capacity", capacity } }
  local ids = avideo.run(function()
    local s <close> = avideo.session()
    return s:get(server.url .. "/videos/?n=1000"):json()
  end)
  for _, n in ipairs { 100, 1000 } do
    for _, limit in ipairs(LIMITS) do
      local took, most = run(server, ids, n, limit)
      print(("| %d | %d | %s | %.2f s | %d |"):format(capacity, n, tostring(limit), took, most))
      io.stdout:flush()
    end
  end
  server:close()
end
