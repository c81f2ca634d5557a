-- Progress over a big gather: avideo.as_completed hands each result over
-- as it completes (index, ok, value or error), so a long batch can report
-- as it goes and failures do not stop the rest.
--
--   lua5.4 examples/recipes/progress.lua AVIDEO_URL [N]
local avideo = require "avideo"

local URL = arg[1] or os.getenv("AVIDEO_URL") or "http://127.0.0.1:8000"
local N = tonumber(arg[2]) or 100

avideo.run(function()
  local s <close> = avideo.session { base_url = URL, limit_per_host = 10, raise_for_status = true }
  local ids = s:get("/videos", { params = { n = N } }):json()
  ids[#ids + 1] = "no-such-video" -- one that fails: a 404
  local jobs = {}
  for i, id in ipairs(ids) do
    jobs[i] = function() return s:get("/videos/" .. id):json() end
  end
  local done, failed, views = 0, 0, {}
  for i, ok, value in avideo.as_completed(jobs) do
    if ok then
      done = done + 1
      views[i] = value.views
    else
      failed = failed + 1
      print(("failed: %s (%s)"):format(ids[i], value.kind))
    end
    if (done + failed) % 25 == 0 or done + failed == #jobs then
      print(("progress: %d/%d"):format(done + failed, #jobs))
    end
  end
  print(("done %d, failed %d"):format(done, failed))
end)
