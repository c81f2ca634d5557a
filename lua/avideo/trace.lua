--- avideo.trace: record a run and write it as a picture or a log.
--
--   avideo.trace.start("run.json")   -- or .har, .svg; { format = ... } wins
--   ... requests, tasks ...
--   avideo.trace.stop()              -- writes the file, returns its path
--
-- AVIDEO_TRACE=path in the environment traces the whole process and
-- writes when the Lua state closes (the script's normal end).
--
-- What is recorded: every request that ends (the core appends a record:
-- its call, slot and end times, libcurl's phases, sizes, the header lines
-- sent and received), every task, sleep and run_in_thread job, and the
-- limits that move (adaptive, or set at run time: a sample per host and
-- for the total each time one changes). Off, the cost is one test per
-- request in C and one per task in Lua.
local core = require "avideo.core"
local errors = require "avideo.errors"
local sched = require "avideo.scheduler"

local M = {}

local FORMATS = { chrome = "avideo.trace.chrome", har = "avideo.trace.har", svg = "avideo.trace.svg" }
local BY_EXTENSION = { json = "chrome", har = "har", svg = "svg" }

local function invalid(fmt, ...) errors.raise("invalid", fmt:format(...)) end

-- The recording in progress: { path, format, t0, wall0, tasks, spans },
-- then requests and limits (the core's records and limit samples: { at,
-- limit, session, key, name }, key nil for the total) once it stops.
local current

-- Lua-side events (tasks, sleeps, threads): kept in plain tables.
local recorder = {}

local task_ids = setmetatable({}, { __mode = "k" })

function recorder.task_started(task, fn)
  local r = current
  local n = #r.tasks + 1
  local name = "task"
  local f = type(fn) == "table" and fn.fn or fn
  if type(f) == "function" then
    local info = debug.getinfo(f, "S")
    name = ("task %s:%d"):format(info.short_src, info.linedefined)
  end
  r.tasks[n] = { name = name, start = core.now() }
  task_ids[task] = n
end

function recorder.task_ended(task)
  local n = task_ids[task]
  if not n then return end -- started before this trace
  local t = current.tasks[n]
  t.finish, t.status = core.now(), task.status
end

function recorder.span(kind, task, t0, name)
  local spans = current.spans
  spans[#spans + 1] = { kind = kind, task = task_ids[task], start = t0, finish = core.now(), name = name }
end

--- Start recording into `path` (written by stop()). opts.format:
-- "chrome" | "har" | "svg"; by default from the path's extension.
function M.start(path, opts)
  if type(path) ~= "string" or path == "" then invalid("avideo.trace.start: path must be a file name, got %s", type(path)) end
  if opts ~= nil and type(opts) ~= "table" then invalid("avideo.trace.start: opts must be a table, got %s", type(opts)) end
  local format = opts and opts.format
  for k in pairs(opts or {}) do
    if k ~= "format" then invalid("avideo.trace.start: unknown option '%s'", tostring(k)) end
  end
  if format == nil then
    format = BY_EXTENSION[(path:match("%.(%w+)$") or ""):lower()]
    if not format then invalid("avideo.trace.start: cannot tell the format of '%s': give { format = \"chrome\" | \"har\" | \"svg\" } or end it in .json, .har or .svg", path) end
  elseif not FORMATS[format] then
    invalid('avideo.trace.start: format must be "chrome", "har" or "svg", got %s', tostring(format))
  end
  if current then invalid("avideo.trace.start: a trace is already being recorded (to %s)", current.path) end
  -- fail now, not after the run, when the file cannot be written
  local f, why = io.open(path, "w")
  if not f then invalid("avideo.trace.start: cannot write '%s': %s", path, tostring(why)) end
  f:close()
  current = { path = path, format = format, t0 = core.now(), wall0 = core.wall_now(), tasks = {}, spans = {} }
  -- a task an earlier trace saw is not this trace's: its place in that
  -- trace's list would name another task here, or none
  task_ids = setmetatable({}, { __mode = "k" })
  sched.loop:trace_take() -- anything left from before is not this trace's
  sched.loop:trace(true, format == "har") -- header lines: only a HAR shows them
  sched.set_tracer(recorder)
  return path
end

--- Whether a trace is being recorded (and to which file).
function M.active()
  return current ~= nil, current and current.path
end

-- Name each limit sample's line: its key (or "total"), and its session's
-- number when more than one session's limits moved.
local function name_limits(limits)
  local sessions, n = {}, 0
  for _, l in ipairs(limits) do
    if not sessions[l.session] then sessions[l.session], n = true, n + 1 end
  end
  for _, l in ipairs(limits) do
    l.name = (l.key or "total") .. (n > 1 and (" (session %d)"):format(l.session) or "")
  end
end

--- Stop recording and write the file; returns its path and the number of
-- requests in it.
function M.stop()
  if not current then invalid("avideo.trace.stop: no trace is being recorded") end
  local r = current
  current = nil
  sched.set_tracer(nil)
  r.requests, r.limits = sched.loop:trace_take()
  name_limits(r.limits)
  sched.loop:trace(false)
  r.t1 = core.now()
  local text = require(FORMATS[r.format]).render(r)
  local f, why = io.open(r.path, "w")
  if not f then invalid("avideo.trace.stop: cannot write '%s': %s", r.path, tostring(why)) end
  -- a full disk shows at write or at close: say so, not a cut file
  local wrote, werr = f:write(text)
  local closed, cerr = f:close()
  if not (wrote and closed) then
    invalid("avideo.trace.stop: cannot write '%s': %s", r.path, tostring(werr or cerr))
  end
  return r.path, #r.requests
end

-- AVIDEO_TRACE: the whole process. The sentinel is made after the loop,
-- so its finalizer runs before the loop's when the state closes.
local env = os.getenv("AVIDEO_TRACE")
if env and env ~= "" then
  M.start(env)
  M._sentinel = require("avideo.compat").setmetatable_gc({}, { __gc = function()
    if current then pcall(M.stop) end
  end })
end

return M
