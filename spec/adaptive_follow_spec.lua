-- limit_per_host = "auto" follows a capacity that changes mid-run (issue
-- 18): a steady stream of video requests while avideo-server's capacity
-- goes 10 -> 40 -> 10 (POST /capacity), the session's limits() sampled
-- over time. Time scale 0.1 as adaptive_spec; "a few seconds" are scaled.
local avideo = require "avideo"
local support = require "support.server"
local client = require "support.server_client"
local settled = require "support.settled"

-- Under valgrind (AVIDEO_SLOW) the client itself cannot drive 40 in
-- flight at 20 ms each (it makes ~400 requests a second): the rise is
-- printed, not asserted; the rest holds.
local slow = os.getenv("AVIDEO_SLOW") == "1"
-- Under ASan it can, barely: its own CPU then adds latency at 40 in
-- flight, which "auto" rightly reads as a queue (measured median 21-39).
local sanitized = os.getenv("ASAN_OPTIONS") ~= nil
local SCALE = 0.1
local WORKERS = 120 -- always more waiting than any limit it may find
local PHASE = 25 * SCALE -- seconds at each capacity (scaled: 25 s)
local SETTLE = 1 * SCALE -- after the limit is back near 10, before the server's side is looked at

-- When (seconds after `from`) the limit first met ok, or nil.
local function first_time(samples, from, ok)
  for _, p in ipairs(samples) do
    if p.t >= from and ok(p.limit) then return p.t - from end
  end
end

-- The median limit sampled in [from, to).
local function median(samples, from, to)
  local list = {}
  for _, p in ipairs(samples) do
    if p.t >= from and p.t < to then list[#list + 1] = p.limit end
  end
  table.sort(list)
  return list[math.max(1, math.floor((#list + 1) / 2))] or 0
end

-- The limit once every scaled second, "t:limit".
local function series(samples)
  local out, next_t = {}, 0
  for _, p in ipairs(samples) do
    if p.t >= next_t then
      out[#out + 1] = ("%.0f:%d"):format(p.t / SCALE, p.limit)
      next_t = next_t + SCALE
    end
  end
  return table.concat(out, " ")
end

describe("adaptive limits, capacity changed mid-run", function()
  after_each(function()
    support.stop_scoped()
    settled()
  end)

  it("follows 10 -> 40 -> 10 within a few (scaled) seconds, the server bounded after the fall", function()
    local server = support.start_scoped { time_scale = SCALE, args = { "--video-capacity", "10" } }
    local ids = client.get_json(server.url .. "/videos/?n=1000")
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = "auto" }
      local ctl <close> = avideo.session() -- its own limiter: never queued behind the stream
      local key = server.url
      local stop, done, failed = false, 0, 0
      local workers = {}
      for w = 1, WORKERS do
        workers[w] = avideo.spawn(function()
          local i = w
          while not stop do
            local r = s:get(server.url .. "/videos/" .. ids[i % #ids + 1])
            if r.status == 200 then done = done + 1 else failed = failed + 1 end
            i = i + WORKERS
          end
        end)
      end
      local t0 = avideo.now()
      local samples = {}
      -- sample every 20 ms until t_end, or until enough(limit)
      local function sample_until(t_end, enough)
        while avideo.now() - t0 < t_end and not (enough and #samples > 0 and enough(samples[#samples].limit)) do
          local row = s:limits()[key]
          samples[#samples + 1] = { t = avideo.now() - t0, limit = row and row.limit or 0 }
          avideo.sleep(0.02)
        end
      end
      local function capacity(n)
        local r = ctl:post(server.url .. "/capacity?video=" .. n)
        assert.are.equal(200, r.status)
      end
      sample_until(PHASE)
      capacity(40)
      local rise = avideo.now() - t0
      sample_until(2 * PHASE)
      capacity(10)
      local fall = avideo.now() - t0
      -- the server's side a second after the limit came back near 10
      -- (what was sent under the higher limit has drained by then), or 8 s
      -- after the fall at most
      sample_until(fall + 8 * SCALE * (slow and 2 or 1), function(l) return l <= 12 end)
      local settled_at = avideo.now() - t0 + SETTLE
      sample_until(settled_at)
      ctl:get(server.url .. "/stats?reset=1")
      sample_until(3 * PHASE)
      local most = ctl:get(server.url .. "/stats"):json().max_in_flight
      stop = true
      avideo.gather(workers)

      local reached_40 = first_time(samples, rise, function(l) return l >= 30 end)
      local back_10 = first_time(samples, fall, function(l) return l <= 20 end)
      local high = median(samples, rise + PHASE / 2, fall)
      local low = median(samples, fall + PHASE / 2, 3 * PHASE)
      local before = median(samples, PHASE / 2, rise)
      print(("\ncapacity 10 -> 40 -> 10, %d videos (%d not 200): limit (median of each phase's second half) "
        .. "%d -> %d -> %d; >= 30 %.1f s after the rise, <= 20 %.1f s after the fall (scaled); "
        .. "server's most in flight from %.1f s after the fall: %d")
        :format(done, failed, before, high, low, (reached_40 or 1 / 0) / SCALE, (back_10 or 1 / 0) / SCALE,
          (settled_at - fall) / SCALE, most))
      print("limit over (scaled) time: " .. series(samples))
      assert.are.equal(0, failed)
      -- (under valgrind the client's own CPU reads as a queue: 6 measured)
      assert.is_true(before >= (slow and 3 or 7) and before <= 16, before)
      -- up: near 40, reached within a few seconds (measured 1.2-1.6 s)
      if not slow then
        assert.is_truthy(reached_40, "never reached 30 after the rise")
        assert.is_true(reached_40 <= 12 * SCALE, reached_40 / SCALE)
        assert.is_true(high >= (sanitized and 18 or 28) and high <= 55, high)
      end
      -- down: under 20 (measured 1.4-1.8 s), near 10 within 4-8 s, and
      -- then the server not overloaded (13-19 in flight at most)
      assert.is_truthy(back_10, "never back to 20 after the fall")
      assert.is_true(back_10 <= 8 * SCALE * (slow and 2 or 1), back_10 / SCALE)
      assert.is_true(low <= 16, low)
      assert.is_true(most <= 2 * 10 + 1, most) -- +1: the /stats request itself
    end)
  end)
end)
