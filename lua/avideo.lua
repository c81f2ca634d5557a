--- avideo: async HTTP for Lua 5.4 on libuv and libcurl, in the words of
-- aiohttp and asyncio. See README.md for the guide; this file only gathers
-- the parts (scheduler, gather, as_completed, wait, session, response, errors, json).
local core = require "avideo.core"
local as_completed = require "avideo.as_completed"
local errors = require "avideo.errors"
local gather = require "avideo.gather"
local json = require "avideo.json"
local sched = require "avideo.scheduler"
local Session = require "avideo.session"
local sync = require "avideo.sync"
local thread = require "avideo.thread"
local wait = require "avideo.wait"

local M = {
  _VERSION = core._VERSION,
  run = sched.run,
  spawn = sched.spawn,
  sleep = sched.sleep,
  now = sched.now,
  gather = gather,
  as_completed = as_completed,
  wait = wait,
  json = json,
  is_error = errors.is_error,
  error = errors.new,
  stats = sched.stats,
  semaphore = sync.semaphore,
  timeout = sync.timeout,
  run_in_thread = thread.run_in_thread,
  file = require("avideo.file").new,
  -- pcall that a task may wait inside: Lua's own on 5.2+ and LuaJIT; on
  -- PUC 5.1, whose pcall cannot yield, a coroutine-based one (compat.lua)
  pcall = require("avideo.compat").pcall,
  -- the emulator for a program's own tests (avideo/testing.lua)
  testing = require "avideo.testing",
  -- recording a run as a picture or a log (avideo/trace.lua)
  trace = require "avideo.trace",
  -- embedding in a host's event loop (docs/embedding.md)
  start = sched.start,
  step = sched.step,
  backend_fd = sched.backend_fd,
  backend_timeout = sched.backend_timeout,
  use_loop = sched.use_loop,
}

--- avideo.session(opts) -> session (see avideo/session.lua for the options)
function M.session(opts)
  return Session.new(sched.loop, opts)
end

-- One-off requests share a default session, created on first use.
local default_session
local function default()
  -- one-off requests keep no cookies: each is on its own, as requests.get
  if not default_session or default_session.closed then default_session = M.session { cookie_jar = false } end
  return default_session
end

function M.request(method, url, opts)
  return default():request(method, url, opts)
end

for _, m in ipairs { "get", "post", "put", "patch", "delete", "head" } do
  M[m] = function(url, opts)
    return default()[m](default_session, url, opts)
  end
end

return M
