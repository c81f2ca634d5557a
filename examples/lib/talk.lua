--- What the examples share so that they can read like the talk: command
-- line options, the notebook's "In/Out" cells with their wall time, and the
-- talk's timeline log of the content-warnings service.
local avideo = require "avideo"
local model = require "model"
local videos = require "videos"

local M = {}

-- ============================== OPTIONS ==============================

local OPTIONS = {
  url = { default = "http://127.0.0.1:8000", help = "the avideo-server to talk to" },
  n = { default = 100, number = "integer", help = "how many videos" },
  model_seconds = { default = 1.0, number = "float", help = "CPU seconds of the model per video" },
  time_scale = { number = "float", help = "passed to the avideo-server it starts" },
  trace = { arg = "FILE", help = "write a trace of the run: .json (Perfetto), .har or .svg" },
  out = { arg = "DIR", default = "docs/images", help = "where to write the pictures" },
}

local function usage(accepted, problem)
  local lines = { ("usage: lua5.4 %s [options]"):format(arg and arg[0] or "example.lua") }
  for _, name in ipairs(accepted) do
    local o = OPTIONS[name]
    lines[#lines + 1] = ("  --%-15s %s%s"):format(name:gsub("_", "-") .. " " .. (o.arg or o.number and "N" or "URL"),
      o.help, o.default and (" (default " .. tostring(o.default) .. ")") or "")
  end
  if problem then
    io.stderr:write(problem, "\n", table.concat(lines, "\n"), "\n")
    os.exit(2)
  end
  print(table.concat(lines, "\n"))
  os.exit(0)
end

--- Parse `arg` for the named options (`--model-seconds 2` or
-- `--model-seconds=2`); returns a table keyed by the names given.
-- A bad option prints the usage on stderr and exits with status 2.
function M.options(accepted)
  accepted = accepted or { "url" }
  local allowed, out = {}, {}
  for _, name in ipairs(accepted) do
    allowed[name] = true
    out[name] = OPTIONS[name].default
  end
  local i = 1
  while arg and arg[i] do
    local a = arg[i]
    if a == "-h" or a == "--help" then usage(accepted) end
    local name, value = a:match("^%-%-([%w-]+)=(.*)$")
    if not name then
      name = a:match("^%-%-([%w-]+)$")
      i = i + 1
      value = arg[i]
    end
    name = name and name:gsub("-", "_")
    if not allowed[name] then usage(accepted, "unknown argument: " .. a) end
    if value == nil then usage(accepted, "missing value after " .. a) end
    local kind = OPTIONS[name].number
    if kind then
      local v = tonumber(value)
      if not v or v < 0 or (kind == "integer" and math.type(v) ~= "integer") then
        usage(accepted, ("--%s wants a %s >= 0, got '%s'"):format(name:gsub("_", "-"),
          kind == "integer" and "whole number" or "number", value))
      end
      value = v
    end
    out[name] = value
    i = i + 1
  end
  if out.url then out.url = out.url:gsub("/+$", "") end
  if out.trace then
    -- the whole run, written when the program ends (the state closes)
    avideo.trace.start(out.trace)
    M.trace_sentinel = setmetatable({}, { __gc = function()
      if avideo.trace.active() then avideo.trace.stop() end
    end })
  end
  return out
end

-- =============================== CELLS ===============================

-- Values shown the way the notebook shows them; a video's keys in the
-- server's order, other tables' keys sorted.
local KEY_ORDER = { id = 1, title = 2, description = 3, upload_date = 4, views = 5, warnings = 6 }

local function show(v, indent)
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" then return tostring(v) end
  indent = indent or ""
  if #v > 0 or next(v) == nil then
    local parts = {}
    for i = 1, #v do parts[i] = show(v[i], indent) end
    local flat = "[" .. table.concat(parts, ", ") .. "]"
    if #flat <= 72 then return flat end
    local inner = indent .. " "
    for i = 1, #v do parts[i] = show(v[i], inner) end
    return "[" .. table.concat(parts, ",\n" .. inner) .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ra, rb = KEY_ORDER[a] or math.huge, KEY_ORDER[b] or math.huge
    if ra ~= rb then return ra < rb end
    return tostring(a) < tostring(b)
  end)
  local inner = indent .. " "
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = ("%q: %s"):format(tostring(k), show(v[k], inner)) end
  return "{" .. table.concat(parts, ",\n" .. inner) .. "}"
