-- luv's timers and sockets and avideo's requests in one process, on one
-- loop, neither blocking the other (Debian: apt install lua-luv).
--
--   lua5.4 examples/embed/luv_interop.lua [API_URL] [--fd]
--
-- luv runs the loop (uv.run). Meanwhile a luv timer ticks every 5 ms, a luv
-- TCP client plays ping-pong with a luv TCP server over loopback, and an
-- avideo task gathers 40 videos from avideo-server, ten at a time. The
-- output says how much of the luv work happened while requests were in
-- flight. Two ways to join avideo to luv's loop:
--
--   default  avideo.use_loop(uv): avideo's sockets and timers wake luv's
--            loop, and avideo steps its tasks once per turn of it.
--   --fd     the general way, for any loop: watch avideo.backend_fd() with
--            a luv poll handle, wake up after avideo.backend_timeout() ms,
--            and call avideo.step() (what use_loop does for you).
local uv = require "luv"
local avideo = require "avideo"

local API_URL, style = "http://127.0.0.1:8000", "use_loop"
for _, a in ipairs(arg) do
  if a == "--fd" then style = "fd" else API_URL = a end
end
local N = 40

-- avideo: the talk's gather; `done` counts videos as they arrive
local done, started, finished = 0, nil, nil
local task = avideo.start(function()
  -- closed at the end rather than with <close>: this example runs on LuaJIT
  -- and Lua 5.1 too (luv is there for each)
  local session = avideo.session { limit_per_host = 10 }
  local ids = session:get(API_URL .. "/videos?n=" .. N):raise_for_status():json()
  local tasks = {}
  for i, id in ipairs(ids) do
    tasks[i] = function()
      local video = session:get(API_URL .. "/videos/" .. id):raise_for_status():json()
      done = done + 1
      return video.id
    end
  end
  started = uv.hrtime()
  local got = avideo.gather(tasks)
  finished = uv.hrtime()
  session:close()
  return #got
end)

local function in_flight() return done > 0 and done < N end

-- luv: a timer
local ticks, ticks_in_flight = 0, 0
local timer = uv.new_timer()

-- luv: a TCP echo server and a client that pings it as fast as it answers
local pongs, pongs_in_flight = 0, 0
local server, conn, client = uv.new_tcp(), nil, uv.new_tcp()
assert(server:bind("127.0.0.1", 0))
assert(server:listen(16, function()
  conn = uv.new_tcp()
  server:accept(conn)
  conn:read_start(function(err, data)
    if data then conn:write(data) elseif not conn:is_closing() then conn:close() end
  end)
end))

local function stop_luv()
  timer:close()
  client:close()
  if conn and not conn:is_closing() then conn:close() end
  server:close()
end

timer:start(5, 5, function()
  ticks = ticks + 1
  if in_flight() then ticks_in_flight = ticks_in_flight + 1 end
  if task:done() then stop_luv() end
end)
client:connect("127.0.0.1", server:getsockname().port, function(err)
  assert(not err, err)
  client:read_start(function(_, data)
    if not data or client:is_closing() then return end
    pongs = pongs + 1
    if in_flight() then pongs_in_flight = pongs_in_flight + 1 end
    client:write("ping")
  end)
  client:write("ping")
end)

if style == "use_loop" then
  avideo.use_loop(uv)
else
  -- avideo's backend fd in luv's loop; an idle handle, not a 0 ms timer,
  -- for "step again now", so luv's I/O keeps its turn
  local poll, wake, idle = uv.new_poll(avideo.backend_fd()), uv.new_timer(), uv.new_idle()
  local function pump()
    if not avideo.step() then
      poll:close(); wake:close(); idle:close()
      return
    end
    local ms = avideo.backend_timeout()
    if ms == 0 then idle:start(pump) else idle:stop() end
    if ms > 0 then wake:start(ms, 0, pump) else wake:stop() end
  end
  poll:start("r", pump)
  pump()
end

uv.run()

local ok, count = pcall(task.result, task)
print(("style: %s"):format(style))
if not ok then
  print("avideo task failed: " .. tostring(count))
  os.exit(1)
end
print(("videos: %d of %d in %.3f s"):format(count, N, (finished - started) / 1e9))
print(("luv timer: %d ticks, %d while requests were in flight"):format(ticks, ticks_in_flight))
print(("luv tcp: %d round trips, %d while requests were in flight"):format(pongs, pongs_in_flight))
os.exit(count == N and 0 or 1)
