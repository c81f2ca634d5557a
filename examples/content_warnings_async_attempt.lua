-- The talk's content-warnings service, version 2: the first async attempt.
-- Every video is processed in its own task and gathered, but the model is
-- CPU-bound and runs inline: while one task computes, no other task can
-- run, requests that finished wait to be read, and connections sit idle.
-- In the talk the starved loop then sent a request on a connection the
-- server had closed after 5 s idle, and the run failed with a reset. Here
-- it fails too, on a connection opened just before a stall
-- (docs/walkthrough.md shows how).
--
--   lua5.4 examples/content_warnings_async_attempt.lua [--url URL] [--n 100] [--model-seconds 1.0] [--trace FILE]
dofile((arg[0]:match("^.*/") or "") .. "lib/bootstrap.lua")
local avideo = require "avideo"
local model = require "model"
local talk = require "talk"

-- --url, --n, --model-seconds (opts.work: the model's steps for that long);
-- the timeline log; the API calls of lib/videos.lua, logged on it
local opts, log, api = talk.service()
local run_model = log:stage("model", function(_, video, transcript)
  return model.predict(video, transcript, opts.work) -- blocks the loop
end)

local function process_video(video_id, session)
  local video = api.get_video(video_id, session)
  local transcript = api.get_transcript(video_id, session)
  local warnings = run_model(video_id, video, transcript)
  api.patch_video(video_id, session, { warnings = avideo.json.array(warnings) })
  return { id = video_id, warnings = warnings }
end

local results = avideo.run(function()
  local session <close> = avideo.session { base_url = opts.url, limit_per_host = 10 }
  local tasks = {}
  for i, video_id in ipairs(api.get_video_ids(session, opts.n)) do
    tasks[i] = function() return process_video(video_id, session) end
  end
  return avideo.gather(tasks)
end)
log:summary(results)
