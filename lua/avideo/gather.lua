--- avideo.gather: run functions (or wait for tasks) concurrently and return
-- each one's first result, in order. The first error is raised and the
-- others are cancelled, unless `return_exceptions` puts errors in the list.
-- Functions run in at most `limit` worker tasks (all at once without a
-- limit), so a large gather keeps only as many coroutines as can run.
local errors = require "avideo.errors"
local items_check = require "avideo.items"
local progress = require "avideo.progress"
local sched = require "avideo.scheduler"
local compat = require "avideo.compat"
local pack = compat.pack

local is_task, callable = items_check.is_task, items_check.callable
local OPTIONS = { limit = true, return_exceptions = true, progress = true }

-- An item that raised nil or false (error(nil)) would leave a value that
-- reads as "no error" (with return_exceptions, as a result; without, the
-- gather would return): it gets an `invalid` error instead.
local function falsy_error(e)
  return errors.new("invalid", ("a gather item raised %s, which reads as no error;"
    .. " raise a message or an error object"):format(tostring(e)), { value = e })
end

-- Cancel the gather's workers but `except`, then its task items: one
-- pass each, and nothing allocated per item but the error each one sees.
-- The last first: the first workers hold the requests running under a
-- session's limit and the later ones wait queued behind them, so
-- cancelling a running one first would hand its slot to the next queued
-- request, which libcurl would start only to be cancelled at once; from
-- the back the queue empties first, and the slots freed last find it empty.
local function cancel_all(g, message, except)
  local ws = g.workers
  for k = #ws, 1, -1 do
    local w = ws[k]
    if w ~= except then w:cancel(message) end
  end
  if g.has_tasks then
    local items = g.items
    for j = g.n, 1, -1 do
      local item = items[j]
      if type(item) ~= "function" and is_task(item) then item:cancel(message) end
    end
  end
end

-- The gather fails with err: the other workers and task items are
-- cancelled, and the parent wakes to raise it. `except` is the worker
-- that failed, left alone.
local function fail(g, err, except)
  g.stopped = true
  g.err = err
  cancel_all(g, "cancelled by gather: another item failed", except)
  sched.wake(g.parent)
end

-- An item returned r: its result, unless the gather has ended (true: the
-- worker stops).
local function item_done(g, i, r)
  if g.stopped then return true end
  if g.progress then
    g.progress:tick(true)
    if g.stopped then return true end -- the progress function raised
  end
  g.results[i] = r
  local done = g.done + 1
  g.done = done
  if done == g.n then sched.wake(g.parent) end
end

-- One worker: take the next item, run or await it, store its result.
-- No pcall: an item that raises ends its worker, and the scheduler hands
-- the error to worker_failed (the task's on_fail hook, given at spawn;
-- with return_exceptions the task's `item` tells which item). Few locals
-- on purpose: the item runs just above this frame, near the bottom of a
-- coroutine stack that should stay within Lua's initial 40 slots while a
-- request waits (see the scheduler's worker_main).
local function worker(g)
  while not g.stopped do
    local i = g.next
    if i > g.n then return end
    g.next = i + 1
    if g.return_exceptions then sched.current().item = i end
    if g.progress then g.progress:start() end
    local item = g.items[i]
    if g.has_tasks and type(item) ~= "function" and is_task(item) then
      if item_done(g, i, item:wait()) then return end
    else
      local r = item()
      -- item_done, inlined: this is every function item's way
      if g.stopped then return end
      if g.progress then
        g.progress:tick(true)
        if g.stopped then return end -- the progress function raised
      end
      g.results[i] = r
      local done = g.done + 1
      g.done = done
      if done == g.n then sched.wake(g.parent) end
    end
  end
end

-- A worker ended failed: its item raised (or was killed by a bare
-- coroutine.yield). The error counts as the error of the item it was
-- running: raised by the gather, or with return_exceptions put in that
-- item's place while a new worker takes the dead one's, so the gather goes
-- on at the same concurrency. The scheduler took the traceback before the
-- coroutine was closed (not for `cancelled`: a cancelled gather cancels
-- every item, and a traceback each made cancelling 100,000 queued
-- requests take seconds).
local function worker_failed(g, w)
  w.retrieved = true -- its error goes to the gather's caller, or is dropped once the gather has ended
  if g.stopped then return end
  local err = w.err
  if not err then
    err = falsy_error(err)
    err.traceback = w.traceback and w.traceback:match("\n(.*)$")
  end
  local i = w.item
  if g.progress then
    g.progress:tick(false)
    if g.stopped then return end -- the progress function raised
  end
  if i == nil then return fail(g, err, w) end
  g.results[i] = err
  local done = g.done + 1
  g.done = done
  if done == g.n then return sched.wake(g.parent) end
  if g.next <= g.n then
    local ws = g.workers
    ws[#ws + 1] = sched.spawn_worker(g.run, g.on_fail)
  end
end

local function parse(first, ...)
  local items, opts
  if type(first) == "table" and not callable(first) and not is_task(first) then
    items, opts = first, (...)
  else
    items = pack(first, ...)
  end
  -- the options and the limit checked as as_completed and wait check theirs
  opts = items_check.options("avideo.gather", opts, OPTIONS)
  local n = items.n or #items
  local has_tasks = items_check.check("avideo.gather", items, n)
  local limit = items_check.limit("avideo.gather", opts.limit, n)
  return items, n, opts.return_exceptions and true or false, limit, has_tasks,
    progress.new(opts.progress, n, "avideo.gather", "gather")
end

--- avideo.gather(list [, opts]) or avideo.gather(f1, f2, ...).
-- opts: limit (run at most n at a time), return_exceptions (each failed
-- item's error in its place: what it raised, except that nil or false
-- becomes an `invalid` error object, so a failure never reads as a result
-- or as no error), progress (true or a function: avideo/progress.lua).
local function gather(...)
  if select("#", ...) == 0 then errors.raise("invalid", "avideo.gather needs a list of functions or tasks") end
  local items, n, return_exceptions, limit, has_tasks, report = parse(...)
  local parent = sched.waiting_task("avideo.gather")
  if parent == nil then
    local args = pack(...)
    return sched.run(function() return gather(compat.unpack(args, 1, args.n)) end)
  end
  local results = {}
  if n == 0 then return results end
  local g = {
    items = items, n = n, next = 1, done = 0, results = results, parent = parent,
    return_exceptions = return_exceptions, workers = {}, has_tasks = has_tasks, progress = report or false,
  }
  -- one hook and one start for all the workers: a field each, not a closure each
  g.on_fail = function(w) return worker_failed(g, w) end
  -- a progress function that raises fails the gather, while it runs
  if report then report.on_error = function(e) if not g.stopped and g.done < n then fail(g, e) end end end
  g.run = function() return worker(g) end
  local ws, spawn_worker, run, on_fail = g.workers, sched.spawn_worker, g.run, g.on_fail
  for w = 1, math.min(limit, n) do ws[w] = spawn_worker(run, on_fail) end
  -- the parent cancelled: stop, and cancel the rest (a closure per gather;
  -- the wake that ends the gather drops it)
  parent.unwait = function()
    g.stopped = true
    cancel_all(g, "cancelled: the gather was cancelled")
    if report then report:finish() end
  end
  sched.suspend(parent)
  if report then report:finish() end
  if g.err ~= nil then error(g.err, 0) end
  if report and report.err ~= nil then error(report.err, 0) end -- raised at the end
  return results
end

return gather
