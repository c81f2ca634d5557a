-- `rate = {n, per = s}` and `rate_per_host`: token buckets on request
-- starts (one every s/n seconds, up to n at once after a quiet spell; a
-- new bucket holds one), against the real avideo-server, its --rate-limit
-- among them.
local avideo = require "avideo"
local support = require "support.server"
local client = require "support.server_client"
local settled = require "support.settled"
local video_id = require "support.video_id"
local raises = require "support.raises"

local slow = os.getenv("AVIDEO_SLOW") == "1" and 2 or 1

-- Gather n GETs of url on session s; returns the statuses and the wall time.
local function fetch(s, url, n)
  local fns = {}
  for i = 1, n do fns[i] = function() return s:get(url).status end end
  local t0 = avideo.now()
  local statuses = avideo.gather(fns)
  return statuses, avideo.now() - t0
end

local function count(list, v)
  local n = 0
  for _, x in ipairs(list) do if x == v then n = n + 1 end end
  return n
end

describe("rate limits", function()
  local ID
  setup(function() ID = video_id() end)
  after_each(function()
    support.stop_scoped()
    settled()
  end)

  it("meets the server's --rate-limit 20/1 with rate = {20, per = 1}: 100 requests, no 429", function()
    local server = support.start_scoped { time_scale = 0.1, args = { "--rate-limit", "20/1" } }
    avideo.run(function()
      local s <close> = avideo.session { rate = { 20, per = 1 } }
      local statuses, took = fetch(s, server.url .. "/videos/" .. ID, 100)
      assert.are.equal(100, count(statuses, 200))
      -- one at once, then one every 50 ms: the 100th starts at 4.95 s, ends
      -- ~20 ms later (the issue's 5 s +- 10%)
      assert.is_true(took >= 4.9 and took <= 5.5 * slow, took)
    end)
  end)

  it("starts one at once, then one every per/n seconds; n at once after a quiet spell", function()
    local server = support.start_scoped { time_scale = 0 }
    avideo.run(function()
      local s <close> = avideo.session { rate = { 5, per = 0.2 } }
      local statuses, took = fetch(s, server.url .. "/videos/" .. ID, 15)
      assert.are.equal(15, count(statuses, 200))
      assert.is_true(took >= 0.55 and took < 0.75 * slow, took) -- 14 more at 40 ms each
      -- a quiet spell refills the bucket, never beyond n
      avideo.sleep(0.3)
      _, took = fetch(s, server.url .. "/videos/" .. ID, 5)
      assert.is_true(took < 0.05 * slow, took)
      _, took = fetch(s, server.url .. "/videos/" .. ID, 1)
      assert.is_true(took >= 0.02, took)
    end)
  end)

  it("keeps a bucket per host with rate_per_host, one in total with rate", function()
    local a = support.start_scoped { time_scale = 0 }
    local b = support.start_scoped { time_scale = 0 }
    avideo.run(function()
      local per_host <close> = avideo.session { rate_per_host = { 2, per = 0.1 } }
      local t0 = avideo.now()
      local ta = avideo.spawn(fetch, per_host, a.url .. "/videos/" .. ID, 6)
      local tb = avideo.spawn(fetch, per_host, b.url .. "/videos/" .. ID, 6)
      ta:wait()
      tb:wait()
      local took = avideo.now() - t0
      assert.is_true(took >= 0.25 and took < 0.35 * slow, took) -- each host: 1, then 5 at 50 ms
      local total <close> = avideo.session { rate = { 2, per = 0.1 } }
      t0 = avideo.now()
      ta = avideo.spawn(fetch, total, a.url .. "/videos/" .. ID, 6)
      tb = avideo.spawn(fetch, total, b.url .. "/videos/" .. ID, 6)
      ta:wait()
      tb:wait()
      took = avideo.now() - t0
      assert.is_true(took >= 0.55 and took < 0.7 * slow, took) -- 1, then 11 at 50 ms
    end)
  end)

  it("keeps an idle host's bucket: n start at once after its last request, however long that took", function()
    local server = support.start_scoped { time_scale = 6 } -- 1.2 s a video
    local url = server.url .. "/videos/" .. ID
    avideo.run(function()
      local s <close> = avideo.session { rate_per_host = { 5, per = 1 } }
      assert.are.equal(200, s:get(url).status) -- the bucket is full again before it ends
      assert.are.equal(1, s:stats().hosts)
      local statuses, took = fetch(s, url, 5)
      assert.are.equal(5, count(statuses, 200))
      -- five at once: 1.2 s; a forgotten bucket (one token) would pace them to 2.0 s
      assert.is_true(took < 1.6 * slow, took)
    end)
  end)

  it("combines with the concurrency limits", function()
    local server = support.start_scoped { time_scale = 0.5 } -- 0.1 s a video
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 2, rate = { 100, per = 1 } }
      local statuses, took = fetch(s, server.url .. "/videos/" .. ID, 6)
      assert.are.equal(6, count(statuses, 200))
      assert.is_true(took >= 0.3 and took < 0.45 * slow, took) -- three rounds of two
    end)
    assert.are.equal(2, client.get_json(server.url .. "/stats").max_in_flight - 0)
  end)

  it("counts the wait as pool time: the pool timeout applies", function()
    local server = support.start_scoped { time_scale = 0 }
    avideo.run(function()
      local s <close> = avideo.session { rate = { 1, per = 10 }, timeout = { pool = 0.2 } }
      assert.are.equal(200, s:get(server.url .. "/videos/" .. ID).status)
      local t0 = avideo.now()
      local e = raises("timeout", "pool timeout", s.get, s, server.url .. "/videos/" .. ID)
      assert.are.equal("pool", e.phase)
      local took = avideo.now() - t0
      assert.is_true(took >= 0.19 and took < 0.4 * slow, took)
      -- a cancelled waiter leaves the queue and the clock moves to the next
      local t = avideo.spawn(s.get, s, server.url .. "/videos/" .. ID)
      avideo.sleep(0.01)
      assert.are.equal(1, s:stats().queued)
      t:cancel()
      avideo.sleep(0.01)
      assert.are.equal(0, s:stats().queued)
    end)
  end)

  it("refuses a bad rate with invalid naming the field", function()
    local cases = {
      { { rate = { 0 } }, "rate n ([1]) must be a whole number >= 1, got 0" },
      { { rate = { 1, per = -1 } }, "rate per must be a number of seconds > 0, got -1" },
      { { rate = { 1, per = 0 } }, "rate per must be" },
      { { rate = { 1, per = "1" } }, "rate per must be" },
      { { rate = { 1.5 } }, "rate n ([1]) must be" },
      { { rate = {} }, "rate n ([1]) must be" },
      { { rate = { 1, every = 2 } }, "unknown rate field 'every'" },
      { { rate = { 1, 2 } }, "unknown rate field '2'" },
      { { rate = 5 }, "rate must be a table { n, per = seconds }, got 5" },
      { { rate_per_host = { -3 } }, "rate_per_host n ([1]) must be" },
      { { rate_per_host = { 2, per = 0 / 0 } }, "rate_per_host per must be" },
    }
    for _, case in ipairs(cases) do
      local e = raises("invalid", nil, avideo.session, case[1])
      assert.is_truthy(tostring(e):find(case[2], 1, true), tostring(e))
    end
  end)
end)
