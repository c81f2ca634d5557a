-- Per-response timings (issue 17): response.elapsed, response.timings
-- { queued, dns, connect, tls, sent, first_byte, total, redirect } and
-- response.connection_reused, and the same timings on an error. Against
-- avideo-server at a small time scale (its video answers take 0.2 s at
-- scale 1) and the test peer for redirects.
local avideo = require "avideo"
local support = require "support.server"
local client = require "support.server_client"
local peer_support = require "support.peer"
local settled = require "support.settled"

local SCALE = 0.2
local VIDEO = 0.2 * SCALE -- one video's answer at this scale, when alone

local server, peer
lazy_setup(function()
  server = support.start { time_scale = SCALE }
  peer = peer_support.start()
end)
lazy_teardown(function()
  if server then server.stop() end
  if peer then peer.stop() end
end)
after_each(settled)

-- Every phase reached is at least the one before, and the whole fits.
local function consistent(r)
  local t = r.timings
  assert.is_table(t)
  assert.is_true(t.queued >= 0)
  assert.is_true(t.redirect >= 0)
  assert.is_true(t.redirect <= t.dns and t.dns <= t.connect and t.connect <= t.tls, "dns <= connect <= tls")
  assert.is_true(t.tls <= t.sent and t.sent <= t.first_byte, "tls <= sent <= first_byte")
  assert.is_true(t.first_byte <= t.total + 1e-6, "first_byte <= total")
  assert.is_true(t.queued + t.total <= r.elapsed + 1e-6, "queued + total <= elapsed")
  assert.is_true(r.elapsed - (t.queued + t.total) < 0.05, "elapsed is queued + total, give or take a turn")
end

describe("response timings", function()
  it("are consistent, and a reused connection has no connect phase", function()
    local s = avideo.session()
    local first = s:get(server.url .. "/videos/?n=1")
    consistent(first)
    assert.is_false(first.connection_reused)
    assert.is_true(first.timings.connect > 0)
    local again = s:get(server.url .. "/videos/?n=1")
    consistent(again)
    assert.is_true(again.connection_reused)
    assert.same({ 0, 0, 0 }, { again.timings.dns, again.timings.connect, again.timings.tls })
    -- the server's 50 ms (scaled) are waited for between sent and first byte
    assert.is_true(again.timings.first_byte - again.timings.sent >= 0.05 * SCALE * 0.9)
  end)

  it("show the wait for a limit slot growing through a gather", function()
    local ids = client.get_json(server.url .. "/videos/?n=6")
    local s = avideo.session { limit_per_host = 2 }
    local rs = avideo.run(function()
      local tasks = {}
      for i, id in ipairs(ids) do tasks[i] = function() return s:get(server.url .. "/videos/" .. id) end end
      return avideo.gather(tasks)
    end)
    for i, r in ipairs(rs) do
      consistent(r)
      -- waves of two: the k-th (from 0) waits k answers' time at least
      local wave = (i - 1) // 2
      assert.is_true(r.timings.queued >= wave * VIDEO * 0.9,
        ("request %d queued %.4f s, expected >= %.4f"):format(i, r.timings.queued, wave * VIDEO * 0.9))
      if wave == 0 then assert.is_true(r.timings.queued < VIDEO / 2) end
    end
    -- the server saw what the client waited for: never more than 2 at once
    local st = client.get_json(server.url .. "/stats")
    assert.is_true(st.max_in_flight <= 2, "server saw " .. tostring(st.max_in_flight) .. " at once")
    assert.is_true(rs[6].timings.queued > rs[2].timings.queued)
  end)

  it("count the hops before the final one as redirect", function()
    local r = avideo.get(peer.url .. "/chain/3?ms=20", { timeout = 10 })
    assert.equal(200, r.status)
    consistent(r)
    assert.is_true(r.timings.redirect >= 0.06 * 0.9, "three hops of 20 ms")
    assert.is_true(r.timings.total >= r.timings.redirect)
  end)

  it("come on a stream once its body has been read", function()
    local s = avideo.session()
    avideo.run(function()
      s:get(peer.url .. "/big?bytes=10") -- a connection to reuse
      -- a body past the stream's buffer: the transfer waits for the reader
      local r = s:get(peer.url .. "/big?bytes=2000000", { stream = true })
      assert.is_nil(rawget(r, "timings"))
      assert.is_nil(r.connection_reused) -- not known yet, and not kept as such
      r:text()
      consistent(r)
      assert.is_true(r.connection_reused)
    end)
  end)
end)

describe("error timings", function()
  it("are on a failed request's error, phases not reached left out", function()
    local port = require("socket").bind("127.0.0.1", 0)
    local _, p = port:getsockname()
    port:close()
    local ok, err = pcall(avideo.get, "http://127.0.0.1:" .. p .. "/", { timeout = 5 })
    assert.is_false(ok)
    assert.equal("connect", err.kind)
    assert.is_table(err.timings)
    assert.is_true(err.timings.queued >= 0)
    assert.is_nil(err.timings.connect)
    assert.is_nil(err.timings.first_byte)
  end)

  it("of a pool timeout hold the time queued", function()
    local s = avideo.session { limit = 1 }
    local errs = avideo.run(function()
      return avideo.gather({
        function() return s:get(server.url .. "/videos/?n=1", { timeout = 5 }) end,
        function() return s:get(server.url .. "/videos/?n=1", { timeout = { pool = 0.001 } }) end,
      }, { return_exceptions = true })
    end)
    local err = errs[2]
    assert.is_true(avideo.is_error(err, "timeout"), tostring(err))
    assert.equal("pool", err.phase)
    assert.is_true(err.timings.queued >= 0.001)
    assert.is_nil(err.timings.dns)
  end)
end)
