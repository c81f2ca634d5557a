-- The README's demo: the talk's notebook (examples/notebook.lua) against an
-- avideo-server. If no server answers at --url, it starts one on that port
-- ($AVIDEO_SERVER, else the checkout's build, else avideo-server on PATH),
-- runs the notebook, and stops the server it started.
--
--   lua5.4 examples/demo.lua [--url http://127.0.0.1:8000] [--time-scale 1]
local paths = dofile((arg[0]:match("^.*/") or "") .. "lib/bootstrap.lua")
local avideo = require "avideo"
local talk = require "talk"

local opts = talk.options { "url", "time_scale" }
local here = arg[0]:match("^.*/") or ""

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function answers(url)
  return (pcall(function()
    avideo.get(url .. "/videos/?n=0", { timeout = 2 }):raise_for_status()
  end))
end

local function server_binary()
  local built = paths.build .. "/src/server/avideo-server"
  local f = io.open(built, "rb")
  if f then f:close() end
  return os.getenv("AVIDEO_SERVER") or (f and built) or "avideo-server"
end

local function alive(pid)
  return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

-- Start the server on the URL's host and port; wait for its "listening" line.
local function start_server(url)
  local host, port = url:match("^http://([^/:]+):(%d+)$")
  if not host then error("--url must look like http://HOST:PORT to start a server on it", 0) end
  local log = os.tmpname()
  local cmd = { quote(server_binary()), "--host", quote(host), "--port", port }
  if opts.time_scale then cmd[#cmd + 1] = "--time-scale " .. opts.time_scale end
  local sh = io.popen(table.concat(cmd, " ") .. " >" .. quote(log) .. " 2>&1 & echo $!")
  local pid = tonumber(sh:read("l"))
  sh:close()
  local server = { pid = pid, log = log }
  for _ = 1, 200 do
    local f = io.open(log)
    local text = f and f:read("a") or ""
    if f then f:close() end
    if text:find("listening on") then return server end
    if not alive(pid) then
      os.remove(log)
      error("avideo-server did not start: " .. (text ~= "" and text or "(no output)"), 0)
    end
    avideo.sleep(0.05)
  end
  os.execute("kill -TERM " .. pid)
  os.remove(log)
  error("avideo-server did not say it was listening within 10 s", 0)
end

local function stop_server(server)
  os.execute("kill -TERM " .. server.pid .. " 2>/dev/null")
  for _ = 1, 100 do
    if not alive(server.pid) then break end
    avideo.sleep(0.05)
  end
  os.remove(server.log)
  print(("demo: stopped the avideo-server it started (pid %d)"):format(server.pid))
end

-- The interpreter running this script, to run the notebook with.
local function interpreter()
  local i = 0
  while arg[i - 1] do i = i - 1 end
  return arg[i]
end

local server
if answers(opts.url) then
  print("demo: using the avideo-server already running at " .. opts.url)
else
  server = start_server(opts.url)
  print(("demo: started avideo-server at %s (pid %d)"):format(opts.url, server.pid))
end
print()
io.stdout:flush()
local ok, done, why, code = pcall(os.execute, ("%s %s --url %s"):format(quote(interpreter()),
  quote(here .. "notebook.lua"), quote(opts.url)))
if server then stop_server(server) end
if not ok then error(done, 0) end
if not done then os.exit(why == "signal" and 128 + code or code) end
