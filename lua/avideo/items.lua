--- What gather, as_completed and wait take: lists of items (functions,
-- callables, tasks) and tables of options, checked the same way for each,
-- so every one of them accepts and refuses exactly the same things.
local errors = require "avideo.errors"
local sched = require "avideo.scheduler"

local Task = sched.Task

local M = {}

local function is_task(x) return getmetatable(x) == Task end
M.is_task = is_task

--- A function, or a table (not a task) with __call.
function M.callable(x)
  return type(x) == "function" or (type(x) == "table" and not is_task(x) and (getmetatable(x) or {}).__call ~= nil)
end
local callable = M.callable

--- Check items[1..n] are functions, callables or tasks; true if any is a
-- task. `what` names the caller in the error.
function M.check(what, items, n)
  local has_tasks = false
  for i = 1, n do
    local item = items[i]
    if type(item) ~= "function" then
      if is_task(item) then
        has_tasks = true
      elseif not callable(item) then
        errors.raise("invalid", ("bad item #%d to %s (function or task expected, got %s)")
          :format(i, what, type(item)))
      end
    end
  end
  return has_tasks
end

local show = errors.show
M.show = show

--- opts (nil: {}) with no key but those of `allowed`.
function M.options(what, opts, allowed)
  if opts == nil then return {} end
  if type(opts) ~= "table" then errors.bad_argument(what, "opts", "table", opts) end
  for k in pairs(opts) do
    if not allowed[k] then errors.raise("invalid", ("unknown option '%s' to %s"):format(tostring(k), what)) end
  end
  return opts
end

--- opts.limit: nil or a whole number >= 0 (0 = no limit); the number of
-- items that may run at once (n for no limit). Not math.tointeger (5.3+):
-- the bound keeps 2^63 and inf out as well.
function M.limit(what, v, n)
  if v == nil then return n end
  if type(v) ~= "number" or v ~= math.floor(v) or v < 0 or v > 2 ^ 53 then
    errors.raise("invalid", ("%s limit must be a whole number >= 0 (0 = no limit), got %s"):format(what, show(v)))
  end
  return v > 0 and v or n
end

--- opts.timeout: nil (none) or seconds, a number >= 0.
function M.seconds(what, name, v)
  if v ~= nil and (type(v) ~= "number" or v ~= v or v < 0) then
    errors.raise("invalid", ("%s %s must be a number of seconds >= 0 (nil = none), got %s"):format(what, name, show(v)))
  end
  return v
end

return M
