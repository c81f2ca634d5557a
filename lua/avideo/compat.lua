--- The one place where the Lua layer depends on the Lua version: 5.4 (the
-- first target), 5.3, 5.1 and LuaJIT 2.1. Every other module takes these
-- names instead of the 5.3/5.4-only library calls, so one source runs on
-- all four. On 5.4 each name is the library's own function.
--
-- Numbers on 5.1 and LuaJIT are doubles: `tointeger` and `math_type` call
-- a number an integer when it is whole and below 2^53 in magnitude (where
-- doubles are exact: 2^53 + 1 reads as 2^53), so JSON integers beyond 2^53 lose exactness there, and whole-
-- number checks (limits, counts) are `x == floor(x)` within that range.
local M = {}

local floor, pcall = math.floor, pcall
local co_create, co_resume, co_yield = coroutine.create, coroutine.resume, coroutine.yield
local co_status, co_running = coroutine.status, coroutine.running

M.lua51 = _VERSION == "Lua 5.1"          -- PUC 5.1 and LuaJIT
M.luajit = type(rawget(_G, "jit")) == "table"

M.pack = table.pack or function(...) return { n = select("#", ...), ... } end
M.unpack = table.unpack or unpack

local EXACT = 2 ^ 53
M.tointeger = math.tointeger or function(x)
  if type(x) == "number" and x == floor(x) and x > -EXACT and x < EXACT then return x end
  return nil
end
M.math_type = math.type or function(x)
  if type(x) ~= "number" then return nil end
  return M.tointeger(x) and "integer" or "float"
end
-- An integer as decimal text: 5.1's tostring writes 2^53 as 9.007199254741e+15
M.int_text = math.type and tostring or function(x) return ("%.0f"):format(x) end

-- Without coroutine.close (before 5.4) there are no <close> variables to
-- run: a dead or dropped coroutine is simply collected.
M.co_close = coroutine.close or function() return true end

--- `debug.traceback(co, nil, level)` as 5.4 gives it: the traceback
-- without a message line (5.1 and LuaJIT return nil for a nil message).
function M.traceback(co, level)
  if not M.lua51 then return debug.traceback(co, nil, level) end
  return (debug.traceback(co, "", level):gsub("^\n", ""))
end

--- A finaliser for a table: 5.1 and LuaJIT run __gc only for userdata, so
-- there the table keeps a proxy userdata whose __gc calls fn(t).
function M.setmetatable_gc(t, mt)
  setmetatable(t, mt)
  if M.lua51 and mt.__gc and newproxy then
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = function() mt.__gc(t) end
    rawset(t, proxy, true) -- a key no user code looks up
  end
  return t
end

-- pcall across yields. 5.2+ and LuaJIT let a task wait inside pcall; PUC
-- 5.1 cannot ("attempt to yield across metamethod/C-call boundary"), so
-- there pcall runs fn in a coroutine of its own and passes each of its
-- yields up to the task's coroutine (the way coxpcall does). `running`
-- then names the task's coroutine from inside such a pcall, so the
-- scheduler's "is this the task?" checks keep working.
if M.lua51 and not M.luajit then
  local outer = setmetatable({}, { __mode = "k" }) -- inner coroutine -> the one that ran its pcall
  -- A table keeps the size it grew to (100,000 pcalls at once left
  -- 5 MiB): once its entries fall to a quarter of their peak it is made
  -- anew with them. `live` counts entries (one whose coroutine was left
  -- unfinished and collected is counted until the next copy).
  local live, peak = 0, 0

  local function forget(co)
    outer[co] = nil
    live = live - 1
    if peak > 64 and live * 4 < peak then
      local fresh, n = setmetatable({}, { __mode = "k" }), 0
      for k, v in pairs(outer) do
        fresh[k] = v
        n = n + 1
      end
      outer, live, peak = fresh, n, n
    end
  end

  local function finish(co, ok, ...)
    if co_status(co) == "dead" then
      forget(co)
      return ok, ...
    end
    -- fn yielded: yield the same values from our coroutine, and resume fn
    -- with what our resumer sends back
    return finish(co, co_resume(co, co_yield(...)))
  end

  function M.pcall(fn, ...)
    local me = co_running()
    if me == nil then return pcall(fn, ...) end -- the main thread never waits
    local co = co_create(function(...) return fn(...) end) -- 5.1: C functions too
    outer[co] = me
    live = live + 1
    if live > peak then peak = live end
    return finish(co, co_resume(co, ...))
  end

  function M.running()
    local co = co_running()
    while co and outer[co] do co = outer[co] end
    return co
  end

  -- PUC 5.1 has no isyieldable: a yield fails across a C function on the
  -- coroutine's stack (pcall, xpcall, table.sort...), and it fails at the
  -- yield, after the wait started its timer or request, which then woke a
  -- task gone elsewhere. Such a frame is looked for first. (A Lua
  -- metamethod called by the VM is a boundary too, but not a C frame: it
  -- still fails at its yield.)
  -- Inside M.pcall the wait yields up through each coroutine it runs in,
  -- so their stacks count too (each one's level 0 is the coroutine.resume
  -- of M.pcall's own loop, which is not in the way).
  local getinfo = debug.getinfo
  local function c_frame(co, level)
    while true do
      local info
      if co then info = getinfo(co, level, "S") else info = getinfo(level, "S") end
      if info == nil then return false end
      if info.what == "C" then return true end
      level = level + 1
    end
  end
  function M.isyieldable()
    local co = co_running()
    if co == nil or c_frame(nil, 3) then return false end -- 3: our caller
    co = outer[co]
    while co do
      if c_frame(co, 1) then return false end
      co = outer[co]
    end
    return true
  end
else
  M.pcall = pcall
  M.running = co_running
  M.isyieldable = coroutine.isyieldable or function() return co_running() ~= nil end
end

return M
