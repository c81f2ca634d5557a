--- The soak run, as its own process so RSS measures avideo alone:
--   lua5.4 spec/support/soak.lua N ROUNDS
-- Each round gathers N requests mixing successes, 404s, sock_read timeouts
-- and resets. Prints one line per round: "round R rss KIB ok H T P tasks
-- ops transfers jobs easy sockets", and "heap KIB" (live heap bytes) in an
-- ASan build. Needs AVIDEO_SERVER (and the test peer).
local avideo = require "avideo"
local peer = require("support.peer").start()
local server = require("support.server").start { time_scale = 0 }

local N, ROUNDS = tonumber(arg[1]) or 10000, tonumber(arg[2]) or 4

local rss_kib = require "support.rss"

-- ASan builds only: the live heap, exact, where RSS measures the quarantine
local allocated_bytes = require("avideo.core").allocated_bytes

local ids = avideo.get(server.url .. "/videos/?n=10"):json()
local stall = { timeout = { sock_read = 0.05 } }

for round = 1, ROUNDS do
  local counts = { ok = 0, http = 0, timeout = 0, protocol = 0 }
  avideo.run(function()
    local s <close> = avideo.session { limit = 50 }
    local fs = {}
    for i = 1, N do
      local k, url, opts = i % 20, nil, nil
      if k == 0 then url, opts = peer.url .. "/stall", stall
      elseif k == 1 then url = peer.url .. "/reset-before"
      elseif k < 4 then url = server.url .. "/videos/missing" .. k
      else url = server.url .. "/videos/" .. ids[i % #ids + 1] end
      fs[i] = function() return s:get(url, opts):raise_for_status():json() end
    end
    local r = avideo.gather(fs, { return_exceptions = true, limit = 200 })
    for i = 1, N do
      local kind = avideo.is_error(r[i]) and r[i].kind or "ok"
      counts[kind] = (counts[kind] or 0) + 1
    end
  end)
  collectgarbage("collect")
  collectgarbage("collect")
  local s = avideo.stats()
  print(("round %d rss %d ok %d http %d timeout %d protocol %d tasks %d ops %d transfers %d jobs %d easy %d sockets %d%s")
    :format(round, rss_kib(), counts.ok, counts.http, counts.timeout, counts.protocol,
      s.tasks, s.ops, s.transfers, s.jobs, s.easy_handles, s.sockets,
      allocated_bytes and (" heap %d"):format(allocated_bytes() // 1024) or ""))
  io.stdout:flush()
end
peer.stop()
server.stop()
