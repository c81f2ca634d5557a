--- Retries: the `retry` option (a session's, or a request's in its place),
-- checked once into a policy, and the loop that re-issues a request under
-- it. Only a request with a policy for its method comes here (session.lua's
-- request()): one without costs exactly what it did before.
--
-- Choices (README, "retry"):
-- * jitter is "full" jitter (a uniform wait in [0, backoff * 2^(n-1)]):
--   clients that failed together spread out the most;
-- * `connect` retries kind `connect` only: a `dns` failure (the name does
--   not resolve) rarely heals within a retry's seconds;
-- * `timeout` retries the pool, connect and sock_read clocks, never the
--   total one: all attempts share timeout.total, so nothing is left;
-- * `reset` retries a `protocol` error with cause "reset" (the core marks
--   it), never one whose answer was broken;
-- * Retry-After (seconds or an HTTP date) replaces the backoff of a
--   retried status, capped at max_backoff;
-- * `methods` gates every retry, connect failures included.
-- The pcall around a request that waits is compat.pcall: PUC 5.1's own
-- cannot yield.
local errors = require "avideo.errors"
local sched = require "avideo.scheduler"
local compat = require "avideo.compat"

local raise, is_error = errors.raise, errors.is_error
local floor, huge, random = math.floor, math.huge, math.random

local M = {}

local DEFAULT_STATUSES = { 429, 500, 502, 503, 504 }
local DEFAULT_METHODS = { "GET", "HEAD", "PUT", "DELETE", "OPTIONS" }
local DEFAULT_ON = { "connect", "timeout", "reset" }
local FIELDS = {
  attempts = true, statuses = true, methods = true, backoff = true, max_backoff = true, jitter = true, on = true,
}
local ON_WORDS = { connect = true, timeout = true, reset = true }

local show = errors.show

local function bad(field, want, v, where)
  raise("invalid", ("retry %s must be %s, got %s%s"):format(field, want, show(v), where or ""))
end

local function whole(v)
  return type(v) == "number" and v == floor(v) and v ~= huge
end

-- The items of list field `name` (nil: its default), each checked by ok.
local function list(v, name, default, want, ok)
  if v == nil then return default end
  if type(v) ~= "table" then bad(name, "a list of " .. want, v) end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n ~= #v then raise("invalid", ("retry %s must be a list of %s, got a table that is not a list"):format(name, want)) end
  for i = 1, n do
    if not ok(v[i]) then bad(name, "a list of " .. want, v[i], " (item " .. i .. ")") end
  end
  return v
end

local function seconds(v, name, default)
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < 0 or v == huge then bad(name, "a number of seconds >= 0", v) end
  return v
end

--- The policy of a `retry` option: false for none (nil, false, or one
-- attempt), else the checked fields, lists made sets. A number is
-- { attempts = n }, true the defaults. Raises `invalid` naming the field.
function M.policy(v, fn)
  if v == nil or v == false then return false end
  if v == true then
    v = {}
  elseif type(v) == "number" then
    v = { attempts = v }
  elseif type(v) ~= "table" then
    errors.bad_argument(fn, "retry", "table, number or boolean", v)
  end
  for k in pairs(v) do
    if not FIELDS[k] then
      raise("invalid", ("unknown retry field '%s' to %s (attempts, statuses, methods, backoff, max_backoff,"
        .. " jitter, on)"):format(tostring(k), fn))
    end
  end
  local attempts = v.attempts
  if attempts == nil then attempts = 3 end
  if not whole(attempts) or attempts < 1 then bad("attempts", "a whole number >= 1", attempts) end
  local statuses = list(v.statuses, "statuses", DEFAULT_STATUSES, "status codes 100..599",
    function(s) return whole(s) and s >= 100 and s <= 599 end)
  local methods = list(v.methods, "methods", DEFAULT_METHODS, "method names",
    function(m) return type(m) == "string" end)
  local on = list(v.on, "on", DEFAULT_ON, '"connect", "timeout" or "reset"',
    function(w) return ON_WORDS[w] ~= nil end)
  local p = {
    attempts = attempts,
    backoff = seconds(v.backoff, "backoff", 0.5),
    max_backoff = seconds(v.max_backoff, "max_backoff", 30),
    jitter = v.jitter,
    statuses = {}, methods = {},
  }
  if p.jitter == nil then p.jitter = true end
  if type(p.jitter) ~= "boolean" then bad("jitter", "a boolean", p.jitter) end
  if attempts == 1 then return false end -- checked all the same: a typo is a typo
  for _, s in ipairs(statuses) do p.statuses[s] = true end
  for _, m in ipairs(methods) do p.methods[m:upper()] = true end
  for _, w in ipairs(on) do p[w] = true end -- p.connect, p.timeout, p.reset
  return p
end

--- The backoff before retry n (1 for the first): backoff * 2^(n-1), at
-- most max_backoff; with jitter a uniform draw in [0, that].
function M.delay(p, n)
  local d = p.backoff * 2 ^ (n - 1)
  if d > p.max_backoff then d = p.max_backoff end
  if p.jitter then d = d * random() end
  return d
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10,
  Nov = 11, Dec = 12 }

