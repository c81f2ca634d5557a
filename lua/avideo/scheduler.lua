--- The scheduler: tasks are coroutines; a task waits by yielding, and the
-- loop (avideo.core) or another task wakes it. User code never runs inside
-- a libuv or libcurl callback: the C core only marks ops ready, and this
-- file resumes their tasks after `loop:step()` returns.
--
-- `run` drives the loop until its tasks end, blocking. A host with its own
-- event loop uses `start` and `step` instead: the same tasks, the same
-- loop, advanced one non-blocking turn at a time (see docs/embedding.md).
local core = require "avideo.core"
local errors = require "avideo.errors"
local compat = require "avideo.compat"

local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_status, co_running, co_close = coroutine.status, compat.running, compat.co_close
local co_isyieldable = compat.isyieldable
local pack, unpack = compat.pack, compat.unpack
local is_error = errors.is_error

local M = {}

local loop = core.loop()
M.loop = loop

-- Every yield of ours passes this first: anything else is a stray
-- coroutine.yield in user code, which would otherwise lose the task.
local YIELD = setmetatable({}, { __name = "avideo.yield" })
-- The scheduler resumes a task with this first: a resume without it came
-- from user code (coroutine.resume(task.co)) and is refused, so the task's
-- wait cannot end early and its end cannot be lost to a foreign resumer.
local RESUME = setmetatable({}, { __name = "avideo.resume" })
-- The wait protocol, for the request path (session.lua), which yields
-- itself rather than through await_op: one call frame less per request.
M.YIELD, M.RESUME = YIELD, RESUME

local Task = { __name = "avideo.Task" }
Task.__index = Task
M.Task = Task

local running = false   -- inside avideo.run, or tasks started with avideo.start live
local stepping = false  -- tasks started with avideo.start live (running is true too)
local current = nil     -- the task being resumed
local live = 0          -- tasks not yet ended
local tasks = {}        -- co -> task for every live task: keeps them alive
-- Failed tasks nobody waited for (task -> true), reported at the end of
-- the run unless collected and reported before: weak, so it keeps none
-- of them alive. `failures` numbers them, for the report's order.
local unretrieved = setmetatable({}, { __mode = "k" })
local failures = 0
-- ready queue of tasks woken from Lua (spawns, semaphores, task ends)
local rq_task, rq_val, rq_head, rq_tail = {}, {}, 1, 0

local function push_ready(task, value)
  rq_tail = rq_tail + 1
  rq_task[rq_tail], rq_val[rq_tail] = task, value
end

--- Wake a task suspended with `suspend`, handing it `value`.
function M.wake(task, value)
  task.unwait = nil
  push_ready(task, value)
end

-- A cancel asked for while the task ran or was queued takes effect at its
-- next wait: raise `cancelled` there (once). `cancel_pending` holds the
-- cancel's message, or true for the default one: one field, not two.
-- After an avideo.timeout's time is up, every wait its function makes is
-- cancelled until it returns (`timed_out` counts such timeouts not yet
-- left): a pcall that caught the first cancel cannot lift the limit.
local function check_cancel(task)
  local pending = task.cancel_pending
  if pending then
    if not task.timed_out then task.cancel_pending = false end
    local failed = task.reads_failure
    if failed then
      -- woken by a task's failure in Task:wait, cancelled before it read
      -- it: the failure had a waiter, so it was not left unread at its
      -- end; it is now, or nobody would ever hear of it
      task.reads_failure = nil
      M.leave_unread(failed)
    end
    error(errors.new("cancelled", pending == true and "task was cancelled" or pending), 0)
  end
end
M.check_cancel = check_cancel

--- The task that may wait now, or nil outside avideo.run (the caller then
-- blocks). Raises a clear error where waiting is impossible.
function M.waiting_task(what)
  local task = current
  if task == nil then
    if stepping then
      errors.raise("invalid", what .. " called outside any task while tasks started with"
        .. " avideo.start run; call it from a task (avideo.start or avideo.spawn)")
    elseif running then
      errors.raise("invalid", what .. " called inside avideo.run but outside any task"
        .. " (from a finalizer or a callback); call it from a task")
    end
    return nil
  end
  if co_running() ~= task.co then
    errors.raise("invalid", what .. " called from a coroutine that is not an avideo task;"
      .. " use avideo.spawn instead of coroutine.wrap/resume")
  end
  if not co_isyieldable() then
    errors.raise("invalid", what .. " cannot wait here: inside a metamethod or a C function"
      .. " (a table.sort comparator, a string.gsub callback, a __close or __gc handler"
      .. (compat.lua51 and not compat.luajit and "; under PUC Lua 5.1 pcall too: use avideo.pcall)" or ")"))
  end
  if task.cancel_pending then check_cancel(task) end
  return task
