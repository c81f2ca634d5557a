-- The talk's content-warnings service, version 1: synchronous, like
-- `requests`. For each video, one after the other: fetch the video, fetch
-- its transcript, run the (CPU-bound) model, PATCH the warnings back.
-- Nothing overlaps, so the run takes the sum of every wait and every model.
--
--   lua5.4 examples/content_warnings_sync.lua [--url URL] [--n 100] [--model-seconds 1.0] [--trace FILE]
dofile((arg[0]:match("^.*/") or "") .. "lib/bootstrap.lua")
local avideo = require "avideo"
local model = require "model"
local talk = require "talk"

-- --url, --n, --model-seconds (opts.work: the model's steps for that long);
-- the timeline log; the API calls of lib/videos.lua, logged on it
local opts, log, api = talk.service()
local run_model = log:stage("model", function(_, video, transcript)
  return model.predict(video, transcript, opts.work)
end)

local function process_video(video_id, session)
  local video = api.get_video(video_id, session)
  local transcript = api.get_transcript(video_id, session)
  local warnings = run_model(video_id, video, transcript)
  api.patch_video(video_id, session, { warnings = avideo.json.array(warnings) })
  return { id = video_id, warnings = warnings }
end

-- Outside avideo.run every request simply blocks.
local session <close> = avideo.session { base_url = opts.url }
local results = {}
for i, video_id in ipairs(api.get_video_ids(session, opts.n)) do
  results[i] = process_video(video_id, session)
end
log:summary(results)
