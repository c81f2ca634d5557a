--- Start and stop the real avideo-server for specs.
-- The binary comes from $AVIDEO_SERVER (set by ctest) or the default build dir.
-- `start{...}` runs it on 127.0.0.1, port 0, and reads the port from its
-- "listening" line; `stop()` sends SIGTERM, waits (bounded) for the exit
-- and returns its status {ok, how, code} as io.popen's close gives it;
-- `wait()` waits the same way without the signal.
local M = {}

--- Seconds `stop()` waits for a clean exit before it sends SIGKILL.
M.stop_timeout = 10

local function binary()
  return os.getenv("AVIDEO_SERVER") or "build/src/server/avideo-server"
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function sleep(seconds)
  local ok, socket = pcall(require, "socket")
  if ok then socket.sleep(seconds) else os.execute("sleep " .. seconds) end
end

-- Whether the process has exited. It stays a zombie until the pipe is
-- closed, so `kill -0` cannot tell: read its state from /proc.
local function exited(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return true end
  local stat = f:read("*a") or ""
  f:close()
  local state = stat:match("^%d+ %b() (%a)")
  return state == nil or state == "Z" or state == "X"
end

M.exited = exited

-- How an exited process ended, as io.popen's close says it ({ok, how,
-- code}), read from /proc while it is a zombie (field 52: waitpid's
-- status). For Lua 5.1 and LuaJIT, whose close gives no status.
local function zombie_status(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return nil end
  local rest = (f:read("*a") or ""):match("^%d+ %b() (.*)$")
  f:close()
  local fields = {}
  for w in (rest or ""):gmatch("%S+") do fields[#fields + 1] = w end
  local st = tonumber(fields[50])
  if not st then return nil end
  if st % 128 == 0 then
    local code = math.floor(st / 256) % 256
    return { ok = code == 0 or nil, how = "exit", code = code }
  end
  return { how = "signal", code = st % 128 }
end

--- Wait (at most `timeout` seconds) for process pid to exit, then
-- SIGKILL it; true when it had to be killed. The caller then closes the
-- pipe it was started with, which no longer waits.
function M.reap(pid, timeout)
  local waited = 0
  while not exited(pid) and waited < timeout do
    sleep(0.02)
    waited = waited + 0.02
  end
  if exited(pid) then return false end
  os.execute("kill -KILL " .. pid .. " 2>/dev/null")
  return true
end

--- Start a server. opts: time_scale, keepalive_timeout, videos, seed, args (list of extra args),
-- wrapper (list: a command the server runs under, e.g. valgrind and its options).
function M.start(opts)
  opts = opts or {}
  local args = {}
  for _, a in ipairs(opts.wrapper or {}) do args[#args + 1] = a end
  for _, a in ipairs { binary(), "--host", "127.0.0.1", "--port", "0" } do args[#args + 1] = a end
  if opts.time_scale then args[#args + 1] = "--time-scale"; args[#args + 1] = tostring(opts.time_scale) end
  if opts.keepalive_timeout then args[#args + 1] = "--keepalive-timeout"; args[#args + 1] = tostring(opts.keepalive_timeout) end
  if opts.videos then args[#args + 1] = "--videos"; args[#args + 1] = tostring(opts.videos) end
  if opts.seed then args[#args + 1] = "--seed"; args[#args + 1] = tostring(opts.seed) end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = a end
  local quoted = {}
  for i, a in ipairs(args) do quoted[i] = shell_quote(a) end
  -- The shell prints its pid, then execs the server (same pid, through
  -- env); the server prints its one "listening" line. The sanitizer build
  -- preloads libasan for lua5.4: the server needs none (an ASan build has
  -- its own), and leak checks, off for Lua, go back on for it.
  local env = "env -u LD_PRELOAD "
  if os.getenv("ASAN_OPTIONS") then env = env .. "ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 " end
  local pipe = assert(io.popen("echo $$; exec " .. env .. table.concat(quoted, " ") .. " 2>&1", "r"))
  local pid = tonumber(pipe:read("*l"))
  local line = pipe:read("*l")
  local host, port = (line or ""):match("^avideo%-server listening on http://([%d%.]+):(%d+)$")
  if not port then
    local rest = pipe:read("*a")
    pipe:close()
    error("avideo-server did not start: " .. tostring(line) .. "\n" .. tostring(rest), 2)
  end
  local server = { pid = pid, port = tonumber(port), host = host,
                   url = "http://" .. host .. ":" .. port }
  --- Wait (at most `timeout` seconds, then SIGKILL) for the process to
  -- end by itself, e.g. after `kill("INT")`; returns its status.
  function server.wait(timeout)
    if server.stopped then return server.status end
    server.stopped = true
    server.hung = M.reap(pid, timeout or M.stop_timeout)
    local rest = pipe:read("*a")
    local zombie = zombie_status(pid)
    local ok, how, code = pipe:close()
    server.output = rest
    server.status = { ok = ok, how = how, code = code }
    if how == nil and zombie then server.status = zombie end
    return server.status
  end
  function server.stop()
    if not server.stopped then os.execute("kill -TERM " .. pid .. " 2>/dev/null") end
    return server.wait(M.stop_timeout)
  end
  --- Send a signal by name (e.g. "KILL") without waiting.
  function server.kill(sig)
    os.execute("kill -" .. (sig or "KILL") .. " " .. pid .. " 2>/dev/null")
  end
  -- A server a failed spec never stopped must not outlive it: collecting
  -- the pipe would wait for the process forever. This table is newer than
  -- the pipe, so its finalizer runs first.
  setmetatable(server, { __gc = function(s)
    if not s.stopped then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end })
  return server
end

--- Stop a server and tell whether it went cleanly: exit status 0 after
-- SIGTERM, in time. Returns true, or false and what happened (for assert).
function M.stop_clean(server)
  local status = server.stop()
  if server.hung then return false, "did not exit on SIGTERM: " .. tostring(server.output) end
  if status.ok and status.how == "exit" and status.code == 0 then return true end
  return false, ("ended by %s %s: %s"):format(status.how, status.code, server.output)
end

local scoped = {}

--- Like start, for a server one test starts itself: `stop_scoped` (from
-- after_each) stops it even when the test failed half-way.
function M.start_scoped(opts)
  local server = M.start(opts)
  scoped[#scoped + 1] = server
  return server
end

function M.stop_scoped()
  for _, server in ipairs(scoped) do server.stop() end
  scoped = {}
end

return M
