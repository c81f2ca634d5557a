-- The talk's content-warnings service, version 3: the final async version.
-- A video and its transcript are fetched together (gather), each endpoint
-- behind its own semaphore (5 videos, 10 transcripts at a time, below what
-- the service can take), the CPU-bound model runs in a worker thread so the
-- loop keeps serving the other tasks, and the warnings are PATCHed back as
-- {"warnings": [...]} (an empty list goes out as []).
--
--   lua5.4 examples/content_warnings_async_final.lua [--url URL] [--n 100] [--model-seconds 1.0] [--trace FILE]
dofile((arg[0]:match("^.*/") or "") .. "lib/bootstrap.lua")
local avideo = require "avideo"
local model = require "model"
local talk = require "talk"

-- --url, --n, --model-seconds (opts.work: the model's steps for that long);
-- the timeline log; the API calls of lib/videos.lua, logged on it
local opts, log, api = talk.service()
local run_model = log:stage("model", function(_, video, transcript)
  return avideo.run_in_thread(model.predict, video, transcript, opts.work)
end)

local function process_video(video_id, session, video_sem, transcript_sem)
  local video, transcript = table.unpack(avideo.gather(
    function() return video_sem:with(api.get_video, video_id, session) end,
    function() return transcript_sem:with(api.get_transcript, video_id, session) end))
  local warnings = run_model(video_id, video, transcript)
  api.patch_video(video_id, session, { warnings = avideo.json.array(warnings) })
  return { id = video_id, warnings = warnings }
end

local results = avideo.run(function()
  local session <close> = avideo.session { base_url = opts.url }
  local video_sem, transcript_sem = avideo.semaphore(5), avideo.semaphore(10)
  local tasks = {}
  for i, video_id in ipairs(api.get_video_ids(session, opts.n)) do
    tasks[i] = function() return process_video(video_id, session, video_sem, transcript_sem) end
  end
  return avideo.gather(tasks)
end)
log:summary(results)
