-- Fault-injection soak over kept-alive connections: the test peer answers
-- each request with its id and, at random, then sends bytes nobody asked
-- for, closes the idle connection, resets mid-body, cuts the body short or
-- answers late; a second case sends requests in turn with gaps, so the
-- stray bytes reach idle connections. No answer may reach the wrong
-- request, every failure is a typed error, nothing of avideo's is left
-- behind, and memory stays flat (measured in a process of its own,
-- spec/support/protocol_soak.lua). AVIDEO_SOAK_N sets the requests
-- (default 10,000; fewer under valgrind).
local avideo = require "avideo"
local peer_support = require "support.peer"
local settled = require "support.settled"
local soak_rounds = require "support.soak_rounds"

local SLOW = os.getenv("AVIDEO_SLOW") == "1"
local N = tonumber(os.getenv("AVIDEO_SOAK_N")) or (SLOW and 2000 or 10000)
local ROUNDS = 4

-- fault -> the outcome it must have: an answer with the request's own id,
-- or an error of this kind
local FAULTS = {
  { "none", 60, "ok" },
  { "excess", 12, "ok" }, -- unsolicited bytes right behind the answer
  { "close", 12, "ok" },  -- the idle connection closed a few milliseconds later
  { "slow", 6, "ok" },
  { "reset", 5, "protocol" },
  { "short", 5, "protocol" },
}

local function pick(rand)
  local r = rand(100)
  for _, f in ipairs(FAULTS) do
    if r <= f[2] then return f[1], f[3] end
    r = r - f[2]
  end
end

describe("protocol soak", function()
  local peer
  lazy_setup(function() peer = peer_support.start() end)
  lazy_teardown(function() peer.stop() end)

  it("never takes bytes that came while a connection idled for an answer", function()
    -- one request at a time with gaps, so the peer's stray bytes (or its
    -- close) reach an idle connection: without the idle watch every junk
    -- would be the next request's answer
    math.randomseed(7)
    local n = SLOW and 60 or 200
    local ids = avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 1, timeout = { total = 10 } }
      local got = {}
      for i = 1, n do
        local fault = ({ "none", "junk", "close" })[math.random(3)]
        got[i] = s:get(("%s/chaos?id=%d&fault=%s&ms=3"):format(peer.url, i, fault)):json().id
        avideo.sleep(0.012)
      end
      return got
    end)
    for i = 1, n do assert.are.equal(tostring(i), ids[i]) end
    settled()
  end)

  it(("delivers %d answers over faulty kept-alive connections to the right requests"):format(N), function()
    math.randomseed(20241203)
    local rand = math.random
    local per_round = math.floor(N / ROUNDS)
    local totals = { ok = 0, protocol = 0 }
    local lost = 0 -- requests with no fault of their own that failed
    for round = 1, ROUNDS do
      local plan = {}
      for i = 1, per_round do plan[i] = { pick(rand) } end
      local results = avideo.run(function()
        local s <close> = avideo.session { limit_per_host = 20, timeout = { total = 10 } }
        local fs = {}
        for i = 1, per_round do
          local fault = plan[i][1]
          local url = ("%s/chaos?id=%d-%d&fault=%s&ms=%d"):format(peer.url, round, i, fault, fault == "slow" and 20 or 3)
          fs[i] = function() return s:get(url):raise_for_status():json().id end
        end
        return avideo.gather(fs, { return_exceptions = true })
      end)
      for i = 1, per_round do
        local want, got = plan[i][2], results[i]
        local what = ("request %d-%d (%s)"):format(round, i, plan[i][1])
        if want == "ok" and not avideo.is_error(got) then
          assert.are.equal(("%d-%d"):format(round, i), got, what .. " got another request's answer")
        else
          -- a connection the peer closed while a request was under way on
          -- it fails that request too, once libcurl's retries ran out
          assert.is_true(avideo.is_error(got, "protocol"), what .. ": expected a protocol error, got " .. tostring(got))
          if want == "ok" then lost = lost + 1 end
        end
        totals[want] = totals[want] + 1
      end
      settled()
    end
    assert.are.equal(per_round * ROUNDS, totals.ok + totals.protocol)
    print(("  %d of %d requests without a fault of their own failed with the connection they were on"):format(
      lost, totals.ok))
    assert.is_true(lost < totals.ok / 50, lost .. " requests failed that had no fault of their own")
  end)

  it("keeps memory flat over rounds of faulty requests (its own process: RSS is avideo's)", function()
    local rounds, n = 6, SLOW and 500 or 2500
    local seen = soak_rounds("protocol_soak.lua", n, rounds, 300)
    -- rounds 1-2 fill the pools, the Lua heap and the allocator; after that
    -- a leak of a few hundred bytes a request would show. In an ASan build
    -- the live heap it counts stands for RSS (its quarantine moves RSS).
    local measure = seen[rounds].heap and "heap" or "rss"
    local growth = seen[rounds][measure] - seen[3][measure]
    assert.is_true(growth < n / 4, ("%s grew by %d KiB over %d requests"):format(measure, growth, n * (rounds - 3)))
    assert.is_true(seen[rounds].lua - seen[3].lua < 256, "the Lua heap grew")
  end)
end)
