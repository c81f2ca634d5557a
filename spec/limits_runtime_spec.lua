-- session:set_limit / set_limit_per_host (a fixed limit changed at
-- runtime) and session:limits() (what the limiter sees per host, and in
-- total), against
-- the real avideo-server.
local avideo = require "avideo"
local support = require "support.server"
local client = require "support.server_client"
local settled = require "support.settled"
local video_id = require "support.video_id"
local raises = require "support.raises"

local wait_until = require "support.wait_until"

describe("limits changed at runtime", function()
  local ID
  setup(function() ID = video_id() end)
  after_each(function()
    support.stop_scoped()
    settled()
  end)

  it("starts the queued requests at once when limit_per_host grows", function()
    local server = support.start_scoped { time_scale = 2 } -- 0.4 s a video
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 1 }
      local tasks = {}
      for i = 1, 6 do tasks[i] = avideo.spawn(s.get, s, server.url .. "/videos/" .. ID) end
      wait_until(function() return s:stats().queued == 5 end, "the queue")
      s:set_limit_per_host(4)
      -- no request ended: the three that now fit started in the same call
      assert.are.same({ in_flight = 4, queued = 2, hosts = 1 }, s:stats())
      assert.are.equal(4, s.limit_per_host)
      for _, t in ipairs(tasks) do t:cancel() end
    end)
  end)

  it("lets the running requests finish when a limit shrinks, and starts no more than it says", function()
    local server = support.start_scoped { time_scale = 0.5 }
    avideo.run(function()
      local s <close> = avideo.session { limit = 5 }
      local tasks = {}
      for i = 1, 12 do tasks[i] = avideo.spawn(s.get, s, server.url .. "/videos/" .. ID) end
      wait_until(function() return s:stats().in_flight == 5 end, "five running")
      s:set_limit(2)
      assert.are.equal(5, s:stats().in_flight)
      client.get(server.url .. "/stats?reset=1") -- from now on, the server's most at once
      for _, t in ipairs(tasks) do assert.are.equal(200, t:wait().status) end
      assert.are.equal(2, s.limit)
    end)
    -- the five already there, then at most two: the reset counted those still in flight
    assert.is_true(client.get_json(server.url .. "/stats").max_in_flight <= 6)
  end)

  it("turns 0 into no limit, and turns an adaptive limit into a fixed one", function()
    local server = support.start_scoped { time_scale = 1 }
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = "auto" }
      assert.are.equal("auto", s.limit_per_host)
      local tasks = {}
      for i = 1, 30 do tasks[i] = avideo.spawn(s.get, s, server.url .. "/videos/" .. ID) end
      wait_until(function() return s:stats().in_flight > 0 end, "a start")
      assert.are.equal(4, s:stats().in_flight) -- auto starts at 4
      s:set_limit_per_host(0)
      assert.are.same({ in_flight = 30, queued = 0, hosts = 1 }, s:stats())
      for _, t in ipairs(tasks) do t:cancel() end
    end)
  end)

  it("shows per host the limit, in flight, queued and the latencies", function()
    local a = support.start_scoped { time_scale = 0.5 }
    local b = support.start_scoped { time_scale = 0 }
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 2 }
      assert.are.same({}, s:limits())
      local tasks = {}
      for i = 1, 5 do tasks[i] = avideo.spawn(s.get, s, a.url .. "/videos/" .. ID) end
      wait_until(function() return s:stats().queued == 3 end, "the queue")
      local key = a.url -- "http://127.0.0.1:port": scheme://host:port
      assert.are.same({ [key] = { limit = 2, in_flight = 2, queued = 3 } }, s:limits())
      for _, t in ipairs(tasks) do t:wait() end
      -- a fixed limit forgets an idle host; an adaptive one keeps it
      assert.are.same({}, s:limits())
      local auto <close> = avideo.session { limit_per_host = "auto", rate_per_host = { 100 } }
      auto:get(a.url .. "/videos/" .. ID)
      auto:get(b.url .. "/videos/" .. ID)
      local seen = auto:limits()
      local slow, quick = seen[a.url], seen[b.url]
      assert.are.same({ 0, 0, 0, 0 }, { slow.in_flight, slow.queued, quick.in_flight, quick.queued })
      assert.is_true(slow.limit >= 4 and quick.limit >= 4)
      -- one sample: the recent latency, but no best yet (the third smallest
      -- answer is the best, so that a few cheaper ones are not taken for it)
      assert.is_true(slow.latency_recent >= 0.1 and slow.latency_recent < 0.5, slow.latency_recent)
      assert.is_nil(slow.latency_min)
      for _ = 1, 2 do
        auto:get(a.url .. "/videos/" .. ID)
        auto:get(b.url .. "/videos/" .. ID)
      end
      seen = auto:limits()
      slow, quick = seen[a.url], seen[b.url]
      assert.is_true(slow.latency_min >= 0.1 and slow.latency_min < 0.5, slow.latency_min)
      assert.is_true(quick.latency_min < 0.1, quick.latency_min)
    end)
  end)

  it("shows the total under \"total\" when limit is given, set at run time or adaptive", function()
    local server = support.start_scoped { time_scale = 0.5 }
    avideo.run(function()
      local s <close> = avideo.session { limit = 2 }
      assert.are.same({ total = { limit = 2, in_flight = 0, queued = 0 } }, s:limits())
      local tasks = {}
      for i = 1, 5 do tasks[i] = avideo.spawn(s.get, s, server.url .. "/videos/" .. ID) end
      wait_until(function() return s:stats().queued == 3 end, "the queue")
      local seen = s:limits()
      assert.are.same({ limit = 2, in_flight = 2, queued = 3 }, seen.total)
      assert.are.same({ limit = 0, in_flight = 2, queued = 3 }, seen[server.url]) -- no limit per host
      s:set_limit(4)
      assert.are.same({ limit = 4, in_flight = 4, queued = 1 }, s:limits().total)
      for _, t in ipairs(tasks) do t:wait() end
      -- the default (limit not given) shows hosts only, as before
      local plain <close> = avideo.session()
      assert.are.same({}, plain:limits())
      plain:set_limit(0)
      assert.are.same({ total = { limit = 0, in_flight = 0, queued = 0 } }, plain:limits())
      local auto <close> = avideo.session { limit = "auto" }
      auto:get(server.url .. "/videos/" .. ID)
      local total = auto:limits().total
      assert.is_true(total.limit >= 4, total.limit) -- "auto" starts at 4
      assert.are.same({ 0, 0 }, { total.in_flight, total.queued })
    end)
  end)

  it("refuses a limit that is not a whole number >= 0, naming it", function()
    avideo.run(function()
      local s <close> = avideo.session()
      for _, bad in ipairs { -1, 1.5, "auto", "3", {}, 0 / 0, math.huge } do
        raises("invalid", "limit must be a whole number >= 0", s.set_limit, s, bad)
        raises("invalid", "limit_per_host must be a whole number >= 0", s.set_limit_per_host, s, bad)
      end
      raises("invalid", "limit must be", s.set_limit, s)
      assert.are.equal(100, s.limit)
      assert.are.equal(0, s.limit_per_host)
      raises("invalid", "called as a method", s.set_limit, 3)
    end)
  end)
end)
