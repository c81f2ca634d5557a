-- The limiter's edges a review found (issue 18): what a host learnt or
-- was told survives many other hosts, a Retry-After pauses a host under
-- an adaptive total too, one instant 404 does not become every answer's
-- yardstick, a shared rate serves its waiters first come first served,
-- bounds that a double cannot hold are refused, and "0005" seconds is 5.
-- Against avideo-server and the test peer.
local avideo = require "avideo"
local support = require "support.server"
local peer_support = require "support.peer"
local settled = require "support.settled"
local raises = require "support.raises"

local server, peer
lazy_setup(function()
  server = support.start { time_scale = 0.1 }
  peer = peer_support.start()
end)
lazy_teardown(function()
  if server then server.stop() end
  if peer then peer.stop() end
end)
after_each(settled)

describe("the limiter", function()
  it("keys a URL with no authority (http:///host/) by its own host", function()
    -- libcurl takes up to three slashes: the host comes after the third,
    -- and a remembered origin "http://" made every such URL the first's
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 1 }
      local port = peer.url:match(":(%d+)$")
      local held = {}
      for i, host in ipairs { "127.0.0.1", "127.0.0.2" } do
        held[i] = avideo.spawn(s.get, s, ("http:///%s:%s/hold?ms=300"):format(host, port), { timeout = 10 })
      end
      avideo.sleep(0.1)
      local keys = {}
      for key, row in pairs(s:limits()) do
        if key ~= "total" then keys[#keys + 1] = ("%s %d %d"):format(key, row.in_flight, row.queued) end
      end
      table.sort(keys)
      assert.are.same({ "http://127.0.0.1:" .. port .. " 1 0", "http://127.0.0.2:" .. port .. " 1 0" }, keys)
      for _, t in ipairs(held) do assert.are.equal(200, t:wait().status) end
    end)
  end)

  it("keeps a host's rate_per_host after 300 other hosts went idle", function()
    avideo.run(function()
      local s <close> = avideo.session { rate_per_host = { 1, per = 0.5 }, limit = 0 }
      local fns = {}
      for i = 1, 300 do -- refused at once: port 1 of 300 loopback addresses
        local host = ("127.0.%d.%d"):format(1 + i // 250, 1 + i % 250)
        fns[i] = function() pcall(s.get, s, "http://" .. host .. ":1/", { timeout = 2 }) end
      end
      avideo.gather(fns)
      local t0, at = avideo.now(), {}
      for i = 1, 3 do
        assert.equal(200, s:get(server.url .. "/videos/?n=1").status)
        at[i] = avideo.now() - t0
      end
      assert.is_true(at[2] >= 0.45 and at[3] >= 0.95, ("starts at %.3f, %.3f, %.3f s"):format(at[1], at[2], at[3]))
    end)
  end)

  it("pauses a host that sent Retry-After under limit = \"auto\" alone", function()
    avideo.run(function()
      local s <close> = avideo.session { limit = "auto" }
      local t0 = avideo.now()
      -- a 503 that asks for a second, then an answer: the second request waits
      local key = "pause-" .. tostring(os.time()) .. math.random(1e6)
      local r = s:get(peer.url .. "/flaky/" .. key .. "?fail=1&status=503&retry_after=0001")
      assert.equal(503, r.status)
      assert.equal(200, s:get(peer.url .. "/flaky/" .. key .. "?fail=1&status=503").status)
      local waited = avideo.now() - t0
      -- "0001" is one second (leading zeros are legal), not the hour's cap
      assert.is_true(waited >= 0.9 and waited < 5, ("waited %.2f s"):format(waited))
    end)
  end)

  it("takes latencies only from successes: one instant 404 does not pin the limit", function()
    local ids = avideo.get(server.url .. "/videos/?n=200", { timeout = 10 }):json()
    local function run(with_404)
      return avideo.run(function()
        local s <close> = avideo.session { limit_per_host = "auto" }
        if with_404 then assert.equal(404, s:get(server.url .. "/nope").status) end
        local fns = {}
        for i, id in ipairs(ids) do fns[i] = function() return s:get(server.url .. "/videos/" .. id).status end end
        local t0 = avideo.now()
        avideo.gather(fns)
        return avideo.now() - t0, s:limits()[server.url].limit
      end)
    end
    local plain = run(false)
    local after_404, limit = run(true)
    assert.is_true(after_404 < 2 * plain, ("%.2f s after a 404 against %.2f s"):format(after_404, plain))
    assert.is_true(limit > 2, "the limit after: " .. tostring(limit))
  end)

  it("serves a shared rate's waiters in order, whatever host comes next", function()
    local port = server.url:match(":(%d+)$")
    local A, B = "http://127.0.0.1:" .. port .. "/videos/?n=1", "http://localhost:" .. port .. "/videos/?n=1"
    local done = {}
    avideo.run(function()
      local s <close> = avideo.session { rate = { 1, per = 0.2 } }
      local t0 = avideo.now()
      avideo.gather {
        function() s:get(A) end,
        function() avideo.sleep(0.01); s:get(A); done.A2 = avideo.now() - t0 end,
        function()
          avideo.sleep(0.1)
          while avideo.now() - t0 < 0.25 do end -- busy: the loop's timer cannot fire meanwhile
          s:get(B)
          done.B = avideo.now() - t0
        end,
      }
    end)
    assert.is_true(done.A2 < done.B, ("A2 at %.3f, B at %.3f"):format(done.A2, done.B))
  end)

  it("refuses adaptive bounds a double cannot hold", function()
    raises("invalid", "limit_per_host min must be a whole number from 1 to 1000000",
      avideo.session, { limit_per_host = { min = math.maxinteger } })
    raises("invalid", "limit max must be a whole number from min %(1%) to 1000000",
      avideo.session, { limit = { max = math.maxinteger } })
  end)
end)
