--- The memory half of protocol_soak_spec, as its own process so RSS
-- measures avideo alone (a busted process's RSS moves with busted's own
-- allocations and the allocator's high-water marks):
--   lua5.4 spec/support/protocol_soak.lua N ROUNDS
-- Each round gathers N requests to the test peer's /chaos with random
-- faults; prints "round R rss KIB lua KIB" after a full collection, and
-- "heap KIB" (the live heap) in an ASan build, where RSS measures ASan's
-- quarantine.
local avideo = require "avideo"
local peer = require("support.peer").start()

local N, ROUNDS = tonumber(arg[1]) or 2500, tonumber(arg[2]) or 6
local FAULTS = { "none", "none", "none", "none", "excess", "close", "slow", "reset", "short" }
local allocated_bytes = require("avideo.core").allocated_bytes

local rss_kib = require "support.rss"

math.randomseed(20241203)
for round = 1, ROUNDS do
  avideo.run(function()
    local s <close> = avideo.session { limit_per_host = 20, timeout = { total = 10 } }
    local fs = {}
    for i = 1, N do
      local fault = FAULTS[math.random(#FAULTS)]
      local url = ("%s/chaos?id=%d&fault=%s&ms=%d"):format(peer.url, i, fault, fault == "slow" and 20 or 3)
      fs[i] = function() return s:get(url):raise_for_status():json().id end
    end
    avideo.gather(fs, { return_exceptions = true })
  end)
  collectgarbage("collect")
  collectgarbage("collect")
  print(("round %d rss %d lua %d%s"):format(round, rss_kib(), math.floor(collectgarbage("count")),
    allocated_bytes and (" heap %d"):format(math.floor(allocated_bytes() / 1024)) or ""))
  io.stdout:flush()
end
peer.stop()
