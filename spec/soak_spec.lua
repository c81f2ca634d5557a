-- Soak: many requests in one process, mixing successes, 404s, sock_read
-- timeouts and resets. Afterwards RSS and the counts of tasks, ops,
-- transfers, easy handles and sockets are back at their baseline.
-- AVIDEO_SOAK_N sets the number (CI runs 10,000; the full soak is
-- AVIDEO_SOAK_N=100000 lua5.4 /usr/bin/busted spec/soak_spec.lua).
local avideo = require "avideo"
local peer_support = require "support.peer"
local server_support = require "support.server"

local N = tonumber(os.getenv("AVIDEO_SOAK_N")) or 10000

local function rss_kib()
  for line in io.lines("/proc/self/status") do
    local kib = line:match("^VmRSS:%s+(%d+)")
    if kib then return tonumber(kib) end
  end
end

describe("soak", function()
  local peer, server
  lazy_setup(function()
    peer = peer_support.start()
    server = server_support.start { time_scale = 0 }
  end)
  lazy_teardown(function()
    peer.stop()
    server.stop()
  end)

  local function batch(n)
    local ids = avideo.get(server.url .. "/videos/?n=10"):json()
    local counts = { ok = 0, http = 0, timeout = 0, protocol = 0 }
    avideo.run(function()
      local s <close> = avideo.session { limit = 50 }
      local stall = { timeout = { sock_read = 0.05 } }
      local fs = {}
      for i = 1, n do
        local k = i % 20
        local url
        if k == 0 then url = peer.url .. "/stall"
        elseif k == 1 then url = peer.url .. "/reset-before"
        elseif k < 4 then url = server.url .. "/videos/missing" .. k
        else url = server.url .. "/videos/" .. ids[i % #ids + 1] end
        local opts = k == 0 and stall or nil
        fs[i] = function() return s:get(url, opts):raise_for_status():json() end
      end
      local r = avideo.gather(fs, { return_exceptions = true, limit = 200 })
      for i = 1, n do
        local kind = avideo.is_error(r[i]) and r[i].kind or "ok"
        counts[kind] = counts[kind] + 1
      end
    end)
    return counts
  end

  it(("runs %d mixed requests and returns to its baseline"):format(N), function()
    batch(N) -- warm up: pools, buffers, the Lua heap reach their working size
    collectgarbage("collect")
    collectgarbage("collect")
    local base_rss, base = rss_kib(), avideo.stats()
    local t0 = avideo.now()
    local counts
    for _ = 1, 3 do counts = batch(N) end
    local wall = avideo.now() - t0
    collectgarbage("collect")
    collectgarbage("collect")
    local rss, after = rss_kib(), avideo.stats()
    print(("\n  soak: 3 x %d requests in %.1f s: %d ok, %d http, %d timeout, %d protocol; RSS %d -> %d KiB;"
      .. " easy handles %d -> %d, sockets %d -> %d"):format(N, wall, counts.ok, counts.http, counts.timeout,
      counts.protocol, base_rss, rss, base.easy_handles, after.easy_handles, base.sockets, after.sockets))
    assert.are.equal(N * 16 / 20, counts.ok)
    assert.are.equal(N * 2 / 20, counts.http)
    assert.are.equal(N / 20, counts.timeout)
    assert.are.equal(N / 20, counts.protocol)
    assert.are.same({ 0, 0, 0, 0 }, { after.tasks, after.ops, after.transfers, after.jobs })
    assert.is_true(after.easy_handles <= base.easy_handles, "easy handles grew")
    assert.is_true(after.sockets <= base.sockets + 2, "sockets grew")
    -- three more batches after the warm-up: a leak of even 100 bytes a
    -- request would show as several MiB here
    assert.is_true(rss - base_rss < 2 * 1024, "RSS grew by " .. (rss - base_rss) .. " KiB")
  end)
end)
