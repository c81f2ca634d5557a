--- avideo.testing: the emulator for a program's own tests.
--
--   local server <close> = avideo.testing.server { time_scale = 0, videos = 100 }
--   local ids = avideo.get(server.url .. "/videos?n=10"):json()
--
-- server(opts) starts avideo-server on 127.0.0.1 and a free port and
-- returns once it listens: { url, host, port, pid, stats(), close() }.
-- close() (also <close> and garbage collection) stops it with SIGTERM,
-- then SIGKILL if it has not exited within 10 s, and returns true when it
-- exited cleanly. When the Lua process dies first, the server dies with it
-- (a parent-death signal, where setpriv exists).
--
-- opts: time_scale, videos, seed, keepalive_timeout (the server's options
-- of the same names, see docs/server.md), args (a list of more), binary
-- (its path). The binary is, in this order: opts.binary, $AVIDEO_SERVER,
-- the one beside the module (a build tree or an installed prefix), the
-- PATH's.
local errors = require "avideo.errors"

local M = {}

local STOP_TIMEOUT = 10

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute's success: true from 5.2 on, the status 0 in 5.1 and LuaJIT
-- (without its 5.2 compatibility)
local function succeeded(r) return r == true or r == 0 end

local function executable(path)
  return path and succeeded(os.execute("test -x " .. shell_quote(path)))
end

local function find_binary(given)
  if given ~= nil then
    if type(given) ~= "string" then errors.raise("invalid", "avideo.testing.server: binary must be a path string") end
    if not executable(given) then errors.raise("invalid", "avideo.testing.server: " .. given .. " is not an executable file") end
    return given
  end
  local env = os.getenv("AVIDEO_SERVER")
  if env and env ~= "" then
    if not executable(env) then errors.raise("invalid", "avideo.testing.server: $AVIDEO_SERVER (" .. env .. ") is not an executable file") end
    return env
  end
  -- beside the C module: build/lib/avideo/core.so -> build/src/server/,
  -- PREFIX/lib/lua/5.4/avideo/core.so -> PREFIX/bin/
  -- (package.searchpath: Lua 5.2+ and LuaJIT; a 5.1 port goes without)
  local core = package.searchpath and package.searchpath("avideo.core", package.cpath)
  local dir = core and core:match("^(.*)/[^/]+$")
  if dir then
    for _, rel in ipairs { "/../../src/server/avideo-server", "/../../../../bin/avideo-server" } do
      if executable(dir .. rel) then return dir .. rel end
    end
  end
  local p = io.popen("command -v avideo-server 2>/dev/null")
  local found = p and p:read("*l")
  if p then p:close() end
  if found and found ~= "" then return found end
  errors.raise("invalid", "avideo.testing.server: avideo-server not found (install avideo with cmake --install, "
    .. "or set AVIDEO_SERVER to its path)")
end

-- Whether process pid has ended. It stays a zombie until its pipe is
-- closed, so kill -0 cannot tell: its state comes from /proc.
local function exited(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if not f then return true end
  -- "*a": Lua 5.1 and LuaJIT know no "a"
  local state = (f:read("*a") or ""):match("^%d+ %b() (%a)")
  f:close()
  return state == nil or state == "Z" or state == "X"
end

local function wait_exit(pid, timeout)
  local t0 = os.time()
  while not exited(pid) do
    if os.time() - t0 > timeout then return false end
    os.execute("sleep 0.01")
  end
  return true
end

local Server = { __name = "avideo.testing.Server" }
Server.__index = Server

--- The server's GET /stats: connections, requests, in flight, ...
function Server:stats()
  return require("avideo").get(self.url .. "/stats", { timeout = 10 }):raise_for_status():json()
end

--- Stop it; true when it exited with status 0 after SIGTERM, in time.
function Server:close()
  if self.closed then return self.clean end
  self.closed = true
  os.execute("kill -TERM " .. self.pid .. " 2>/dev/null")
  local in_time = wait_exit(self.pid, STOP_TIMEOUT)
  if not in_time then os.execute("kill -KILL " .. self.pid .. " 2>/dev/null") end
  local ok, how, code = self._pipe:close()
  -- 5.1 and LuaJIT tell no exit status there: stopping in time is clean
  self.clean = in_time and ok == true and (how == nil or (how == "exit" and code == 0))
  return self.clean
end
Server.__close = Server.close

-- A server nobody closed must not outlive its object (nor the process).
function Server:__gc()
  if not self.closed then
    self.closed = true
    os.execute("kill -KILL " .. self.pid .. " 2>/dev/null")
  end
end

function Server:__tostring()
  return ("avideo.testing.Server %s%s"):format(self.url, self.closed and " (closed)" or "")
end

local OPTIONS = { time_scale = "--time-scale", videos = "--videos", seed = "--seed",
  keepalive_timeout = "--keepalive-timeout" }

local has_setpriv

--- Start avideo-server (see the top of this file).
function M.server(opts)
  opts = opts or {}
  if type(opts) ~= "table" then errors.raise("invalid", "avideo.testing.server: opts must be a table") end
  local args = { find_binary(opts.binary), "--host", "127.0.0.1", "--port", "0" }
  for k, v in pairs(opts) do
    if OPTIONS[k] then
      if type(v) ~= "number" then errors.raise("invalid", ("avideo.testing.server: %s must be a number"):format(k)) end
      args[#args + 1] = OPTIONS[k]
      args[#args + 1] = tostring(v)
    elseif k ~= "args" and k ~= "binary" then
      errors.raise("invalid", ("avideo.testing.server: unknown option '%s'"):format(tostring(k)))
    end
  end
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = tostring(a) end
  for i, a in ipairs(args) do args[i] = shell_quote(a) end
  if has_setpriv == nil then has_setpriv = succeeded(os.execute("command -v setpriv >/dev/null 2>&1")) end
  -- the shell prints its pid, then becomes the server (exec keeps the pid);
  -- no LD_PRELOAD: a sanitizer runtime preloaded into Lua is not the server's
  local pipe = assert(io.popen("echo $$; exec env -u LD_PRELOAD " .. (has_setpriv and "setpriv --pdeathsig KILL " or "")
    .. table.concat(args, " ") .. " 2>&1", "r"))
  local pid = tonumber(pipe:read("*l"))
  local line = pipe:read("*l")
  local host, port = (line or ""):match("^avideo%-server listening on http://([%d%.]+):(%d+)$")
  if not port then
    local rest = pipe:read("*a") or ""
    pipe:close()
    local said = ((line or "") .. " " .. rest):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
    errors.raise("invalid", "avideo.testing.server: avideo-server did not start"
      .. (said ~= "" and (": " .. said) or " (it exited without a word)"))
  end
  return require("avideo.compat").setmetatable_gc({ url = "http://" .. host .. ":" .. port, host = host, port = tonumber(port), pid = pid,
    closed = false, _pipe = pipe }, Server)
end

return M