end

-- A task resumed by anything but the scheduler stays where it waits: it
-- yields straight back until the scheduler's own resume comes, and returns
-- the value that one carries. Lua lets a resumer be refused only by killing
-- the coroutine, so the foreign coroutine.resume gets `true, nil, err` (the
-- usual nil-and-error pair), err an avideo `invalid` error saying why.
local FOREIGN = "coroutine.resume of an avideo task was ignored: only avideo resumes its tasks;"
  .. " wait for it with task:wait(), stop it with task:cancel()"

local function refuse_foreign()
  local token, v
  repeat
    token, v = co_yield(nil, errors.new("invalid", FOREIGN))
  until token == RESUME
  return v
end
M.refuse_foreign = refuse_foreign

--- The task being run now, or nil (for avideo's own modules).
function M.current() return current end

--- Suspend the running task until something wakes it; returns the value it
-- was woken with. Raises `cancelled` if the task was cancelled meanwhile.
function M.suspend(task)
  if task.op then -- (PUC 5.1: see await_op)
    task.op:cancel()
    task.op = false
  end
  local token, v = co_yield(YIELD)
  if token ~= RESUME then v = refuse_foreign() end
  check_cancel(task)
  return v
end

--- Wait for a core op started with this task as its token.
function M.await_op(task, op)
  -- (PUC 5.1: one left by a wait whose yield failed is cancelled)
  if task.op then task.op:cancel() end
  task.op = op
  local token, v = co_yield(YIELD)
  if token ~= RESUME then v = refuse_foreign() end
  task.op = false
  if task.cancel_pending then check_cancel(task) end
  return v
end

-- A task that returned nothing keeps no results table (Task:result returns
-- nothing for it). `current` is the task: only the scheduler resumes tasks.
local function keep_results(...)
  if select("#", ...) > 0 then current.results = pack(...) end
end

-- A task's coroutine body. Every resume passes RESUME and a value; the
-- first one's value is how to start: the function itself when it takes no
-- arguments (no table per task), else pack(args) with the function as `fn`.
-- Few parameters and locals on purpose: a waiting task's stack holds this
-- frame under everything its function calls (see worker_main).
local function task_main(token, start)
  -- resumed by user code before its first run: the scheduler's first resume
  -- (with the task's start) is still to come
  if token ~= RESUME then return task_main(co_yield(nil, errors.new("invalid", FOREIGN))) end
  if current.cancel_pending then check_cancel(current) end
  if type(start) == "function" then return keep_results(start()) end
  return keep_results(start.fn(unpack(start, 1, start.n)))
end

-- The body of avideo's own worker tasks (gather's), whose function takes
-- no arguments and returns nothing: a tail call, so the function runs at
-- the bottom of the coroutine's stack. A coroutine starts with 40 stack
-- slots and doubles to 80 (640 B more) once a frame would pass them: a
-- request waiting in a worker stays within 40, and holds one call frame
-- (64 B) less than under task_main.
local function worker_main(token, start)
  if token ~= RESUME then return worker_main(co_yield(nil, errors.new("invalid", FOREIGN))) end
  if current.cancel_pending then check_cancel(current) end
  return start()
end

-- Reports a failed task nobody read when it is collected, as asyncio does
-- ("Task exception was never retrieved"), so a long run does not keep
-- every such task until it ends. One of these per unread failure, made
-- when the task fails: successful tasks pay nothing. It and its task point
-- at each other; Lua finalises the pair once neither is reachable.
local Reporter = { __name = "avideo.reporter" }

-- Report a failed task once, and only if its result was never read.
local function report(task)
  local r = task.reporter
  if r == nil or r.task == nil then return end
  r.task = nil
  unretrieved[task] = nil
  if not task.retrieved then
    io.stderr:write("avideo: a task failed and nobody waited for it: ", task.traceback, "\n")
  end
end

function Reporter.__gc(r)
  -- a finaliser must not raise (a closed or replaced io.stderr)
  if r.task then pcall(report, r.task) end
end

--- A failed task whose error nobody has read: reported at the end of the
-- run (or when collected) unless read by then. finish does this for a
-- task nobody watched; a watcher that only looks at how a task ended
-- (avideo.wait) and leaves its error to the task's owner calls it too.
function M.leave_unread(task)
  if task.status ~= "failed" or task.retrieved or task.reporter then return end
  failures = failures + 1
  -- a started task's owner may read it after the last step: reported
  -- only if collected unread
  if not task.owned then unretrieved[task] = true end
  task.reporter = compat.setmetatable_gc({ task = task, order = failures }, Reporter)
end

-- The trace being recorded (avideo/trace.lua), or nil: one test per task.
local tracer
function M.set_tracer(t) tracer = t end
function M.tracer() return tracer end

local function finish(task, ok, err)
  live = live - 1
  local co = task.co
  tasks[co] = nil
  -- PUC 5.1 only: a wait inside a Lua metamethod fails at its yield, after
  -- its op started (5.1 cannot refuse it first), and a pcall may catch
  -- that: the op (a timer, a request) must not outlive the task, which
  -- may even have ended well
  if task.op then
    task.op:cancel()
    task.op = false
  end
  -- An ended task lets its coroutine go (its stack and call frames, over
  -- 1 KiB) while the task object may live on: a gather keeps its workers
  -- until it returns, a caller its task until it reads the result.
  task.co = nil
  if ok then
    task.status = "done"
  else
    if is_error(err, "cancelled") then
      -- Cancelling is how tasks are stopped, not a failure: no traceback.
      -- One costs tens of microseconds (Lua looks for a global name for
      -- each frame in every loaded module): at two per task, cancelling
      -- 20,000 waiting tasks took 6 s under busted.
      task.status = "cancelled"
    else
      -- A real failure: where it happened, taken once, before co_close
      -- unwinds the stack. An error object without a traceback of its own
      -- gets it without the message line.
      task.status = "failed"
      local tb = compat.traceback(co, 0)
      if is_error(err) and not err.traceback then err.traceback = tb end
      task.traceback = tostring(err) .. "\n" .. tb
    end
    task.err = err
    -- run pending <close> variables of the failed task (sessions, etc.)
    co_close(co)
    -- on_fail: a hook of avideo's own modules (a gather hears of a worker
    -- whose item raised); one function shared by many tasks, so it costs
    -- a field, not a closure, per task
    local on_fail = task.on_fail
    if on_fail then
      task.on_fail = nil
      on_fail(task)
    end
  end
  if tracer then tracer.task_ended(task) end
  local watchers = task.watchers
  task.watchers = nil
  -- (a list emptied by waiters that gave up is nobody waiting)
  if watchers and watchers.live > 0 then
    for i = 1, #watchers do
      local w = watchers[i]
      if w then
        if type(w) == "function" then
          w(task)
        else -- a task in Task:wait
          w.waits_on, w.wait_slot = nil, nil
          -- its failure is this waiter's to read: if the waiter is
          -- cancelled before it runs, check_cancel leaves it unread
          if task.status == "failed" then w.reads_failure = task end
          M.wake(w)
        end
      end
    end
  elseif task.status == "failed" and not task.retrieved then
    M.leave_unread(task)
  end
