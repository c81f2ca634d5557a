-- The talk's scenario in avideo: fetch 100 video ids, then the 100 videos.
--
--   lua5.4 avideo_videos.lua API_URL MODE
--
-- MODE: sequential (a blocking avideo.get per video, like requests),
-- gather (every video at once, limit_per_host = 100: the overloaded server)
-- or limit10 (limit_per_host = 10: the server's capacity, about 2.0 s).
-- Prints "RESULT seconds=S videos=N", S timing the 100 video requests only.
local avideo = require "avideo"

local API_URL, mode = arg[1], arg[2]
local limits = { gather = 100, limit10 = 10 }
if not API_URL or not (mode == "sequential" or limits[mode]) then
  io.stderr:write("usage: avideo_videos.lua API_URL sequential|gather|limit10\n")
  os.exit(2)
end

local ids = avideo.get(API_URL .. "/videos?n=100"):raise_for_status():json()

local function get_video(id, session)
  local response = session:get(API_URL .. "/videos/" .. id)
  response:raise_for_status()
  return response:json()
end

local started = avideo.now()
local videos
if mode == "sequential" then
  videos = {}
  for i, id in ipairs(ids) do
    videos[i] = avideo.get(API_URL .. "/videos/" .. id):raise_for_status():json()
  end
else
  videos = avideo.run(function()
    local session <close> = avideo.session { limit_per_host = limits[mode] }
    local tasks = {}
    for i, id in ipairs(ids) do
      tasks[i] = function() return get_video(id, session) end
    end
    return avideo.gather(tasks)
  end)
end
print(("RESULT seconds=%.4f videos=%d"):format(avideo.now() - started, #videos))
