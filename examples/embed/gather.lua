-- The script the C host (host.c) runs: it returns the function the host
-- starts as an avideo task, with the host's arguments (API URL, how many
-- videos). The task gathers the videos the way the talk does, ten at a time.
-- It runs on 5.4, 5.3, 5.1 and LuaJIT alike: session:close() at the end,
-- not 5.4's <close> (after an error, the garbage collector closes it).
local avideo = require "avideo"

return function(api_url, n)
  n = tonumber(n) or 20
  local session = avideo.session { limit_per_host = 10 }
  local ids = session:get(api_url .. "/videos?n=" .. n):raise_for_status():json()
  local tasks = {}
  for i, id in ipairs(ids) do
    tasks[i] = function()
      return session:get(api_url .. "/videos/" .. id):raise_for_status():json()
    end
  end
  local videos = avideo.gather(tasks)
  session:close()
  assert(#videos == n, ("asked for %d videos, got %d"):format(n, #videos))
  local views = 0
  for _, video in ipairs(videos) do views = views + video.views end
  return #videos, views
end
