-- limit_per_host = "auto" (and limit = "auto"): the limit found from
-- latency and failures, against avideo-server at capacities nobody told
-- the client. Time scale 0.1; times are compared with a fixed limit at the
-- server's capacity measured in the same run (ratios survive a busy box).
local avideo = require "avideo"
local support = require "support.server"
local client = require "support.server_client"
local settled = require "support.settled"
local raises = require "support.raises"

local slow = os.getenv("AVIDEO_SLOW") == "1" and 1.5 or 1
-- Under valgrind the client itself is the bottleneck (~400 requests a
-- second): its own CPU adds latency with every request in flight, which
-- "auto" rightly reads as a queue and finds a lower limit (6 measured).
local least10, least40 = 7, 20
if slow > 1 then least10, least40 = 3, 3 end
local SCALE = 0.1

-- Gather the first n videos on a new session with opts; returns the wall
-- time, the session's limits() after (with `median`: the host's limit's
-- median over the run's second half, sampled every 5 ms: what it found,
-- whatever a last hiccup of a busy machine did to it; and `highest`), and
-- the responses' retries.
local function run(server, ids, n, opts, after)
  local s <close> = avideo.session(opts)
  local fns, retries, done = {}, 0, 0
  for i = 1, n do
    fns[i] = function()
      local r = s:get(server.url .. "/videos/" .. ids[i])
      assert.are.equal(200, r.status)
      retries = retries + (r.retries or 0)
      done = done + 1
    end
  end
  if after then avideo.spawn(after) end
  local samples, highest = {}, 0
  local sampler = avideo.spawn(function()
    while true do
      local row = s:limits()[server.url]
      if row and done >= n / 2 then samples[#samples + 1] = row.limit end
      if row and row.limit > highest then highest = row.limit end
      avideo.sleep(0.005)
    end
  end)
  local t0 = avideo.now()
  avideo.gather(fns)
  local took = avideo.now() - t0
  sampler:cancel()
  local seen = s:limits()[server.url]
  if seen then
    table.sort(samples)
    seen.median = samples[math.floor((#samples + 1) / 2)] or seen.limit
    seen.highest = math.max(highest, seen.limit)
  end
  return took, seen, retries
end

local function start(capacity, extra)
  local args = { "--video-capacity", tostring(capacity) }
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  local server = support.start_scoped { time_scale = SCALE, args = args }
  return server, client.get_json(server.url .. "/videos/?n=1000")
end

describe("adaptive limits", function()
  after_each(function()
    support.stop_scoped()
    settled()
  end)

  it("finds capacity 10 (the talk's): near the fixed limit's time, the server never overloaded", function()
    local server, ids = start(10)
    avideo.run(function()
      local fixed100 = run(server, ids, 100, { limit_per_host = 10 })
      local fixed1000 = run(server, ids, 1000, { limit_per_host = 10 })
      local auto100 = run(server, ids, 100, { limit_per_host = "auto" })
      -- the server's most in flight after the first (scaled) second
      local reset = function()
        avideo.sleep(1 * SCALE)
        client.get(server.url .. "/stats?reset=1")
      end
      local auto1000, seen = run(server, ids, 1000, { limit_per_host = "auto" }, reset)
      local most = client.get_json(server.url .. "/stats").max_in_flight
      print(("\ncapacity 10: 100 videos %.3f s (fixed 10: %.3f), 1000 videos %.3f s (fixed 10: %.3f), "
        .. "most in flight after 1 s %d, limit found %d (median of the second half), %d at the end"):format(auto100,
        fixed100, auto1000, fixed1000, most, seen.median, seen.limit))
      -- measured 1.1-1.35x on 100 and 1.03-1.2x on 1000 at this scale on
      -- a busy box, where a millisecond of jitter is 5% of a round trip;
      -- bench/adaptive.lua measures the issue's targets at the talk's own
      -- scale (1.20x and 1.04x there). These bounds check the shape.
      assert.is_true(auto100 <= 1.6 * fixed100 * slow, auto100 / fixed100)
      assert.is_true(auto1000 <= 1.6 * fixed1000 * slow, auto1000 / fixed1000) -- 1.5 once, in parallel under ASan
      assert.is_true(most <= 20, most)
      assert.is_true(seen.median >= least10 and seen.median <= 14, seen.median)
      assert.is_true(seen.latency_min >= 0.2 * SCALE and seen.latency_min < 0.3 * SCALE, seen.latency_min)
    end)
  end)

  it("is not misled by a cheaper request first: the list, then its items, on one session", function()
    local server, ids = start(10)
    avideo.run(function()
      local fixed = run(server, ids, 300, { limit_per_host = 10 })
      local s <close> = avideo.session { limit_per_host = "auto" }
      -- the list answers in a third of an item's time: taken as the best
      -- latency, it made every item look queued, and the limit fell to 1
      assert.are.equal(200, s:get(server.url .. "/videos/?n=300").status)
      local fns = {}
      for i = 1, 300 do
        fns[i] = function() assert.are.equal(200, s:get(server.url .. "/videos/" .. ids[i]).status) end
      end
      local t0 = avideo.now()
      avideo.gather(fns)
      local took = avideo.now() - t0
      local seen = s:limits()[server.url]
      print(("\nthe list first: 300 videos %.3f s (fixed 10: %.3f), limit %d at the end"):format(took, fixed,
        seen.limit))
      assert.is_true(took <= 1.6 * fixed * slow, took / fixed) -- was 9x
      assert.is_true(seen.limit >= least10, seen.limit)
      assert.is_true(seen.latency_min >= 0.2 * SCALE, seen.latency_min) -- an item's, not the list's
    end)
  end)

  it("finds capacity 40 with the same code: not just 10", function()
    local server, ids = start(40)
    avideo.run(function()
      local fixed = run(server, ids, 1000, { limit_per_host = 40 })
      local auto, seen = run(server, ids, 1000, { limit_per_host = "auto" })
      print(("\ncapacity 40: 1000 videos %.3f s (fixed 40: %.3f), limit found %d (median of the second half), %d at the end")
        :format(auto, fixed, seen.median, seen.limit))
      -- measured 1.1-1.3x here (1.24-1.27x at the talk's scale: the ramp
      -- from 4 to 40 is most of it)
      assert.is_true(auto <= 1.6 * fixed * slow, auto / fixed)
      assert.is_true(seen.median >= least40 and seen.median <= 50, seen.median)
    end)
  end)

  it("adapts the total with limit = \"auto\", and aimd grows while nothing fails", function()
    local server, ids = start(10)
    avideo.run(function()
      client.get(server.url .. "/stats?reset=1")
      local _, seen = run(server, ids, 300, { limit = "auto", limit_per_host = 0 })
      assert.is_nil(seen) -- the host's own limit is fixed (none): an idle host is forgotten
      local most = client.get_json(server.url .. "/stats").max_in_flight
      assert.is_true(most > 4 and most <= 25, most) -- the total grew from 4, and stopped
      local _, aimd = run(server, ids, 300, { limit_per_host = { algorithm = "aimd", initial = 2, max = 30 } })
      -- loss-based: latency alone never cuts it, so it climbs to max
      assert.is_true(aimd.limit > 20 and aimd.limit <= 30, aimd.limit)
      local _, capped = run(server, ids, 200, { limit_per_host = { initial = 2, min = 2, max = 3 } })
      -- it reaches max and goes no further (a cut may leave it at min)
      assert.are.equal(3, capped.highest)
      assert.is_true(capped.limit >= 2 and capped.limit <= 3, capped.limit)
    end)
  end)

  it("meets --rate-limit 20/1 alone: cuts and pauses on 429 + Retry-After, and with retry every request succeeds", function()
    local server, ids = start(10, { "--rate-limit", "20/1" })
    avideo.run(function()
      local took, seen, retries = run(server, ids, 100, {
        limit_per_host = "auto", retry = { attempts = 10, statuses = { 429 } },
      })
      print(("\nrate limit 20/1, auto + retry: 100 videos in %.2f s, %d retries, limit %d"):format(took, retries,
        seen.limit))
      assert.is_true(took >= 4 and took < 12 * slow, took) -- 20 a second at best
      assert.is_true(retries > 0)
      -- each 429 pauses the host for its Retry-After (1 s): few come back
      assert.is_true(retries < 60, retries)
    end)
    local st = client.get_json(server.url .. "/stats")
    assert.is_true(st.requests < 100 + 60 + 2, st.requests)
  end)

  it("refuses bad limits with invalid naming the field", function()
    local cases = {
      { { limit_per_host = "automatic" }, 'limit_per_host must be a whole number >= 0 (0 = no limit), "auto" or a table' },
      { { limit = "automatic" }, 'limit must be a whole number >= 0 (0 = no limit), "auto"' },
      { { limit_per_host = { min = 0 } }, "limit_per_host min must be a whole number from 1 to 1000000, got 0" },
      { { limit_per_host = { min = 5, max = 2 } }, "limit_per_host max must be a whole number from min (5) to 1000000, got 2" },
      { { limit_per_host = { initial = 300 } }, "limit_per_host initial must be a whole number from min to max (1 to 200), got 300" },
      { { limit_per_host = { initial = 0.5 } }, "limit_per_host initial must be" },
      { { limit_per_host = { algorithm = "vegas" } }, 'limit_per_host algorithm must be "gradient" or "aimd", got "vegas"' },
      { { limit_per_host = { maximum = 3 } }, "unknown limit_per_host field 'maximum' (initial, min, max, algorithm)" },
      { { limit = { 4 } }, "unknown limit field '1'" },
      { { limit_per_host = -1 }, "limit_per_host must be" },
      { { limit_per_host = true }, "limit_per_host must be" },
    }
    for _, case in ipairs(cases) do
      local e = raises("invalid", nil, avideo.session, case[1])
      assert.is_truthy(tostring(e):find(case[2], 1, true), tostring(e))
      assert.is_nil(tostring(e):find("\n"))
    end
    -- and what is good reads back as "auto"
    local s <close> = avideo.session { limit = { max = 50 }, limit_per_host = "auto" }
    assert.are.same({ "auto", "auto" }, { s.limit, s.limit_per_host })
    assert.matches("limit auto, limit_per_host auto", tostring(s), 1, true)
  end)
end)
