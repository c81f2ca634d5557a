--- Start and stop a real httpbin (Debian's python3-httpbin, the `httpbin`
-- module) under gunicorn for specs. `start()` -> { url, port, pid, stop() }
-- once it answers; `stop()` ends the master and its workers, bounded.
-- gunicorn runs in a process group of its own (setsid), so stop() and the
-- finalizer reach its workers too, and with a parent-death signal
-- (setpriv --pdeathsig): a spec process that is killed or aborts, whose
-- finalizers never run, takes it along (its workers follow their master).
local server_support = require "support.server"

local M = {}

--- Seconds start() waits for gunicorn to listen and a worker to answer.
M.start_timeout = 30

local function sleep(seconds)
  local ok, socket = pcall(require, "socket")
  if ok then socket.sleep(seconds) else os.execute("sleep " .. seconds) end
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local text = f:read("*a") or ""
  f:close()
  return text
end

-- Whether an HTTP GET of /get on port answers 200: gunicorn listens before
-- its workers have booted, and only a worker answers.
local function answers(port)
  local ok, socket = pcall(require, "socket")
  if not ok then
    return os.execute("curl -sf -o /dev/null --max-time 1 http://127.0.0.1:" .. port .. "/get") == true
  end
  local c = socket.tcp()
  c:settimeout(1)
  if not c:connect("127.0.0.1", port) then c:close(); return false end
  c:send("GET /get HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
  local line = c:receive("*l")
  c:close()
  return line ~= nil and line:find("^HTTP/1%.%d 200") ~= nil
end

local function signal_group(pgid, sig)
  os.execute(("kill -%s -%d 2>/dev/null"):format(sig, pgid))
end

function M.start()
  -- its log to a file: a pipe nobody drains would block it
  local log = os.tmpname()
  -- LD_PRELOAD off as for the server: the sanitizer build preloads libasan for lua5.4
  local pipe = assert(io.popen("echo $$; exec env -u LD_PRELOAD setsid setpriv --pdeathsig TERM "
    .. "/usr/bin/python3 -m gunicorn --bind 127.0.0.1:0 --workers 2 --graceful-timeout 2 "
    .. "--error-logfile " .. log .. " httpbin:app </dev/null >/dev/null 2>&1", "r"))
  local shell_pid = tonumber(pipe:read("*l"))
  local bin = { stopped = false }
  -- gunicorn says "Listening at: http://127.0.0.1:PORT (MASTER_PID)"; the
  -- master's pid is that of the shell unless setsid had to fork
  local waited, port, pid = 0, nil, nil
  while waited < M.start_timeout do
    local text = read_file(log)
    port, pid = text:match("Listening at: http://127%.0%.0%.1:(%d+) %((%d+)%)")
    if port and answers(port) then break end
    if text:find("Shutting down") or text:find("Reason:") then break end
    sleep(0.05)
    waited = waited + 0.05
  end
  pid = tonumber(pid) or shell_pid
  function bin.stop()
    if bin.stopped then return end
    bin.stopped = true
    signal_group(pid, "TERM")
    -- bounded: the master waits graceful-timeout (2 s) for its workers
    server_support.reap(pid, 10)
    signal_group(pid, "KILL") -- any worker left behind
    pipe:close()
    os.remove(log)
  end
  setmetatable(bin, { __gc = function(b)
    if not b.stopped then signal_group(pid, "KILL") end
  end })
  if not (port and answers(port)) then
    local why = read_file(log)
    bin.stop()
    error("httpbin (gunicorn) did not start: " .. why, 2)
  end
  bin.port = tonumber(port)
  bin.pid = pid
  bin.url = "http://127.0.0.1:" .. port
  return bin
end

return M