end

local function resume(task, value)
  current = task
  local ok, y, start = co_resume(task.co, RESUME, value)
  current = nil
  if y == YIELD and ok then
    -- A task that yielded a `start` function asked for its op to be made
    -- here, on the scheduler's stack, not on its own: start(task) returns
    -- the op it waits for, or nil and the error it wakes to raise. (A C
    -- function gets 20 free stack slots: a request's 12-argument call,
    -- made from a task's stack, grew every waiting coroutine to 80 slots.)
    if start then
      local op, err = start(task)
      if op then
        if task.op then task.op:cancel() end -- (PUC 5.1: see await_op)
        task.op = op
      else
        push_ready(task, err)
      end
    end
    return
  end
  if not ok then return finish(task, false, y) end
  if co_status(task.co) == "dead" then return finish(task, true) end
  -- a bare coroutine.yield inside a task: nothing would ever resume it
  return finish(task, false, errors.new("invalid",
    "coroutine.yield called directly inside an avideo task; use avideo.sleep,"
    .. " or run plain coroutines without yielding across the task"))
end

--- Create a task for fn(...) and queue its first run.
function M.spawn(fn, ...)
  if not running then
    errors.raise("invalid", "avideo.spawn called outside avideo.run; start the loop with avideo.run(fn)")
  end
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    errors.bad_argument("avideo.spawn", "fn", "function", fn)
  end
  local co = co_create(task_main)
  -- op = false: made with room for op and one more field (results, a
  -- gather's hook), so the table is not resized as they come
  local task = setmetatable({ co = co, status = "pending", op = false }, Task)
  tasks[co] = task
  live = live + 1
  if select("#", ...) == 0 and type(fn) == "function" then
    push_ready(task, fn)
  else
    local start = pack(...)
    start.fn = fn
    push_ready(task, start)
  end
  if tracer then tracer.task_started(task, fn) end
  return task
end

--- For avideo's own modules: a task running start(), a function that
-- takes no arguments and whose results are not kept (see worker_main),
-- with its on_fail hook (see finish).
function M.spawn_worker(start, on_fail)
  local co = co_create(worker_main)
  local task = setmetatable({ co = co, status = "pending", op = false, on_fail = on_fail }, Task)
  tasks[co] = task
  live = live + 1
  push_ready(task, start)
  if tracer then tracer.task_started(task, start) end
  return task
end

-- t.wait() for t:wait(): a clear error, not "attempt to index a nil value"
local function not_a_method(name)
  errors.raise("invalid", ("task:%s must be called as a method: t:%s(...)"):format(name, name))
end

--- True once the task has ended (done, failed or cancelled).
function Task:done()
  if self == nil then not_a_method("done") end
  return self.status ~= "pending"
end

-- Asks a task that has no cancel pending to stop.
local function request_cancel(self, message)
  self.cancel_pending = message or true
  if self.op then
    self.op:cancel() -- frees its connection slot or timer at once
    self.op = false
    push_ready(self)
  elseif self.unwait then
    local unwait = self.unwait
    self.unwait = nil
    unwait(self)
    push_ready(self)
  end
  -- otherwise it is queued to run or running now: it stops at its next wait
  return true
end

--- Ask the task to stop: it sees a `cancelled` error at its wait.
-- Returns false if it had already ended.
function Task:cancel(message)
  if self == nil then not_a_method("cancel") end
  if self.status ~= "pending" then return false end
  if self.cancel_pending then
    -- an avideo.timeout's time is up and its cancel is the pending one,
    -- consumed when the timeout ends: this one is kept to outlive it
    if self.timed_out and self.cancel_outside == nil then self.cancel_outside = message or true end
    return true
  end
  return request_cancel(self, message)
end

-- avideo.timeout's time is up for `task`: every wait is cancelled until
-- its function returns. A cancel from outside still pending is kept, so
-- that it wins over the timeout (as with asyncio.timeout).
function M.time_up(task)
  if task.cancel_pending and not task.timed_out then task.cancel_outside = task.cancel_pending end
  task.timed_out = (task.timed_out or 0) + 1
  if not task.cancel_pending then request_cancel(task, "timed out") end
end

-- The function of a timeout whose time was up has returned: lifts its
-- cancel unless an enclosing timeout's time is up too. Returns the
-- message of a cancel from outside that came meanwhile (true: the
-- default one), which the caller raises instead of its timeout.
function M.time_over(task)
  local left = task.timed_out - 1
  if left > 0 then
    task.timed_out = left
    return nil
  end
  local outside = task.cancel_outside
  task.timed_out, task.cancel_outside, task.cancel_pending = nil, nil, false
  return outside
end

-- A task's watchers: the functions given to on_done and the tasks waiting
-- in Task:wait, in the order they came, called or woken when it ends.
-- One that gives up leaves `false` in its place, so leaving costs O(1)
-- however many wait (table.remove was O(n) each: O(n^2) for n waiters
-- cancelled together); `live` counts the others, and the list goes when
-- the last one leaves, so a loop of waits that time out leaves nothing.
local function add_watcher(task, w)
  local list = task.watchers
  if not list then
    list = { live = 0 }
    task.watchers = list
  end
  local i = #list + 1
  list[i] = w
  list.live = list.live + 1
  return i
end

--- Call f(task) when the task ends (at once if it has).
function Task:on_done(f)
  if self == nil then not_a_method("on_done") end
  if type(f) ~= "function" and not (getmetatable(f) or {}).__call then
    errors.bad_argument("task:on_done", "f", "function", f)
  end
  if self.status ~= "pending" then return f(self) end
  add_watcher(self, f)
end

--- Forget a function given to on_done (the first such entry).
local function remove_watcher(task, f)
  local list = task.watchers
  if not list then return end
  for i = 1, #list do
    if list[i] == f then
      list[i] = false
      list.live = list.live - 1
      if list.live == 0 then task.watchers = nil end
      return
    end
  end
end
M.remove_watcher = remove_watcher

-- The `unwait` of a task waiting in Task:wait (one function for all of
-- them: the task waited for and the waiter's place are fields of the
-- waiter, not upvalues of a closure per wait).
local function stop_waiting(me)
  local task, i = me.waits_on, me.wait_slot
  me.waits_on, me.wait_slot = nil, nil
  local list = task and task.watchers
  if list and list[i] == me then
    list[i] = false
    list.live = list.live - 1
    if list.live == 0 then task.watchers = nil end
  end
end

--- Results of an ended task, or its error raised. Before the end: an
-- `invalid` error (asyncio's InvalidStateError), and the task's failure
-- still counts as unread.
function Task:result()
  if self == nil then not_a_method("result") end
  if self.status == "pending" then
    errors.raise("invalid", "task has not finished: wait for it with task:wait(), or check task:done() first")
  end
  self.retrieved = true
  if self.status == "done" then
    local results = self.results
    if results then return unpack(results, 1, results.n) end
    return
  end
  error(self.err, 0)
end

--- Wait for the task to end; return its results or raise its error.
function Task:wait()
  if self == nil then not_a_method("wait") end
  if self.status == "pending" then
    local me = M.waiting_task("task:wait()")
    if me == nil then errors.raise("invalid", "task:wait() called outside avideo.run") end
    if me == self then errors.raise("invalid", "a task cannot wait for itself") end
    me.waits_on, me.wait_slot = self, add_watcher(self, me)
    me.unwait = stop_waiting
    M.suspend(me)
    me.reads_failure = nil
  end
  return self:result()
end

function Task:__tostring()
  return ("avideo.Task (%s)"):format(self.status)
end

local function by_failure(a, b) return a.reporter.order < b.reporter.order end

-- At the end of a run: the failed tasks nobody read that are still
-- referenced (the others were reported when collected), in failure order.
local function report_unretrieved()
  -- every blocking request ends a run: most have nothing to report
  if next(unretrieved) == nil then
    failures = 0
    return
  end
  local list = {}
  for t in pairs(unretrieved) do list[#list + 1] = t end
  table.sort(list, by_failure)
  for i = 1, #list do report(list[i]) end
  unretrieved = setmetatable({}, getmetatable(unretrieved))
  failures = 0
end

-- Every task is waiting on something only another task could do: cancel
-- them all so each sees an error instead of hanging.
local function break_deadlock()
  local stuck = {}
  for _, t in pairs(tasks) do stuck[#stuck + 1] = t end
  for _, t in ipairs(stuck) do
    t:cancel("deadlock: every task is waiting and nothing can wake them")
  end
end

local out = {} -- loop:step() fills it with token, op pairs
local out_n = 0 -- how many pairs the last turn left in `out`

-- Run the tasks woken so far; ones woken meanwhile wait a turn, so a task
-- that keeps yielding cannot starve I/O.
local function run_ready()
  local tail = rq_tail
  while rq_head <= tail do
    local i = rq_head
    local t, v = rq_task[i], rq_val[i]
    rq_task[i], rq_val[i] = nil, nil
    rq_head = i + 1
    if t.status == "pending" then resume(t, v) end
  end
  if rq_head > rq_tail then
    -- emptied: start over, and let a queue that grew large go
    if rq_tail > 1024 then rq_task, rq_val = {}, {} end
    rq_head, rq_tail = 1, 0
  end
end

-- Resume the tasks of the n ops loop:step() put in `out`.
local function deliver(n)
  for i = 1, n do
    local t, op = out[2 * i - 1], out[2 * i]
    if t.op == op then resume(t, op) end
  end
  -- The next turn overwrites these pairs: only those it will not reach
  -- are cleared (two writes per op less), so `out` keeps nothing alive
  -- past the next turn.
  for i = 2 * n + 1, 2 * out_n do out[i] = nil end
  out_n = n
end

-- The token of an op waited for outside avideo.run (block_on).
local BLOCKING = setmetatable({}, { __name = "avideo.blocking" })
M.BLOCKING = BLOCKING

local function block_loop(op)
  while true do
    -- blocks until some op is ready; 0: nothing is active that could end the wait
    local n = loop:step(false, out)
    if n == 0 then
      error(errors.new("invalid", "deadlock: nothing pending could end this blocking wait"), 0)
    end
    local ready = false
    for i = 1, n do
      if out[2 * i] == op then ready = true end
    end
    for i = 1, 2 * (n > out_n and n or out_n) do out[i] = nil end
    out_n = 0
    if ready then return end
  end
end

--- Outside avideo.run (waiting_task gave nil): drive the loop until op,
-- started with BLOCKING as its token, is ready. No task and no coroutine:
-- a blocking `for chunk in response:chunks()` allocates nothing per piece
-- but the piece (a run each cost a coroutine and tables, which lived long
-- enough to make the generational GC collect in full again and again).
function M.block_on(op)
  running = true
  local ok, err = pcall(block_loop, op)
  running = false
  if not ok then
    op:cancel() -- as abandon() does to a task's op: nothing is left waiting
    error(err, 0)
  end
end

-- Nothing can wake the live tasks: cancel them, and give up if they keep
-- waiting after that. `count` is how many turns in a row found this.
local function deadlocked(count)
  if count > 2 then
    error(errors.new("invalid", "deadlock: tasks keep waiting on each other after cancellation"), 0)
  end
  break_deadlock()
end

local function drive(main)
  local deadlocks, stopping = 0, false
  while true do
    run_ready()
    if live == 0 then return end
    if not stopping and main.status ~= "pending" and main.status ~= "done" then
      -- the main task failed: cancel the rest once (asyncio.run does the
      -- same), not at every turn while they wind down
      stopping = true
      for _, t in pairs(tasks) do t:cancel("avideo.run is ending: its main task failed") end
    end
    local n = loop:step(rq_head <= rq_tail, out)
    if n == 0 and rq_head > rq_tail then
      deadlocks = deadlocks + 1
      deadlocked(deadlocks)
    elseif n > 0 then
      deadlocks = 0
    end
    deliver(n)
  end
end

-- After an internal failure, leave nothing suspended or anchored.
local function abandon()
  for co, t in pairs(tasks) do
    if t.op then t.op:cancel() end
    t.status = "cancelled"
    tasks[co] = nil
    co_close(co)
  end
  live = 0
  rq_task, rq_val, rq_head, rq_tail = {}, {}, 1, 0
  for i = #out, 1, -1 do out[i] = nil end
  out_n = 0
end

--- Run fn(...) as the main task and drive the loop until it and every task
-- it spawned end. Returns its results or raises its error.
function M.run(fn, ...)
  if stepping then
    errors.raise("invalid", "avideo.run called while tasks started with avideo.start run;"
      .. " start it with avideo.start too, or call it from one of those tasks")
  end
  if running then
    errors.raise("invalid", "avideo.run called inside a running avideo.run;"
      .. " call the function directly, or use avideo.spawn")
  end
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    errors.bad_argument("avideo.run", "fn", "function", fn)
  end
  running = true
  local main = M.spawn(fn, ...)
  main.retrieved = true
  local ok, err = pcall(drive, main)
  running = false
  if not ok then abandon() end
  -- fresh tables: ones that held many entries keep their size
  out, tasks, out_n = {}, {}, 0
  if not ok then
    report_unretrieved()
    error(err, 0)
  end
  report_unretrieved()
  return main:result()
end

--- True inside avideo.run, and while tasks started with avideo.start live.
function M.running() return running end

-- ------------------------------------------------------------ embedding
-- start/step drive the same scheduler as run, one turn per step, never
-- blocking: for hosts that run their own event loop and call step when
-- backend_fd() is readable or backend_timeout() ms have passed.

local function stop_stepping()
  running, stepping = false, false
  out, tasks, out_n = {}, {}, 0
  loop:timeout(false)
  report_unretrieved()
end

--- avideo.start(fn, ...) -> task: run fn(...) as a task without blocking;
-- avideo.step() advances it. Its owner reads its outcome (task:done(),
-- task:result()); a failure nobody read is reported when the task is
-- collected. Inside avideo.run it is avideo.spawn.
function M.start(fn, ...)
  if running and not stepping then return M.spawn(fn, ...) end
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    errors.bad_argument("avideo.start", "fn", "function", fn)
  end
  running, stepping = true, true
  local task = M.spawn(fn, ...)
  task.owned = true
  loop:timeout(true) -- a host loop must not block before the first step
  return task
end

-- One turn: the tasks woken so far, then whatever the loop has ready.
-- No deadlock breaker here, unlike avideo.run's: between steps the host's
-- own code runs (a timer, a command) and may release a semaphore or end
-- what a task waits for, so tasks waiting on nothing avideo holds are not
-- stuck; they wait, as a coroutine the host resumes later would.
local function step_turn()
  run_ready()
  if live == 0 then return end
  deliver(loop:step(true, out))
end

--- avideo.step() -> true while started tasks remain: one non-blocking
-- turn of the scheduler. Raises only if the scheduler itself failed (the
-- tasks' own errors stay in their task objects).
function M.step()
  if not stepping then
    if running then errors.raise("invalid", "avideo.step called inside avideo.run") end
    return false
  end
  if current ~= nil then
    errors.raise("invalid", "avideo.step called from inside a task; tasks wait with avideo.sleep or a request")
  end
  local ok, err = pcall(step_turn)
  if not ok then
    abandon()
    stop_stepping()
    error(err, 0)
  end
  if live == 0 then
    stop_stepping()
    return false
  end
  loop:timeout(rq_head <= rq_tail) -- keeps a handed-over host loop awake while tasks are ready
  return true
end

--- The file descriptor a host watches for reading, to call avideo.step().
function M.backend_fd() return loop:fd() end

--- Milliseconds a host may wait on backend_fd() before calling
-- avideo.step() anyway: 0 = now, -1 = no deadline.
function M.backend_timeout() return loop:timeout(rq_head <= rq_tail) end

local luv_check -- with luv: a check handle that steps once per turn of luv's loop

--- avideo.use_loop(host): let a host's libuv loop wake avideo. host is
-- the luv module (luv's loop in this Lua state; avideo.step then runs once
-- per turn of it, from a luv check handle), a light userdata uv_loop_t *
-- (a C host then calls avideo.step itself), or nil to stop.
function M.use_loop(host)
  local kind = type(host)
  if (host ~= nil and kind ~= "table" and kind ~= "userdata")
      or (kind == "table" and type(host.new_check) ~= "function") then
    errors.bad_argument("avideo.use_loop", "host", "the luv module or a uv_loop_t light userdata", host)
  end
  -- Only the core tells a light userdata from a full one (io.stdout): its
  -- refusal, which names its own method, becomes ours.
  local ok, err = pcall(loop.attach, loop, host)
  if not ok then
    local why = tostring(err):match("bad argument #%d+ to '[^']*' %((.*)%)$") or tostring(err)
    errors.raise("invalid", "bad argument 'host' to avideo.use_loop (" .. why .. ")")
  end
  -- Stopped, not closed, when luv is handed back: luv 1.44 crashes at exit
  -- on a handle closed but never given a turn of its loop.
  if luv_check then luv_check:stop() end
  if kind == "table" then
    -- luv calls Lua from its own callbacks; unref'd, so only avideo's
    -- watchers (armed while tasks live) keep luv's loop running
    luv_check = luv_check or host.new_check()
    luv_check:start(function() M.step() end)
    luv_check:unref()
  end
end

--- Live tasks, and what the core still holds (for leak checks in specs).
function M.stats()
  local pending, transfers, easy, sockets = loop:pending()
  return { tasks = live, ops = pending, transfers = transfers, easy_handles = easy, sockets = sockets,
           jobs = loop:jobs() }
end

--- Yield for s seconds (0: let other ready tasks run first).
function M.sleep(s)
  if type(s) ~= "number" or s ~= s or s < 0 then
    errors.bad_argument("avideo.sleep", "s", "non-negative number", s)
  end
  local task = M.waiting_task("avideo.sleep")
  if task == nil then return M.run(M.sleep, s) end
  if s == 0 then
    push_ready(task)
    return M.suspend(task) and nil
  end
  if tracer then
    local t0 = core.now()
    M.await_op(task, loop:sleep(task, s))
    return tracer.span("sleep", task, t0, ("sleep %g s"):format(s))
  end
  M.await_op(task, loop:sleep(task, s))
end

M.now = core.now

-- The live sessions whose limits adapt ("auto"), weakly: the progress
-- line shows what they found (session.lua registers them).
M.adaptive = setmetatable({}, { __mode = "k" })

return M
