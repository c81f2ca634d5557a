--- avideo.as_completed(items [, opts]): the items of a gather-like list in
-- the order they end (asyncio.as_completed):
--
--   for i, ok, v in avideo.as_completed(items, { limit = 4 }) do ... end
--
-- i is the item's index, ok false when it raised (v is then its error:
-- errors never raise here). Functions run as tasks the iterator owns, at
-- most `limit` at a time, started in order; a task item is watched in its
-- turn and holds its slot until it ends, as in gather. Inside a task only:
-- the loop yields while it waits. Leaving the loop early (break, an error)
-- cancels the functions it started and starts no more; task items, which
-- their owner made, are left running. opts.progress as gather's
-- (avideo/progress.lua).
local errors = require "avideo.errors"
local items_check = require "avideo.items"
local progress = require "avideo.progress"
local sched = require "avideo.scheduler"

local is_task = items_check.is_task
local OPTIONS = { limit = true, progress = true }

local AsCompleted = { __name = "avideo.as_completed" }

-- An item that raised nil or false gets an error object, as in gather:
-- v of a failed item is always something to report.
local function falsy_error(e)
  return errors.new("invalid", ("an as_completed item raised %s, which reads as no error;"
    .. " raise a message or an error object"):format(tostring(e)), { value = e })
end

local fill

-- Item i ended: queue it for the loop, wake the loop if it waits, and
-- let the next item take the slot.
local function ended(st, i)
  if st.closed then return end
  st.watchers[i] = nil
  st.running = st.running - 1
  if st.progress then st.progress:tick(st.tasks[i].status == "done") end
  local tail = st.tail + 1
  st.tail = tail
  st.queue[tail] = i
  local w = st.waiter
  if w then
    st.waiter = nil
    sched.wake(w)
  end
  fill(st)
end

-- Start items in order while slots are free. A task item that has
-- already ended is queued at once, from inside this loop (on_done calls
-- back straight away): the `filling` flag keeps that from recursing once
-- per item.
function fill(st)
  if st.filling then return end
  st.filling = true
  local items = st.items
  while st.next <= st.n and st.running < st.limit and not st.closed do
    local i = st.next
    st.next = i + 1
    local item = items[i]
    items[i] = nil -- its task holds it from now on
    local t
    if type(item) ~= "function" and is_task(item) then
      t = item
    else
      t = sched.spawn(item)
      st.own[i] = true
    end
    st.tasks[i] = t
    st.running = st.running + 1
    if st.progress then st.progress:start() end
    -- a closure per item: the same task may stand at two indexes
    local w = function() return ended(st, i) end
    st.watchers[i] = w
    t:on_done(w)
  end
  st.filling = false
end

-- The next item to end, as i, ok, v; nil once every item has come (or
-- the loop was closed).
function AsCompleted.__call(st)
  local p = st.progress
  if p and p.err ~= nil then error(p.err, 0) end -- the progress function raised
  if st.head > st.tail then
    if st.closed or st.taken == st.n then
      if st.progress then st.progress:finish() end
      return nil
    end
    local me = sched.waiting_task("avideo.as_completed's iterator")
    if me == nil then
      errors.raise("invalid", "avideo.as_completed's iterator called outside avideo.run")
    end
    if st.waiter then
      errors.raise("invalid", "avideo.as_completed's iterator called from two tasks at once")
    end
    st.waiter = me
    me.unwait = st.unwait
    sched.suspend(me)
    if p and p.err ~= nil then error(p.err, 0) end
    if st.head > st.tail then return nil end -- closed meanwhile
  end
  local head = st.head
  local i = st.queue[head]
  st.queue[head] = nil
  st.head = head + 1
  st.taken = st.taken + 1
  local t = st.tasks[i]
  st.tasks[i] = nil
  if t.status == "done" then
    local r = t.results
    return i, true, r and r[1]
  end
  t.retrieved = true -- its error is read here
  local err = t.err
  if not err then err = falsy_error(err) end
  return i, false, err
end

--- Stop: cancel the started functions still running, start no more, and
-- stop watching task items (their failures are then reported as usual if
-- nobody reads them). The functions' outcomes not yet taken are dropped.
local function close(st)
  if st.closed then return end
  st.closed = true
  if st.progress then st.progress:finish() end
  local w = st.waiter
  if w then
    st.waiter = nil
    sched.wake(w)
  end
  if st.taken == st.n then return end
  -- task items that ended but were not taken: their owner may still read
  -- them, so a failure among them is reported unless read (ours are dropped)
  for q = st.head, st.tail do
    local i = st.queue[q]
    if not st.own[i] then sched.leave_unread(st.tasks[i]) end
  end
  -- from the back, as gather cancels: the later ones wait queued behind
  -- the earlier ones in a session's limit
  local tasks, own, watchers = st.tasks, st.own, st.watchers
  for i = st.next - 1, 1, -1 do
    local t = tasks[i]
    if t and t.status == "pending" then
      if own[i] then
        t:cancel("cancelled: the avideo.as_completed loop was left")
      else
        sched.remove_watcher(t, watchers[i])
      end
    end
  end
end

AsCompleted.__index = { close = close }
-- Lua 5.4 only: the generic for closes its 4th value when the loop ends,
-- by break or error too. Under 5.1/LuaJIT call it:close() instead; PUC
-- 5.1 calls a generic for's iterator from C, where no task may wait, so
-- there the iterator is called in a while loop (README, Lua versions).
AsCompleted.__close = close

return function(list, opts)
  if type(list) ~= "table" or is_task(list) or items_check.callable(list) then
    errors.bad_argument("avideo.as_completed", "items", "list of functions or tasks", list)
  end
  opts = items_check.options("avideo.as_completed", opts, OPTIONS)
  local n = list.n or #list
  items_check.check("avideo.as_completed", list, n)
  local limit = items_check.limit("avideo.as_completed", opts.limit, n)
  -- Its items are tasks, which only live inside avideo.run: unlike gather
  -- it cannot block by running the loop, since the loop must go on between
  -- the iterations of the caller's for.
  if sched.waiting_task("avideo.as_completed") == nil then
    errors.raise("invalid", "avideo.as_completed called outside avideo.run; call it from a task"
      .. " (or use avideo.gather, which blocks outside one)")
  end
  local items = {}
  for i = 1, n do items[i] = list[i] end -- the caller may change its list meanwhile
  local st = setmetatable({
    items = items, n = n, limit = limit, next = 1, running = 0, taken = 0,
    queue = {}, head = 1, tail = 0, tasks = {}, own = {}, watchers = {},
    progress = progress.new(opts.progress, n, "avideo.as_completed", "as_completed") or false,
  }, AsCompleted)
  st.unwait = function() st.waiter = nil end -- the waiting task was cancelled
  fill(st)
  return st, nil, nil, st
end
