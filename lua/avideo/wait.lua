--- avideo.wait(tasks [, opts]) -> done, pending (asyncio.wait): wait until
-- the tasks are all done ("all"), one is ("first"), or one failed or all
-- are done ("first_error"), or until opts.timeout seconds have passed.
-- Cancels nothing, and reads no error: a failed task in `done` is the
-- caller's to read (task:result()), and is reported at the end of the run
-- like any failure nobody read. Both lists keep the order of `tasks`.
local errors = require "avideo.errors"
local items_check = require "avideo.items"
local sched = require "avideo.scheduler"
local compat = require "avideo.compat"

local is_task = items_check.is_task
local OPTIONS = { timeout = true, return_when = true }
local MODES = { all = true, first = true, first_error = true }

-- Whether the wait is over (a failure counts for first_error only: a
-- cancelled task is done but did not fail, as in asyncio).
local function met(st)
  return st.remaining == 0 or (st.mode == "first" and st.remaining < st.n)
    or (st.mode == "first_error" and st.failed)
end

local function wake_once(st)
  if st.over then return end
  st.over = true
  sched.wake(st.parent)
end

local function wait(list, opts)
  if type(list) ~= "table" or is_task(list) then
    errors.bad_argument("avideo.wait", "tasks", "list of tasks", list)
  end
  opts = items_check.options("avideo.wait", opts, OPTIONS)
  local timeout = items_check.seconds("avideo.wait", "timeout", opts.timeout)
  local mode = opts.return_when
  if mode == nil then mode = "all" end
  if not MODES[mode] then
    errors.raise("invalid", ('avideo.wait return_when must be "all", "first" or "first_error", got %s')
      :format(items_check.show(mode)))
  end
  local n = list.n or #list
  local me = sched.current()
  local tasks, remaining, failed = {}, 0, false
  for i = 1, n do
    local t = list[i]
    if not is_task(t) then
      errors.raise("invalid", ("bad item #%d to avideo.wait (task expected, got %s%s)"):format(i, type(t),
        items_check.callable(t) and ": start it with avideo.spawn" or ""))
    end
    if t == me then
      errors.raise("invalid", ("bad item #%d to avideo.wait (the waiting task itself, which cannot end while it waits)")
        :format(i))
    end
    tasks[i] = t -- the caller may change its list meanwhile
    local status = t.status
    if status == "pending" then
      remaining = remaining + 1
    elseif status == "failed" then
      failed = true
    end
  end
  local st = { n = n, remaining = remaining, failed = failed, mode = mode }
  if not met(st) and timeout ~= 0 then
    me = sched.waiting_task("avideo.wait")
    if me == nil then errors.raise("invalid", "avideo.wait called outside avideo.run with tasks pending") end
    st.parent = me
    -- one watcher for all the tasks, removed from those still pending
    local function watch(t)
      -- A watched task that fails gets no report of its own from the
      -- scheduler (it counts on its watchers to read the error): this one
      -- leaves it to the task's owner, so it is reported unless read.
      if t.status == "failed" then
        sched.leave_unread(t)
        st.failed = true
      end
      st.remaining = st.remaining - 1
      if met(st) then wake_once(st) end
    end
    for i = 1, n do
      local t = tasks[i]
      if t.status == "pending" then t:on_done(watch) end
    end
    if timeout then
      st.timer = sched.spawn(function()
        sched.sleep(timeout)
        wake_once(st)
      end)
    end
    -- cancelled: nobody may wake it any more (it is queued already)
    me.unwait = function() st.over = true end
    -- pcall: whatever ends the wait (a wake, a cancel that comes while it
    -- is queued to run), the watchers and the timer go
    local ok, err = compat.pcall(sched.suspend, me)
    st.over = true
    for i = 1, n do
      local t = tasks[i]
      if t.status == "pending" then sched.remove_watcher(t, watch) end
    end
    if st.timer then st.timer:cancel() end
    if not ok then error(err, 0) end
  end
  local done, pending = {}, {}
  for i = 1, n do
    local t = tasks[i]
    if t.status == "pending" then pending[#pending + 1] = t else done[#done + 1] = t end
  end
  return done, pending
end

return wait
