-- The talk's picture, drawn from a real run: 100 videos gathered with
-- limit_per_host = 100 (the server overloads: every request starts at
-- once and each takes longer) and with 10 (ten waves of 0.2 s), each
-- traced to an SVG waterfall. The README shows the two side by side.
--
--   lua5.4 examples/waterfalls.lua [--url URL] [--time-scale 1] [--out docs/images]
--
-- Without --url it starts its own avideo-server (avideo.testing) at the
-- time scale given (default 1: the talk's timings).
dofile((arg[0]:match("^.*/") or "") .. "lib/bootstrap.lua")
local avideo = require "avideo"
local talk = require "talk"

local opts = talk.options { "url", "time_scale", "out" }
local given_url = false
for _, a in ipairs(arg) do
  if a:match("^%-%-url") then given_url = true end
end
local server
if not given_url then server = avideo.testing.server { time_scale = opts.time_scale or 1 } end
local url = server and server.url or opts.url

local ids = avideo.get(url .. "/videos?n=100"):raise_for_status():json()

for _, limit in ipairs { 100, 10 } do
  local path = ("%s/gather-limit-%d.svg"):format(opts.out, limit)
  avideo.trace.start(path)
  local t0 = avideo.now()
  avideo.run(function()
    local session <close> = avideo.session { limit_per_host = limit }
    local tasks = {}
    for i, id in ipairs(ids) do
      tasks[i] = function() return session:get(url .. "/videos/" .. id):raise_for_status():json() end
    end
    return avideo.gather(tasks)
  end)
  local elapsed = avideo.now() - t0
  local _, n = avideo.trace.stop()
  print(("limit_per_host = %d: %d requests in %.2f s -> %s"):format(limit, n, elapsed, path))
end

if server then server:close() end
