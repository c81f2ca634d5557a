--- avideo.gather: run functions (or wait for tasks) concurrently and return
-- each one's first result, in order. The first error is raised and the
-- others are cancelled, unless `return_exceptions` puts errors in the list.
-- Functions run in at most `limit` worker tasks (all at once without a
-- limit), so a large gather keeps only as many coroutines as can run.
local errors = require "avideo.errors"
local sched = require "avideo.scheduler"

local Task = sched.Task

local function is_task(x) return getmetatable(x) == Task end

local function callable(x)
  return type(x) == "function" or (type(x) == "table" and not is_task(x) and (getmetatable(x) or {}).__call ~= nil)
end

-- An item that raised nil or false (error(nil)) would leave a value that
-- reads as "no error" (with return_exceptions, as a result; without, the
-- gather would return): it gets an `invalid` error instead.
local function falsy_error(e)
  return errors.new("invalid", ("a gather item raised %s, which reads as no error;"
    .. " raise a message or an error object"):format(tostring(e)), { value = e })
end

-- xpcall's handler: where a failed item failed, while its stack is still
-- there. Not for `cancelled`: a cancelled gather cancels every item, and
-- a traceback each (tens of microseconds) made cancelling 100,000 queued
-- requests take seconds; a cancel is how tasks stop, not a failure.
local function on_error(e)
  if not e then e = falsy_error(e) end
  if errors.is_error(e) and not e.traceback and e.kind ~= "cancelled" then
    e.traceback = debug.traceback(nil, 2)
  end
  return e
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

-- One worker: take the next item, run or await it, store its result.
-- The fields that never change are read once; a plain function is told
-- from a task without a call. The worker's task gets the gather's hook
-- (see worker_failed) and, with return_exceptions, the item it runs. Set
-- here, not at spawn, the hook takes the slot of the task's spent start
-- arguments: a worker's table stays as small as any task's.
local function worker(g)
  local items, results, n, keep_going = g.items, g.results, g.n, g.return_exceptions
  local me = sched.current()
  me.on_fail = g.on_fail
  while not g.stopped and g.next <= n do
    local i = g.next
    g.next = i + 1
    if keep_going then me.item = i end
    local item = items[i]
    local ok, r
    if type(item) ~= "function" and is_task(item) then
      ok, r = pcall(item.wait, item)
      if not ok and not r then r = falsy_error(r) end
    else
      ok, r = xpcall(item, on_error)
    end
    if g.stopped then return end
    if ok or keep_going then
      results[i] = r
      local done = g.done + 1
      g.done = done
      if done == n then sched.wake(g.parent) end
    else
      return fail(g, r, me)
    end
  end
end

-- A worker ended failed outside its protected call: the scheduler killed
-- it (a bare coroutine.yield in an item). Its error counts as the error of
-- the item it was running: raised by the gather, or with
-- return_exceptions put in that item's place while a new worker takes
-- the dead one's, so the gather goes on at the same concurrency.
local function worker_failed(g, w)
  if g.stopped then return end -- the gather has ended: w's failure is its own
  w.retrieved = true -- its error goes to the gather's caller
  local i = w.item
  if i == nil then return fail(g, w.err, w) end
  g.results[i] = w.err
  local done = g.done + 1
  g.done = done
  if done == g.n then return sched.wake(g.parent) end
  if g.next <= g.n then
    local ws = g.workers
    ws[#ws + 1] = sched.spawn(worker, g)
  end
end

local function parse(first, ...)
  local items, opts
  if type(first) == "table" and not callable(first) and not is_task(first) then
    items, opts = first, (...)
    if opts ~= nil and type(opts) ~= "table" then errors.bad_argument("avideo.gather", "opts", "table", opts) end
  else
    items = table.pack(first, ...)
  end
  opts = opts or {}
  local n = items.n or #items
  local has_tasks = false
  for i = 1, n do
    local item = items[i]
    if type(item) ~= "function" then
      if is_task(item) then
        has_tasks = true
      elseif not callable(item) then
        errors.raise("invalid", ("bad item #%d to avideo.gather (function or task expected, got %s)")
          :format(i, type(item)))
      end
    end
  end
  local limit = opts.limit
  if limit ~= nil then
    -- math.tointeger, not `% 1`: 2^63 or inf must be refused, not become nil
    limit = type(limit) == "number" and math.tointeger(limit) or nil
    if not limit or limit < 0 then
      errors.raise("invalid", "gather limit must be a whole number >= 0 (0 = no limit)")
    end
  end
  return items, n, opts.return_exceptions and true or false, (limit and limit > 0) and limit or n, has_tasks
end

--- avideo.gather(list [, opts]) or avideo.gather(f1, f2, ...).
-- opts: limit (run at most n at a time), return_exceptions (each failed
-- item's error in its place: what it raised, except that nil or false
-- becomes an `invalid` error object, so a failure never reads as a result
-- or as no error).
local function gather(...)
  if select("#", ...) == 0 then errors.raise("invalid", "avideo.gather needs a list of functions or tasks") end
  local items, n, return_exceptions, limit, has_tasks = parse(...)
  local parent = sched.waiting_task("avideo.gather")
  if parent == nil then
    local args = table.pack(...)
    return sched.run(function() return gather(table.unpack(args, 1, args.n)) end)
  end
  local results = {}
  if n == 0 then return results end
  local g = {
    items = items, n = n, next = 1, done = 0, results = results, parent = parent,
    return_exceptions = return_exceptions, workers = {}, has_tasks = has_tasks,
  }
  -- one hook for all the workers: a field each, not a closure each
  g.on_fail = function(w) return worker_failed(g, w) end
  for w = 1, math.min(limit, n) do g.workers[w] = sched.spawn(worker, g) end
  -- the parent cancelled: stop, and cancel the rest (a closure per gather;
  -- the wake that ends the gather drops it)
  parent.unwait = function()
    g.stopped = true
    cancel_all(g, "cancelled: the gather was cancelled")
  end
  sched.suspend(parent)
  if g.err ~= nil then error(g.err, 0) end
  return results
end

return gather
