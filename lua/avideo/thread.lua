--- avideo.run_in_thread: asyncio's run_in_executor for Lua.
-- The function runs in libuv's thread pool in a Lua state of its own (see
-- src/core/work.c), so it cannot see the caller's locals: it must have no
-- upvalue but _ENV, and its globals are the worker state's own. Arguments
-- and results are copied: nil, booleans, numbers (integer or float),
-- strings and plain tables, nested. Each call gets a fresh state (about
-- 50 us of CPU); libuv's pool runs 4 calls at once (UV_THREADPOOL_SIZE) and
-- queues the rest.
--
-- Errors: a function or an argument that cannot cross (an upvalue, a C
-- function, a function/userdata/cyclic/metatable argument), or a result
-- that cannot come back, raises an `invalid` error object. An error raised
-- by the function itself comes back as it was raised: a string error
-- followed by the worker's traceback, so `pcall` sees the same message the
-- function raised; a table error as a copy of its fields (an avideo error
-- object again, with its kind; another table without its metatable), or,
-- when its fields cannot be copied, as its __tostring text.
local errors = require "avideo.errors"
local sched = require "avideo.scheduler"

local M = {}

local dump = string.dump
local getinfo, getupvalue = debug.getinfo, debug.getupvalue

-- fn -> its binary chunk, checked and dumped once
local chunks = setmetatable({}, { __mode = "k" })

local function refuse(message)
  errors.raise("invalid", "avideo.run_in_thread: " .. message)
end

local function chunk_of(fn)
  local chunk = chunks[fn]
  if chunk then return chunk end
  if type(fn) ~= "function" then
    errors.bad_argument("avideo.run_in_thread", "fn", "Lua function", fn)
  end
  local info = getinfo(fn, "Su")
  if info.what == "C" then
    refuse("fn is a C function; a worker thread can run only Lua functions"
      .. " (pass a Lua function that requires the module it needs)")
  end
  for i = 1, info.nups do
    local name = getupvalue(fn, i)
    if name ~= "_ENV" then
      refuse(("fn uses the upvalue '%s' (a local of an enclosing scope), which a worker"
        .. " thread cannot see; pass it as an argument or require it inside fn"):format(name))
    end
  end
  chunk = dump(fn)
  chunks[fn] = chunk
  return chunk
end

local function results(ok, ...)
  if ok then return ... end
  local message, kind, traceback, avideo_error = ...
  if kind == "table" then
    -- a table the function raised, copied back: an avideo error is one
    -- again (its kind, status, url...), with the worker's traceback
    if avideo_error and errors.KINDS[message.kind] and type(message.message) == "string" then
      local e = errors.new(message.kind, message.message, message)
      e.traceback = e.traceback or traceback
      error(e, 0)
    end
    error(message, 0)
  end
  if kind then refuse(message) end
  error(message, 0)
end

--- avideo.run_in_thread(fn, ...) -> fn's results
-- Run fn(...) in a worker thread and yield until it ends; the loop keeps
-- serving other tasks meanwhile. Outside avideo.run it blocks.
-- Cancelling the waiting task does not stop a worker already running; its
-- results are dropped when it ends.
function M.run_in_thread(fn, ...)
  local chunk = chunk_of(fn)
  local task = sched.waiting_task("avideo.run_in_thread")
  if task == nil then return sched.run(M.run_in_thread, fn, ...) end
  local op, _, message = sched.loop:work(task, chunk, ...)
  if not op then refuse(message) end
  local tracer = sched.tracer()
  if tracer then
    local t0 = sched.now()
    sched.await_op(task, op)
    tracer.span("thread", task, t0, "run_in_thread")
    return results(op:result())
  end
  sched.await_op(task, op)
  return results(op:result())
end

return M
