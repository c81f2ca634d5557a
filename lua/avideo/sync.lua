--- Semaphores and timeouts: asyncio.Semaphore and asyncio.wait_for.
local errors = require "avideo.errors"
local sched = require "avideo.scheduler"
local compat = require "avideo.compat"
local pack, unpack = compat.pack, compat.unpack

local M = {}

local Semaphore = { __name = "avideo.Semaphore" }
Semaphore.__index = Semaphore

--- avideo.semaphore(n): at most n holders at once; waiters served FIFO.
-- Not `n % 1`: 2^63 and 1e300 pass that, and past 2^53 a float count can
-- no longer be kept exactly (nor printed with %d).
function M.semaphore(n)
  if type(n) ~= "number" or n ~= math.floor(n) or n < 1 or n > 2 ^ 53 then
    errors.raise("invalid", "avideo.semaphore(n): n must be a whole number from 1 to 2^53, got " .. tostring(n))
  end
  return setmetatable({ value = n, size = n, head = 1, tail = 0, gone = 0, waiters = {} }, Semaphore)
end

-- A waiter that gives up is marked gone, O(1); once the gone are more
-- than half the line (and more than a few), the line is made again
-- without them, so acquires that keep timing out against a held unit do
-- not grow it for as long as the unit is held.
local function leave(self, w)
  if w.gone then return end
  w.gone = true
  local gone = self.gone + 1
  self.gone = gone
  if gone > 16 and gone * 2 > self.tail - self.head + 1 then
    local line, n = {}, 0
    for i = self.head, self.tail do
      local x = self.waiters[i]
      if not x.gone then
        n = n + 1
        line[n] = x
      end
    end
    self.waiters, self.head, self.tail, self.gone = line, 1, n, 0
  end
end

local function check(self, fn)
  if getmetatable(self) ~= Semaphore then
    errors.raise("invalid", ("%s must be called as a method: sem:%s(...)"):format(fn, fn))
  end
end

--- Take one unit, waiting in line if none is free.
function Semaphore:acquire()
  check(self, "acquire")
  if self.value > 0 and self.head > self.tail then
    self.value = self.value - 1
    return
  end
  local task = sched.waiting_task("semaphore:acquire")
  if task == nil then
    errors.raise("invalid", "semaphore:acquire() would wait forever outside avideo.run")
  end
  local w = { task = task }
  self.tail = self.tail + 1
  self.waiters[self.tail] = w
  task.unwait = function() leave(self, w) end
  local ok, err = compat.pcall(sched.suspend, task)
  if not ok then
    if w.granted then
      w.gone = true
      self:release() -- granted, then cancelled before it ran
    else
      leave(self, w)
    end
    error(err, 0)
  end
end

--- Give one unit back; the longest waiter gets it.
function Semaphore:release()
  check(self, "release")
  local waiters = self.waiters
  while self.head <= self.tail do
    local w = waiters[self.head]
    waiters[self.head] = nil
    self.head = self.head + 1
    if not w.gone then
      w.granted = true
      sched.wake(w.task)
      return
    end
    self.gone = self.gone - 1
  end
  self.head, self.tail, self.gone = 1, 0, 0
  if self.value >= self.size then
    errors.raise("invalid", "semaphore released more times than it was acquired")
  end
  self.value = self.value + 1
end

--- acquire(), call fn(...), release() even if fn fails; return fn's results.
function Semaphore:with(fn, ...)
  check(self, "with")
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    errors.bad_argument("semaphore:with", "fn", "function", fn)
  end
  self:acquire()
  local r = pack(compat.pcall(fn, ...))
  self:release()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

--- Units free now, and tasks waiting.
function Semaphore:available()
  check(self, "available")
  local waiting = 0
  for i = self.head, self.tail do
    if not self.waiters[i].gone then waiting = waiting + 1 end
  end
  return self.value, waiting
end

function Semaphore:__tostring()
  local free, waiting = self:available()
  return ("avideo.Semaphore (%d of %d free, %d waiting)"):format(free, self.size, waiting)
end

--- avideo.timeout(s, fn, ...): fn's results, or a `timeout` error after s
-- seconds, fn being cancelled: it sees `cancelled` at its wait, and at
-- every wait after that until it returns (it may clean up without waiting).
function M.timeout(s, fn, ...)
  if type(s) ~= "number" or s ~= s or s < 0 then
    errors.bad_argument("avideo.timeout", "s", "non-negative number", s)
  end
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    errors.bad_argument("avideo.timeout", "fn", "function", fn)
  end
  local task = sched.waiting_task("avideo.timeout")
  if task == nil then return sched.run(M.timeout, s, fn, ...) end
  local fired = false
  local watchdog = sched.spawn(function()
    sched.sleep(s)
    fired = true
    sched.time_up(task) -- from now on every wait of fn is cancelled
  end)
  local r = pack(compat.pcall(fn, ...))
  watchdog:cancel()
  if fired then
    local outside = sched.time_over(task)
    if outside then
      error(errors.new("cancelled", outside == true and "task was cancelled" or outside), 0)
    end
    errors.raise("timeout", ("total timeout: not done within %g s (avideo.timeout)"):format(s), { phase = "total" })
  end
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, r.n)
end

return M
