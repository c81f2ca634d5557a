-- The talk's notebook (PyData Global 2024, "Let's get you started with
-- asynchronous programming"), cell by cell: the list of ids, the
-- synchronous get (requests), the asynchronous get (aiohttp), four
-- sequential awaits, then 100 gets gathered with limit_per_host = 100 (the
-- server overloads) and with 10. Each cell prints its output and wall time.
--
--   lua5.4 examples/notebook.lua [--url http://127.0.0.1:8000] [--trace run.svg]
dofile((arg[0]:match("^.*/") or "") .. "lib/bootstrap.lua")
local avideo = require "avideo"
local talk = require "talk"

local API_URL = talk.options({ "url", "trace" }).url

-- In [3]: get the list of video ids from the server to use later.
-- If this fails check the server is running (lua5.4 examples/demo.lua starts one).
talk.cell(3, "list of video ids")
local response = avideo.get(API_URL .. "/videos?n=100")
response:raise_for_status()
local valid_ids = response:json()
local video_id = valid_ids[1]
talk.out(video_id)

-- Normal (synchronous) version: outside any task a request simply blocks.
talk.cell(4, "get_video(video_id), synchronous")
local function get_video(id)
  local r = avideo.get(API_URL .. "/videos/" .. id)
  r:raise_for_status()
  return r:json()
end

talk.out(get_video(video_id))

-- Asynchronous version: inside a task the same call yields to the loop.
-- (The notebook awaits at top level; a script starts the loop with avideo.run.)
talk.cell(5, "get_video_async(video_id), asynchronous")
local function get_video_async(id)
  local session <close> = avideo.session()
  local r = session:get(API_URL .. "/videos/" .. id)
  r:raise_for_status()
  return r:json()
end

local video = avideo.run(get_video_async, video_id)
talk.out(video)

-- A task waits for each call in turn, so this takes 4x as long as one call:
-- the same as the synchronous version, one at a time.
talk.cell(6, "multiple_calls(): four sequential awaits")
local function multiple_calls()
  get_video_async(valid_ids[1])
  get_video_async(valid_ids[2])
  get_video_async(valid_ids[3])
  get_video_async(valid_ids[4])
end

avideo.run(multiple_calls)
talk.out()

-- Let's make 100 calls to the endpoint: avideo.gather runs them
-- concurrently. get_video_async now takes the session to share.
local function get_video_with_session(id, session)
  local r = session:get(API_URL .. "/videos/" .. id)
  r:raise_for_status()
  return r:json()
end

local function fetch_all_videos(video_ids, limit_per_host)
  local session <close> = avideo.session { limit_per_host = limit_per_host or 10 }
  local tasks = {}
  for i, id in ipairs(video_ids) do
    tasks[i] = function() return get_video_with_session(id, session) end
  end
  return avideo.gather(tasks)
end

-- First no limit: let's overwhelm the server.
talk.cell(8, "fetch_all_videos(valid_ids, limit_per_host = 100)")
local videos = avideo.run(fetch_all_videos, valid_ids, 100)
talk.out(#videos)

-- Now a limit, so we aren't making too many requests at the same time
-- (remember the default is 100!).
talk.cell(9, "fetch_all_videos(valid_ids, limit_per_host = 10)")
videos = avideo.run(fetch_all_videos, valid_ids, 10)
talk.out(#videos)