-- Seconds since the epoch of a UTC date (days from the civil calendar:
-- H. Hinnant's algorithm; no os.time, which reads local time).
local function epoch(y, mon, d, h, mi, s)
  if mon <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * ((mon + 9) % 12) + 2) / 5) + d - 1
  local days = era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy - 719468
  return ((days * 24 + h) * 60 + mi) * 60 + s
end

-- An HTTP date (RFC 9110 5.6.7: IMF-fixdate, RFC 850 or asctime) as
-- seconds since the epoch, or nil.
local function http_date(v)
  local d, mon, y, h, mi, s = v:match("^%a+, (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  if not d then
    d, mon, y, h, mi, s = v:match("^%a+, (%d%d)%-(%a%a%a)%-(%d%d) (%d%d):(%d%d):(%d%d) GMT$")
    if y then
      y = tonumber(y)
      y = y < 70 and 2000 + y or 1900 + y
    end
  end
  if not d then
    mon, d, h, mi, s, y = v:match("^%a+ (%a%a%a) +(%d%d?) (%d%d):(%d%d):(%d%d) (%d%d%d%d)$")
  end
  if not d or not MONTHS[mon] then return nil end
  return epoch(tonumber(y), MONTHS[mon], tonumber(d), tonumber(h), tonumber(mi), tonumber(s))
end

--- The wait a Retry-After value asks for, in seconds (a date in the past:
-- 0), or nil when it is neither a number of seconds nor an HTTP date.
function M.retry_after(v)
  if type(v) ~= "string" then return nil end
  v = v:match("^%s*(.-)%s*$")
  if v:match("^%d+$") then return tonumber(v) end
  local at = http_date(v)
  if not at then return nil end
  local wait = at - os.time()
  return wait > 0 and wait or 0
end

-- True if error e is one policy p retries.
local function retried_error(p, e)
  if not is_error(e) then return false end
  local kind = e.kind
  if kind == "connect" then return p.connect == true end
  if kind == "timeout" then return p.timeout == true and e.phase ~= "total" end
  if kind == "protocol" then return p.reset == true and e.cause == "reset" end
  return false
end

-- What the retry loop ends with: the response (its status raised when
-- asked), or the last attempt's error, each saying how many retries there were.
local function finish(ok, r, retries, raise_status)
  if not ok then
    if is_error(r) then r.retries = retries end
    error(r, 0)
  end
  rawset(r, "retries", retries)
  if raise_status and r.status >= 400 then
    r:close() -- a stream nobody will read gives its slot back now
    local _, e = pcall(r.raise_for_status, r)
    e.retries = retries
    error(e, 0)
  end
  return r
end

--- The request under policy p: attempt(self, method, url, headers, body,
-- timeout, max_body, carry) makes one attempt and returns its response
-- (status never raised) or raises. Each attempt is a new request, queued
-- for a slot like any; all of them share timeout.total (each gets what is
-- left of it). Outside any task it runs as avideo.run's main task.
function M.send(p, attempt, self, method, url, headers, body, timeout, max_body, raise_status, carry)
  local task = sched.waiting_task("session:" .. method:lower())
  if task == nil then
    return sched.run(M.send, p, attempt, self, method, url, headers, body, timeout, max_body, raise_status, carry)
  end
  local now = sched.now
  local total = timeout.total
  local deadline = total and total > 0 and now() + total
  local retries, this = 0, timeout
  while true do
    local ok, r = compat.pcall(attempt, self, method, url, headers, body, this, max_body, carry)
    local wait
    if retries + 1 < p.attempts then
      if ok and p.statuses[r.status] then
        wait = M.retry_after(r.headers["retry-after"])
        if wait == nil then
          wait = M.delay(p, retries + 1)
        elseif wait > p.max_backoff then
          wait = p.max_backoff
        end
      elseif not ok and retried_error(p, r) then
        wait = M.delay(p, retries + 1)
      end
    end
    -- no retry that could not start before the total timeout is over
    if wait and deadline and now() + wait >= deadline then wait = nil end
    if not wait then
      if retries > 0 and not ok and is_error(r, "timeout") and r.phase == "total" then
        -- the core timed the last attempt by what was left: say the whole
        r.message = ("total timeout: request not done within %g s (%d attempts)"):format(total, retries + 1)
      end
      return finish(ok, r, retries, raise_status)
    end
    if ok then r:close() end -- a stream gives its slot back before the wait
    r = nil -- not kept alive while waiting
    sched.sleep(wait) -- cancellable: a cancelled task stops here
    retries = retries + 1
    if deadline then
      local left = deadline - now()
      if left <= 0 then
        raise("timeout", ("total timeout: request not done within %g s (%d attempts)"):format(total, retries),
          { url = url, method = method, phase = "total", retries = retries })
      end
      this = { total = left, connect = timeout.connect, sock_read = timeout.sock_read, pool = timeout.pool }
    end
  end
end

return M
