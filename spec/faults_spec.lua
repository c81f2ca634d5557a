-- Faults on the wire: a server killed mid-run, kept-alive connections the
-- server closed, redirect loops, faults inside gathers. Each gives the
-- right error kind, and afterwards no slot, op, transfer or task is left.
local avideo = require "avideo"
local peer_support = require "support.peer"
local server_support = require "support.server"

local settled = require "support.settled"

describe("faults", function()
  local peer
  lazy_setup(function() peer = peer_support.start() end)
  lazy_teardown(function() peer.stop() end)
  after_each(function()
    server_support.stop_scoped()
    settled()
  end)

  it("a server killed with 100 requests in flight: every request fails, the run ends", function()
    local server = server_support.start_scoped { time_scale = 1 }
    local ids = avideo.get(server.url .. "/videos?n=100"):json()
    local t0 = avideo.now()
    local results, session_stats = avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 100 }
      local fs = {}
      for i, id in ipairs(ids) do
        fs[i] = function() return s:get(server.url .. "/videos/" .. id):raise_for_status():json() end
      end
      avideo.spawn(function()
        avideo.sleep(0.1)
        server.kill("KILL")
      end)
      local r = avideo.gather(fs, { return_exceptions = true })
      return r, s:stats()
    end)
    assert.are.equal(100, #results)
    local kinds = {}
    for _, r in ipairs(results) do
      assert.is_true(avideo.is_error(r), "a request survived the server's death")
      kinds[r.kind] = (kinds[r.kind] or 0) + 1
    end
    assert.are.equal(100, (kinds.protocol or 0) + (kinds.connect or 0))
    assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, session_stats)
    assert.is_true(avideo.now() - t0 < 5)
  end)

  it("the first failure of a gather cancels the rest and frees their slots", function()
    local server = server_support.start_scoped { time_scale = 1 }
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 3 }
      local fs = {}
      for i = 1, 20 do fs[i] = function() return s:get(server.url .. "/videos/nonexistent" .. i):raise_for_status() end end
      local ok, e = pcall(avideo.gather, fs)
      assert.is_false(ok)
      assert.are.equal("http", e.kind)
      assert.are.equal(404, e.status)
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
    end)
  end)

  it("reuses nothing dead: a kept-alive connection the server closed is replaced", function()
    local server = server_support.start_scoped { time_scale = 0, keepalive_timeout = 1 }
    avideo.run(function()
      local s <close> = avideo.session {}
      assert.are.equal(200, s:get(server.url .. "/videos/?n=1").status)
      avideo.sleep(1.5) -- the server closes the idle connection meanwhile
      assert.are.equal(200, s:get(server.url .. "/videos/?n=1").status)
    end)
  end)

  it("stops a redirect loop after 10 redirects", function()
    local ok, e = pcall(avideo.get, peer.url .. "/redirect-loop")
    assert.is_false(ok)
    assert.are.equal("protocol", e.kind)
    assert.matches("redirect", e.message:lower())
  end)

  it("reports a body that does not decode as its Content-Encoding says", function()
    local ok, e = pcall(avideo.get, peer.url .. "/bad-gzip")
    assert.is_false(ok)
    assert.are.equal("protocol", e.kind)
    assert.matches("content unencoding", e.message:lower()) -- libcurl's words
  end)

  it("keeps working after every kind of fault, with nothing left behind", function()
    avideo.run(function()
      local s <close> = avideo.session { limit = 4, timeout = { sock_read = 0.2, total = 1 } }
      local paths = { "/reset-before", "/reset-mid", "/short", "/bad-status", "/stall", "/drip",
                      "/status/500", "/status/200", "/not-json", "/bad-gzip" }
      local fs = {}
      for i = 1, 40 do
        local path = paths[(i - 1) % #paths + 1]
        fs[i] = function() return s:get(peer.url .. path):raise_for_status():json() end
      end
      local r = avideo.gather(fs, { return_exceptions = true })
      local errs = 0
      for i = 1, 40 do if avideo.is_error(r[i]) then errs = errs + 1 end end
      assert.are.equal(36, errs) -- all but the four /status/200
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
      assert.are.same({ status = 200 }, s:get(peer.url .. "/status/200"):json())
    end)
  end)
end)
