-- Run a command against a fresh avideo-server, for the C examples' ctest
-- entries:
--
--   lua5.4 with_server.lua [--time-scale S] -- COMMAND [ARGS...]
--
-- Starts the server on 127.0.0.1 on a free port (spec/support/server.lua,
-- binary from $AVIDEO_SERVER), runs COMMAND with every "{url}" in ARGS
-- replaced by the server's URL, stops the server, and exits with the
-- command's status (1 if the server did not stop cleanly).
package.path = (os.getenv("AVIDEO_SOURCE_DIR") or ".") .. "/spec/?.lua;" .. package.path
local support = require "support.server"

local time_scale, cmd = "0.1", {}
local i = 1
while arg[i] and arg[i] ~= "--" do
  if arg[i] == "--time-scale" then
    time_scale = arg[i + 1]
    i = i + 2
  else
    io.stderr:write("with_server: unknown option ", arg[i], "\n")
    os.exit(2)
  end
end
for j = i + 1, #arg do cmd[#cmd + 1] = arg[j] end
if #cmd == 0 then
  io.stderr:write("usage: with_server.lua [--time-scale S] -- COMMAND [ARGS...]\n")
  os.exit(2)
end

local server = support.start { time_scale = time_scale }
for j, a in ipairs(cmd) do
  cmd[j] = "'" .. a:gsub("{url}", server.url):gsub("'", "'\\''") .. "'"
end
-- An ASan-built command is its own program, but without LeakSanitizer:
-- its tracer crashes at exit here (signal 11 inside LSan) when libuv's
-- pool threads are being joined. Leaks of these programs are checked under
-- valgrind instead (the valgrind build wraps them: examples/embed/CMakeLists.txt).
local env = ""
if os.getenv("ASAN_OPTIONS") then env = "env ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 " end
io.stdout:flush()
local ok, how, code = os.execute(env .. table.concat(cmd, " "))
local stopped, why = support.stop_clean(server)
if not stopped then io.stderr:write("with_server: ", why, "\n") end
if not ok then
  io.stderr:write(("with_server: command ended by %s %s\n"):format(how, code))
  os.exit(how == "exit" and code ~= 0 and code or 1)
end
os.exit(stopped and 0 or 1)