end

local cell = {}

--- Start the notebook's cell `In [number]`: print its header, start its clock.
function M.cell(number, title)
  cell.number, cell.started = number, avideo.now()
  print(("In [%d]: %s"):format(cell.number, title))
end

--- End the cell: print its output (when there is one) and its wall time.
function M.out(...)
  local wall = avideo.now() - cell.started
  if select("#", ...) > 0 then
    print(("Out[%d]: %s"):format(cell.number, (show((...), "        "))))
  end
  print(("        wall time %.3f s"):format(wall))
  print()
end

-- ============================= TIMELINE ==============================

local COLOURS = { "\27[36m", "\27[33m", "\27[35m", "\27[32m", "\27[34m", "\27[31m" }
local RESET, DIM = "\27[0m", "\27[2m"
local COLUMN = 18

-- Colour and columns only for a terminal, and never with NO_COLOR set.
local function fancy()
  local no_color = os.getenv("NO_COLOR")
  if no_color and no_color ~= "" then return false end
  if os.getenv("TERM") == "dumb" then return false end
  return os.execute("test -t 1") == true
end

local Timeline = {}
Timeline.__index = Timeline

--- A timeline log for the named stages, its clock starting now.
-- On a terminal each stage has its own colour and column; otherwise each
-- line reads `  1.234 s  stage  start|done  id`.
function M.timeline(stages)
  local t = setmetatable({ stages = {}, t0 = avideo.now(), fancy = fancy() }, Timeline)
  local header = { "   time " }
  for i, name in ipairs(stages) do
    t.stages[name] = i
    header[#header + 1] = ("%-" .. COLUMN .. "s"):format(name)
  end
  if t.fancy then print(DIM .. table.concat(header, " ") .. RESET) end
  return t
end

--- Seconds since the timeline started.
function Timeline:elapsed()
  return avideo.now() - self.t0
end

--- Log one event ("start" or "done") of a stage for an item.
function Timeline:log(stage, event, item)
  local col = assert(self.stages[stage], "unknown stage")
  if self.fancy then
    local text = event .. " " .. tostring(item)
    io.write(("%7.3f  "):format(self:elapsed()), (" "):rep((COLUMN + 1) * (col - 1)),
      COLOURS[(col - 1) % #COLOURS + 1], text, RESET, "\n")
  else
    io.write(("%7.3f s  %-10s %-5s %s\n"):format(self:elapsed(), stage, event, tostring(item)))
  end
  io.flush()
end

--- Wrap fn(item, ...) so that each call logs its stage's start and done,
-- like a decorator: `get_video = log:stage("video", get_video)`.
function Timeline:stage(stage, fn)
  return function(item, ...)
    self:log(stage, "start", item)
    local r = table.pack(fn(item, ...))
    self:log(stage, "done", item)
    return table.unpack(r, 1, r.n)
  end
end

--- The last lines of a service run: how many videos went through every
-- stage, in how long, and which got warnings. results: list of {id, warnings}.
function Timeline:summary(results)
  local flagged = {}
  for _, r in ipairs(results) do
    if #r.warnings > 0 then flagged[#flagged + 1] = r.id .. " (" .. table.concat(r.warnings, ", ") .. ")" end
  end
  print(("processed %d videos in %.3f s"):format(#results, self:elapsed()))
  print(("warnings on %d: %s"):format(#flagged, #flagged > 0 and table.concat(flagged, ", ") or "none"))
end

-- ============================== SERVICE ==============================

--- What the three content-warnings versions share: their options (with
-- `work`, the model's steps for about --model-seconds of CPU), the timeline
-- log of their stages, and the calls of lib/videos.lua logged on it.
function M.service()
  local opts = M.options { "url", "n", "model_seconds", "trace" }
  opts.work = model.calibrate(opts.model_seconds)
  local log = M.timeline { "video", "transcript", "model", "patch" }
  return opts, log, {
    get_video_ids = videos.get_video_ids,
    get_video = log:stage("video", videos.get_video),
    get_transcript = log:stage("transcript", videos.get_transcript),
    patch_video = log:stage("patch", videos.patch_video),
  }
end

return M
