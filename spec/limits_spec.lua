-- Connection limits, reuse and timeouts against the real avideo-server,
-- checked from both sides: the server's GET /stats (connections accepted,
-- most requests in flight at once) and what the client saw (order of
-- completion, wall time, avideo.stats()). Each test starts its own servers
-- so their counters hold only its requests; the only request not its own
-- is the final /stats, made with curl on a connection of its own.
local avideo = require "avideo"
local support = require "support.server"
local client = require "support.server_client"
local settled = require "support.settled"
local video_id = require "support.video_id"

local slow = os.getenv("AVIDEO_SLOW") == "1" -- valgrind: everything is slower

-- The server's counters, minus the /stats request itself.
local function server_stats(server)
  local st = client.get_json(server.url .. "/stats")
  st.connections = st.connections - 1
  st.requests = st.requests - 1
  return st
end

-- A video id every server has (the store is the same for a seed).
local ID
local function video_url(server) return server.url .. "/videos/" .. ID end

local raises = require "support.raises"

local wait_until = require "support.wait_until"

describe("session limits against avideo-server", function()
  setup(function() ID = video_id() end)
  after_each(function()
    support.stop_scoped()
    settled()
  end)

  it("reuses connections: the server sees `limit` connections for 200 requests", function()
    local server = support.start_scoped { time_scale = 0.02 }
    avideo.run(function()
      local s <close> = avideo.session { limit = 5 }
      local fs = {}
      for i = 1, 200 do fs[i] = function() return s:get(video_url(server)):raise_for_status().status end end
      assert.are.equal(200, #avideo.gather(fs))
    end)
    local st = server_stats(server)
    assert.are.equal(200, st.requests)
    assert.are.equal(5, st.max_in_flight)
    assert.are.equal(5, st.connections)
  end)

  it("has 100 in flight by default, with no per-host limit", function()
    local server = support.start_scoped { time_scale = 0.1 }
    local s <close> = avideo.session {}
    assert.are.equal(100, s.limit)
    assert.are.equal(0, s.limit_per_host)
    avideo.run(function()
      local fs = {}
      for i = 1, 150 do fs[i] = function() return s:get(video_url(server)).status end end
      avideo.gather(fs)
    end)
    local st = server_stats(server)
    assert.are.equal(150, st.requests)
    assert.are.equal(100, st.max_in_flight)
  end)

  it("never has more than limit_per_host in flight on a host, and each host gets that many", function()
    local a = support.start_scoped { time_scale = 0.1 }
    local b = support.start_scoped { time_scale = 0.1 }
    avideo.run(function()
      local s <close> = avideo.session { limit = 0, limit_per_host = 3 }
      local fs = {}
      for i = 1, 30 do
        local server = i % 2 == 0 and a or b
        fs[i] = function() return s:get(video_url(server)).status end
      end
      avideo.gather(fs)
    end)
    for _, server in ipairs { a, b } do
      local st = server_stats(server)
      assert.are.equal(15, st.requests)
      assert.are.equal(3, st.max_in_flight)
      assert.is_true(st.connections <= 3, "connections: " .. st.connections)
    end
  end)

  it("caps the total across hosts at limit", function()
    local server = support.start_scoped { time_scale = 0.1 }
    -- two keys for one server: the server's count is the session's total
    local origins = { server.url, "http://localhost:" .. server.port }
    avideo.run(function()
      local s <close> = avideo.session { limit = 4, limit_per_host = 3 }
      local fs = {}
      for i = 1, 24 do
        fs[i] = function() return s:get(origins[i % 2 + 1] .. "/videos/" .. ID).status end
      end
      avideo.gather(fs)
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
    end)
    local st = server_stats(server)
    assert.are.equal(24, st.requests)
    -- 4, not 3: the second key got the slot the first could not use
    assert.are.equal(4, st.max_in_flight)
  end)

  it("serves each host first come, first served, and across hosts under limit", function()
    local a = support.start_scoped { time_scale = 0.05 }
    local b = support.start_scoped { time_scale = 0.05 }
    for _, opts in ipairs { { limit_per_host = 1, limit = 0 }, { limit = 1 } } do
      local order = {}
      avideo.run(function()
        local s <close> = avideo.session(opts)
        local fs = {}
        for i = 1, 12 do
          local server = i % 2 == 0 and a or b
          fs[i] = function()
            s:get(video_url(server))
            order[#order + 1] = i
          end
        end
        avideo.gather(fs)
      end)
      if opts.limit == 1 then
        -- one at a time in all: exactly the order they were made
        assert.are.same({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, order)
      else
        -- one at a time per host: each host's requests in the order made
        local last = { [0] = 0, [1] = 0 }
        for _, i in ipairs(order) do
          assert.is_true(i > last[i % 2], "out of order: " .. table.concat(order, ","))
          last[i % 2] = i
        end
      end
    end
    assert.are.equal(1, server_stats(a).max_in_flight)
    assert.are.equal(1, server_stats(b).max_in_flight)
  end)

  it("does not let a busy host starve another", function()
    local busy = support.start_scoped { time_scale = 1 }   -- 0.2 s a request or more
    local other = support.start_scoped { time_scale = 0.1 } -- 0.02 s
    local waited
    avideo.run(function()
      local s <close> = avideo.session { limit = 4, limit_per_host = 3 }
      local fs = {}
      for i = 1, 30 do fs[i] = function() return s:get(video_url(busy)).status end end
      local g = avideo.spawn(avideo.gather, fs)
      -- 27 of the busy host's requests wait in the session before the other host asks
      wait_until(function() return s:stats().queued == 27 end, "the busy host's queue")
      local t0 = avideo.now()
      assert.are.equal(200, s:get(video_url(other)).status)
      waited = avideo.now() - t0
      g:cancel()
      pcall(g.wait, g)
    end)
    -- it used the slot the busy host could not, instead of waiting for 27 requests
    assert.is_true(waited < (slow and 1.0 or 0.15), "the other host waited " .. waited .. " s")
    assert.are.equal(3, server_stats(busy).max_in_flight)
  end)

  it("hands a request to libcurl only when it may run", function()
    local server = support.start_scoped { time_scale = 1 }
    avideo.run(function()
      local s <close> = avideo.session { limit = 1 }
      local tasks = {}
      for i = 1, 5 do tasks[i] = avideo.spawn(s.get, s, video_url(server)) end
      wait_until(function() return s:stats().queued == 4 end, "the queue")
      assert.are.equal(1, avideo.stats().transfers)
      assert.are.same({ in_flight = 1, queued = 4, hosts = 1 }, s:stats())
      for _, t in ipairs(tasks) do t:cancel() end
    end)
    assert.is_true(server_stats(server).max_in_flight <= 1)
  end)

  it("starts the total timeout when the request gets its slot, not while it queues", function()
    local server = support.start_scoped { time_scale = 0.5 } -- 0.1 s a request, one at a time
    local slower = support.start_scoped { time_scale = 2 }   -- 0.4 s
    avideo.run(function()
      local s <close> = avideo.session { limit = 1, timeout = 0.25 }
      local fs = {}
      for i = 1, 4 do fs[i] = function() return s:get(video_url(server)).status end end
      local t0 = avideo.now()
      -- 4 x 0.1 s in a row: 0.4 s in all, more than 0.25 s, but each only 0.1 s from its slot
      assert.are.same({ 200, 200, 200, 200 }, avideo.gather(fs))
      assert.is_true(avideo.now() - t0 >= 0.4)
      -- the same session's 0.25 s does end a request that takes 0.4 s
      t0 = avideo.now()
      local e = raises("timeout", nil, s.get, s, video_url(slower))
      local took = avideo.now() - t0
      assert.are.equal("total", e.phase)
      assert.are.equal(video_url(slower), e.url)
      assert.is_true(took >= 0.24 and took < (slow and 1.0 or 0.35), "timed out after " .. took .. " s")
    end)
  end)

  it("times out in the pool, and a cancelled request frees its slot at once", function()
    local stuck = support.start_scoped { time_scale = 50 } -- 10 s a request
    local server = support.start_scoped { time_scale = 0.05 }
    avideo.run(function()
      local s <close> = avideo.session { limit = 1 }
      local holder = avideo.spawn(s.get, s, video_url(stuck))
      wait_until(function() return s:stats().in_flight == 1 end, "the holder")
      local t0 = avideo.now()
      local e = raises("timeout", nil, s.get, s, video_url(server), { timeout = { pool = 0.05 } })
      assert.are.equal("pool", e.phase)
      assert.is_true(avideo.now() - t0 >= 0.05)
      local next_one = avideo.spawn(s.get, s, video_url(server))
      wait_until(function() return s:stats().queued == 1 end, "the next request")
      t0 = avideo.now()
      holder:cancel()
      assert.are.equal(200, next_one:wait().status)
      assert.is_true(avideo.now() - t0 < (slow and 1.0 or 0.2), "the slot came free late")
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
    end)
    -- the request that timed out in the pool never reached the server
    local st = server_stats(server)
    assert.are.equal(1, st.requests)
    assert.are.equal(1, st.max_in_flight)
  end)

  it("close() fails the queued requests, lets the running one finish and refuses new ones", function()
    local server = support.start_scoped { time_scale = 0.5 }
    avideo.run(function()
      local s = avideo.session { limit = 1 }
      local tasks = {}
      for i = 1, 3 do tasks[i] = avideo.spawn(s.get, s, video_url(server)) end
      wait_until(function() return s:stats().queued == 2 end, "the queue")
      s:close()
      assert.is_true(s.closed)
      assert.are.equal(200, tasks[1]:wait().status)
      for i = 2, 3 do
        local e = raises("cancelled", nil, tasks[i].wait, tasks[i])
        assert.matches("session closed", e.message)
      end
      local e = raises("invalid", nil, s.get, s, video_url(server))
      assert.matches("session is closed", e.message)
    end)
    assert.are.equal(1, server_stats(server).requests)
  end)
end)
