-- Faults on the wire: a server killed mid-run, kept-alive connections the
-- server closed, redirect loops, faults inside gathers, and faults of the
-- machine (libuv or libcurl out of memory) injected with a shim. Each gives
-- the right error kind, and afterwards no slot, op, transfer or task is left.

-- The fault-injection shim (spec/support/faultshim.c) stands in for some of
-- libuv's and libcurl's functions only if it is linked before avideo.core
-- is loaded: so before anything requires avideo. When this file runs after
-- another in one busted process, the core is loaded already (Lua keeps C
-- libraries in the registry's _CLIBS; busted resets only package.loaded),
-- and the shim's specs are pending.
local shim
do
  local path = os.getenv("AVIDEO_FAULTSHIM")
  local core_loaded = false
  for lib in pairs(debug.getregistry()._CLIBS or {}) do
    if type(lib) == "string" and lib:find("avideo/core%.so$") then core_loaded = true end
  end
  if path and not core_loaded and package.loadlib(path, "*") then
    shim = assert(package.loadlib(path, "luaopen_faultshim"))()
  end
end
local it_shim = shim and it or pending

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
    if shim then
      for _, f in ipairs { "uv_poll_start", "uv_poll_init_socket", "curl_multi_add_handle" } do
        shim.arm(f, 0)
      end
    end
    settled()
  end)

  it("a server killed with 100 requests in flight: every request fails, the run ends", function()
    -- time scale 5: each answer takes 1 s, so the kill 0.1 s in comes first
    -- even when a loaded machine (valgrind, a parallel ctest) runs late
    local server = server_support.start_scoped { time_scale = 5 }
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

  it("a total timeout on a reused connection is the total timeout, with connect set too", function()
    avideo.run(function()
      local s <close> = avideo.session {}
      assert.are.equal(200, s:get(peer.url .. "/echo").status) -- a connection to reuse
      local ok, e = pcall(s.get, s, peer.url .. "/stall", { timeout = { total = 0.3, connect = 0.2 } })
      assert.is_false(ok)
      assert.are.equal("timeout", e.kind)
      assert.are.equal("total", e.phase)
    end)
  end)

  it_shim("a waiter whose start fails as a slot frees gets its error; the limiter stays whole", function()
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = 1 }
      local url = peer.url .. "/hold?ms=50"
      shim.arm("curl_multi_add_handle", 2) -- the second request's, started when the first ends
      local r = avideo.gather({ function() return s:get(url).status end, function() return s:get(url).status end },
        { return_exceptions = true })
      assert.are.equal(200, r[1])
      assert.is_true(avideo.is_error(r[2]))
      assert.are.equal("protocol", r[2].kind)
      assert.matches("cannot start transfer", r[2].message)
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
      assert.are.equal(200, s:get(url).status)
    end)
  end)

  it_shim("a start that fails gives back the rate token it took", function()
    avideo.run(function()
      for _, opts in ipairs { { rate = { 1, per = 10 } }, { rate_per_host = { 1, per = 10 } } } do
        -- a new bucket's one token, then one every 10 s
        local s <close> = avideo.session(opts)
        local url = peer.url .. "/echo"
        shim.arm("curl_multi_add_handle", 1)
        local ok, e = pcall(s.get, s, url)
        assert.is_false(ok)
        assert.matches("cannot start transfer", e.message)
        -- the token is back: the next request starts at once, not in 10 s
        local t0 = avideo.now()
        assert.are.equal(200, s:get(url).status)
        assert.is_true(avideo.now() - t0 < 2, next(opts) .. ": " .. avideo.now() - t0)
        assert.are.same({ in_flight = 0, queued = 0, hosts = opts.rate_per_host and 1 or 0 }, s:stats())
      end
    end)
  end)

  it_shim("a connection whose socket cannot be watched fails its request at once, and the next ones work", function()
    avideo.run(function()
      local s <close> = avideo.session {}
      shim.arm("uv_poll_start", 1)
      local t0 = avideo.now()
      -- a slow answer: libcurl also reads on its own timers, and a transfer
      -- that completes before its failure is acted on has its response.
      -- The peer's second address: a new connection (a reused one is
      -- watched already, and needs no new uv_poll_start)
      local ok, e = pcall(s.get, s, peer.url2 .. "/hold?ms=300")
      assert.is_false(ok)
      assert.are.equal("protocol", e.kind)
      assert.matches("socket could not be watched", e.message)
      assert.is_true(avideo.now() - t0 < 1, "no hang until a timeout")
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
      for _ = 1, 3 do assert.are.equal(200, s:get(peer.url .. "/echo").status) end
    end)
  end)

  it_shim("a resolver socket that cannot be watched fails its request at once", function()
    -- A host name goes through libcurl's threaded resolver, whose own socket
    -- is the first one to watch ("localhost" libcurl answers itself).
    shim.arm("uv_poll_init_socket", 1)
    local t0 = avideo.now()
    local ok, e = pcall(avideo.get, "http://localhost.:" .. peer.port .. "/echo", { timeout = 10 })
    assert.is_false(ok)
    assert.are.equal("protocol", e.kind)
    assert.matches("socket could not be watched", e.message)
    assert.is_true(avideo.now() - t0 < 1, "no hang until the total timeout")
    assert.are.equal(200, avideo.get(peer.url .. "/echo").status)
  end)
end)
