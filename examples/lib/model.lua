--- The content-warnings "model" of the talk: honest CPU work standing in
-- for inference, then a verdict. It flags the watch-list words a
-- transcript mentions (nasa, as in the talk).
--
-- `predict` uses no upvalue and no module-level state (only globals, which
-- inside a worker are the worker state's own), so it can be handed to
-- `avideo.run_in_thread` as it is.
local M = {}

--- The warnings for a video (its title and description) and its
-- transcript, after `work` steps of arithmetic over the text (an FNV-1a
-- hash run round and round it). Returns a plain list of words.
function M.predict(video, transcript, work)
  local text = video.title .. "\n" .. video.description .. "\n\n" .. transcript
  local h, n = 0x811c9dc5, #text
  for i = 0, work - 1 do
    h = ((h ~ text:byte(i % n + 1)) * 0x01000193) & 0xffffffff
  end
  -- the talk's model: the text lowercased, split on whitespace, and the
  -- word "nasa" flagged (as Python's `"nasa" in text.lower().split()`: a
  -- "NASA." that ends a sentence is another word, and not flagged)
  local warnings = {}
  for word in text:lower():gmatch("%S+") do
    if word == "nasa" then
      warnings[1] = "nasa"
      break
    end
  end
  return warnings, h
end

--- How many `work` steps make about `seconds` of CPU time on this machine,
-- measured now (on one core, before anything else runs).
function M.calibrate(seconds)
  if seconds <= 0 then return 0 end
  local video = { title = "Calibration.", description = "All work and no play makes a slow model." }
  local work, spent = 1000, 0
  while spent < 0.05 do
    work = work * 2
    local t = os.clock()
    M.predict(video, video.description:rep(40), work)
    spent = os.clock() - t
  end
  return math.floor(work / spent * seconds)
end

return M
