--- Progress of a gather or an as_completed loop (opts.progress):
--   true      one line on stderr, redrawn in place while it runs when
--             stderr is a terminal, and a plain final line either way;
--   function  called with the state instead (at most 10 times a second,
--             and once at the end with state.finished = true); if it
--             raises, it is not called again, and the gather (at once)
--             or the as_completed loop (at its next item) raises that.
-- The state: done, total, failed, running (items started, not ended),
-- in_flight (requests inside libcurl, of every session), queued (running
-- items not in flight: waiting for a slot, or doing something else),
-- rate (items a second), eta (seconds, nil until one item ended),
-- elapsed (seconds), limits (what the adaptive limits of the live
-- sessions found, for keys in use: a list of { key, limit }, key a host
-- or "total", sorted; empty without "auto").
local core = require "avideo.core"
local errors = require "avideo.errors"
local sched = require "avideo.scheduler"
local compat = require "avideo.compat"

local M = {}

local INTERVAL = 0.1 -- seconds between two reports

local Progress = {}
Progress.__index = Progress

local function duration(s)
  if s == nil then return "?" end
  if s < 60 then return ("%.1f s"):format(s) end
  return ("%dm%02ds"):format(math.floor(s / 60), math.floor(s % 60))
end

-- The adaptive limits in use now, sorted by key.
local function adaptive_limits()
  local list = {}
  for session in pairs(sched.adaptive) do
    if not session.closed then
      for key, row in pairs(session:limits()) do
        local adapts = key == "total" and session.limit == "auto" or key ~= "total" and session.limit_per_host == "auto"
        if adapts and row.in_flight + row.queued > 0 then list[#list + 1] = { key = key, limit = row.limit } end
      end
    end
  end
  table.sort(list, function(a, b) return a.key < b.key end)
  return list
end

function Progress:state(finished)
  local elapsed = core.now() - self.t0
  local running = self.started - self.done
  local _, transfers = sched.loop:pending()
  local in_flight = math.min(running, transfers)
  local rate = elapsed > 0 and self.done / elapsed or 0
  return {
    done = self.done, total = self.total, failed = self.failed, running = running,
    in_flight = in_flight, queued = running - in_flight, rate = rate,
    eta = (self.done > 0 and rate > 0) and (self.total - self.done) / rate or nil,
    elapsed = elapsed, finished = finished or false, limits = adaptive_limits(),
  }
end

function M.line(st)
  local text = ("%s: %d/%d done"):format(st.what or "avideo", st.done, st.total)
  if st.failed > 0 then text = text .. (", %d failed"):format(st.failed) end
  if st.finished then
    return text .. (" in %s (%.1f/s)"):format(duration(st.elapsed), st.rate)
  end
  text = text .. (", %d in flight, %d queued"):format(st.in_flight, st.queued)
  local limits = st.limits or {}
  if #limits > 0 then -- what "auto" found: at most three, then how many more
    local shown = {}
    for i = 1, math.min(3, #limits) do shown[i] = tostring(limits[i].limit) end
    if #limits > 3 then shown[#shown + 1] = ("+%d"):format(#limits - 3) end
    text = text .. (#limits == 1 and ", limit " or ", limits ") .. table.concat(shown, " ")
  end
  return text .. (", %.1f/s, ETA %s"):format(st.rate, duration(st.eta))
end

function Progress:report(finished)
  if self.err ~= nil then return end -- the function raised: never again
  local st = self:state(finished)
  st.what = self.what
  if self.fn then
    -- an item's end may report from the scheduler's own stack, where an
    -- error would end the whole run: the error is kept for the gather or
    -- loop that owns this to raise, and on_error tells it at once
    local ok, err = compat.pcall(self.fn, st)
    if not ok then
      self.err = err
      if self.on_error then self.on_error(err) end
    end
    return
  end
  if self.tty then
    -- \r and "erase to the end of the line": the line redraws in place
    io.stderr:write("\r", M.line(st), "\27[K", finished and "\n" or "")
  elseif finished then
    io.stderr:write(M.line(st), "\n")
  end
  io.stderr:flush()
end

--- An item started.
function Progress:start() self.started = self.started + 1 end

--- An item ended (ok false: it failed).
function Progress:tick(ok)
  self.done = self.done + 1
  if not ok then self.failed = self.failed + 1 end
  if self.done == self.total then return end -- finish() reports the end
  local now = core.now()
  if now >= self.next_report then
    self.next_report = now + INTERVAL
    if self.fn or self.tty then self:report(false) end
  end
end

--- The gather or loop ended (also when stopped early).
function Progress:finish()
  if self.finished then return end
  self.finished = true
  self:report(true)
end

--- A reporter for opts.progress (nil: none), or an `invalid` error.
function M.new(progress, total, fn_name, what)
  if progress == nil or progress == false then return nil end
  local p = setmetatable({ total = total, done = 0, failed = 0, started = 0, t0 = core.now(),
    next_report = 0, what = what }, Progress)
  if type(progress) == "function" then
    p.fn = progress
  elseif progress == true then
    p.tty = core.isatty(2)
  else
    errors.raise("invalid", ("%s progress must be true or a function, got %s"):format(fn_name, type(progress)))
  end
  return p
end

return M
