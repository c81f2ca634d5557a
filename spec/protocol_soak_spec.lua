-- Fault-injection soak over kept-alive connections: the test peer answers
-- each request with its id and, at random, then sends bytes nobody asked
-- for, closes the idle connection, resets mid-body, cuts the body short or
-- answers late. (Bytes that come later, while the connection is idle, are
-- protocol_spec's: here connections are rarely idle, and bytes that arrive
-- while the next request is under way are its answer to any client.) No
-- answer may reach the wrong request, every failure is a
-- typed error, and nothing of avideo's is left behind. AVIDEO_SOAK_N sets
-- the requests (default 10,000; fewer under valgrind).
local avideo = require "avideo"
local peer_support = require "support.peer"
local settled = require "support.settled"

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

-- The live heap in an ASan build (exact), else RSS: KiB.
local allocated_bytes = require("avideo.core").allocated_bytes
local function memory_kib()
  if allocated_bytes then return math.floor(allocated_bytes() / 1024) end
  for line in io.lines("/proc/self/status") do
    local kib = line:match("^VmRSS:%s+(%d+)")
    if kib then return tonumber(kib) end
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
    local memory = {}
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
      collectgarbage("collect")
      collectgarbage("collect")
      memory[round] = memory_kib()
    end
    assert.are.equal(per_round * ROUNDS, totals.ok + totals.protocol)
    print(("  %d of %d requests without a fault of their own failed with the connection they were on"):format(
      lost, totals.ok))
    assert.is_true(lost < totals.ok / 50, lost .. " requests failed that had no fault of their own")
    -- the first rounds fill the pools and the allocator; after that a leak
    -- of a few hundred bytes a request would show. Under valgrind RSS is
    -- mostly valgrind's own: there its leak check at exit, which fails the
    -- test on any block lost, is the check.
    if not SLOW then
      local growth = memory[ROUNDS] - memory[2]
      assert.is_true(growth < per_round / 8, ("memory grew by %d KiB over %d requests"):format(growth, 2 * per_round))
    end
  end)
end)
