-- Timeouts and cancelling a batch: a request's own `timeout`, and a
-- deadline for a whole batch that keeps what finished in time.
--
--   lua5.4 examples/recipes/timeouts.lua AVIDEO_URL [SECONDS]
-- (against avideo-server at its real speed a video takes 0.2 s, and ten
-- at a time are served)
local avideo = require "avideo"

local URL = arg[1] or os.getenv("AVIDEO_URL") or "http://127.0.0.1:8000"
local DEADLINE = tonumber(arg[2]) or 0.5

avideo.run(function()
  local s <close> = avideo.session { base_url = URL, limit_per_host = 10, raise_for_status = true }
  local ids = s:get("/videos", { params = { n = 100 } }):json()

  -- One request: `timeout` is seconds in total, or per phase
  -- ({total, connect, sock_read, pool}); a timeout error names its phase.
  local ok, err = pcall(s.get, s, "/videos/" .. ids[1], { timeout = { sock_read = 0.05 } })
  print(("one request: %s, %s error (%s)"):format(ok, err.kind, err.phase))

  -- A batch with a deadline: spawn the tasks, wait for all of them under
  -- avideo.timeout, and on timeout keep the ones that ended and cancel the
  -- rest (each frees its slot at once).
  local tasks = {}
  for i, id in ipairs(ids) do
    tasks[i] = avideo.spawn(function() return s:get("/videos/" .. id):json() end)
  end
  local t0 = avideo.now()
  local in_time = pcall(avideo.timeout, DEADLINE, function()
    for _, t in ipairs(tasks) do t:wait() end
  end)
  local videos, cancelled = {}, 0
  for _, t in ipairs(tasks) do
    if t:done() then
      videos[#videos + 1] = t:result()
    else
      t:cancel()
      cancelled = cancelled + 1
    end
  end
  print(("batch: all in time %s; %d videos kept, %d cancelled after %.1f s")
    :format(in_time, #videos, cancelled, avideo.now() - t0))
end)
