-- Retries (the `retry` option) against the test peer's /flaky/{key} route,
-- which fails a given number of times per key, then answers 200 with the
-- attempt's number: which failures are retried, how long the waits are
-- (measured), Retry-After, the total timeout across attempts, cancel during
-- a wait, and the checks of every field.
local avideo = require "avideo"
local retry = require "avideo.retry"
local peer_support = require "support.peer"
local settled = require "support.settled"
local raises = require "support.raises"

local peer
-- a busy 2-core machine can be slow: generous upper bounds, tight lower ones
local SLACK = os.getenv("AVIDEO_SLOW") == "1" and 3 or 1.2

local n = 0
-- A /flaky URL with a key of its own: tests never share a count.
local function flaky(query, base)
  n = n + 1
  return (base or peer.url) .. "/flaky/k" .. n .. "?" .. query
end

-- How many requests the peer had for a /flaky URL.
local function count(url)
  return avideo.get(peer.url .. "/flaky-count/" .. url:match("/flaky/([^?]+)")):json().attempts
end

-- f's results and how long it took
local function timed(f, ...)
  local t0 = avideo.now()
  local r = f(...)
  return r, avideo.now() - t0
end

local function timed_error(kind, f, ...)
  local t0 = avideo.now()
  local e = raises(kind, nil, f, ...)
  return e, avideo.now() - t0
end

local FAST = { backoff = 0.01, jitter = false }

describe("retry", function()
  lazy_setup(function() peer = peer_support.start() end)
  lazy_teardown(function() peer.stop() end)
  after_each(settled)

  describe("backoff", function()
    it("waits backoff * 2^(n-1) between attempts (jitter off): 0.1 + 0.2 s for two retries", function()
      local url = flaky("fail=2")
      local r, took = timed(avideo.get, url, { retry = { attempts = 3, backoff = 0.1, jitter = false } })
      assert.are.equal(200, r.status)
      assert.are.equal(3, r:json().attempt)
      assert.are.equal(2, r.retries)
      assert.are.equal(3, count(url))
      assert.is_true(took >= 0.29 and took < 0.3 + SLACK, ("took %.3f s"):format(took))
    end)

    it("with jitter waits at most that (full jitter), and never more than max_backoff", function()
      local url = flaky("fail=2")
      local r, took = timed(avideo.get, url, { retry = { attempts = 3, backoff = 0.1, jitter = true } })
      assert.are.equal(2, r.retries)
      assert.is_true(took < 0.3 + SLACK, ("took %.3f s"):format(took))
      local p = retry.policy({ backoff = 0.1, max_backoff = 0.3 }, "test")
      local capped = retry.policy({ backoff = 0.1, max_backoff = 0.3, jitter = false }, "test")
      for k = 1, 5 do
        local expected = math.min(0.1 * 2 ^ (k - 1), 0.3)
        assert.are.equal(expected, retry.delay(capped, k))
        for _ = 1, 200 do
          local d = retry.delay(p, k)
          assert.is_true(d >= 0 and d <= expected, ("delay %g for retry %d"):format(d, k))
        end
      end
    end)

    it("stops after `attempts` and returns the last response as it is", function()
      local url = flaky("fail=5&status=502")
      local r = avideo.get(url, { retry = { attempts = 3, backoff = 0.01 } })
      assert.are.equal(502, r.status)
      assert.are.equal(3, r:json().attempt)
      assert.are.equal(2, r.retries)
      assert.are.equal(3, count(url))
    end)

    it("raises the last status with raise_for_status, saying how many retries were made", function()
      local url = flaky("fail=5&status=503")
      local e = raises("http", "503", avideo.get, url, { retry = { attempts = 2, backoff = 0.01 }, raise_for_status = true })
      assert.are.equal(503, e.status)
      assert.are.equal(1, e.retries)
      assert.are.equal(1, e.response.retries)
      -- a retried success is returned, not raised
      local r = avideo.get(flaky("fail=1"), { retry = FAST, raise_for_status = true })
      assert.are.equal(200, r.status)
    end)

    it("retries only the listed statuses", function()
      local url = flaky("fail=2&status=500")
      local r = avideo.get(url, { retry = { statuses = { 503 }, backoff = 0.01 } })
      assert.are.equal(500, r.status)
      assert.are.equal(0, r.retries)
      assert.are.equal(1, count(url))
      r = avideo.get(flaky("fail=1&status=418"), { retry = { statuses = { 418 }, backoff = 0.01 } })
      assert.are.equal(200, r.status)
      assert.are.equal(1, r.retries)
    end)
  end)

  describe("Retry-After", function()
    it("in seconds replaces the backoff", function()
      local r, took = timed(avideo.get, flaky("fail=1&retry_after=1"), { retry = FAST })
      assert.are.equal(200, r.status)
      assert.are.equal(1, r.retries)
      assert.is_true(took >= 0.99 and took < 1 + SLACK, ("took %.3f s"):format(took))
    end)

    it("is capped at max_backoff", function()
      local r, took = timed(avideo.get, flaky("fail=1&retry_after=100"),
        { retry = { backoff = 0.01, max_backoff = 0.2, jitter = false } })
      assert.are.equal(1, r.retries)
      assert.is_true(took >= 0.19 and took < 0.2 + SLACK, ("took %.3f s"):format(took))
    end)

    it("as an HTTP date", function()
      -- two seconds from the peer's now, in whole seconds on both sides
      local r, took = timed(avideo.get, flaky("fail=1&retry_after_date=2"), { retry = FAST })
      assert.are.equal(1, r.retries)
      assert.is_true(took >= 0.9 and took < 3 + SLACK, ("took %.3f s"):format(took))
      -- the three forms of RFC 9110, and what is neither
      local now = os.time()
      local function near(v, want)
        local got = retry.retry_after(v)
        assert.is_true(got ~= nil and math.abs(got - want) <= 1, ("%s: %s"):format(v, tostring(got)))
      end
      near(os.date("!%a, %d %b %Y %H:%M:%S GMT", now + 30), 30)
      near(os.date("!%A, %d-%b-%y %H:%M:%S GMT", now + 30), 30)
      near(os.date("!%a %b %e %H:%M:%S %Y", now + 30), 30)
      assert.are.equal(0, retry.retry_after("Sun, 06 Nov 1994 08:49:37 GMT"))
      assert.are.equal(5, retry.retry_after(" 5 "))
      assert.is_nil(retry.retry_after("soon"))
      assert.is_nil(retry.retry_after("-1"))
      assert.is_nil(retry.retry_after(nil))
    end)
  end)

  describe("methods and bodies", function()
    it("does not retry a POST unless it is listed", function()
      local url = flaky("fail=1")
      local r = avideo.post(url, { data = "x", retry = FAST })
      assert.are.equal(503, r.status)
      assert.are.equal(0, r.retries)
      assert.are.equal(1, count(url))
      r = avideo.post(flaky("fail=1"), { data = "x", retry = { methods = { "post" }, backoff = 0.01 } })
      assert.are.equal(200, r.status)
      assert.are.equal(1, r.retries)
      -- PATCH likewise; PUT and DELETE are in the defaults
      assert.are.equal(503, avideo.patch(flaky("fail=1"), { retry = FAST }).status)
      assert.are.equal(200, avideo.put(flaky("fail=1"), { data = "x", retry = FAST }).status)
      assert.are.equal(200, avideo.delete(flaky("fail=1"), { retry = FAST }).status)
    end)

    it("sends the same body again on each attempt", function()
      local path = os.tmpname()
      local f = assert(io.open(path, "wb"))
      f:write("from a file")
      f:close()
      for _, data in ipairs { "bytes", { a = "1" }, avideo.file(path) } do
        local r = avideo.put(flaky("fail=1"), { data = data, retry = FAST })
        assert.are.equal(200, r.status)
        assert.are.equal(1, r.retries)
      end
      local r = avideo.post(flaky("fail=1"), { files = { f = avideo.file(path) }, retry = { methods = { "POST" }, backoff = 0.01 } })
      assert.are.equal(1, r.retries)
      os.remove(path)
    end)

    it("does not retry a body function: it cannot be sent again", function()
      local url = flaky("fail=1")
      local sent = false
      local r = avideo.put(url, { retry = FAST, data = function()
        if sent then return nil end
        sent = true
        return "piece"
      end })
      assert.are.equal(503, r.status)
      assert.are.equal(0, r.retries)
      assert.are.equal(1, count(url))
    end)
  end)

  describe("failures", function()
    it("retries a refused connection when `connect` is in `on`, not otherwise, and never dns", function()
      local closed = "http://127.0.0.1:1/"
      local e, took = timed_error("connect", avideo.get, closed, { retry = { backoff = 0.1, jitter = false } })
      assert.are.equal(2, e.retries)
      assert.is_true(took >= 0.29 and took < 0.3 + SLACK, ("took %.3f s"):format(took))
      e = timed_error("connect", avideo.get, closed, { retry = { on = { "timeout", "reset" }, backoff = 0.1 } })
      assert.are.equal(0, e.retries)
      e = raises("dns", nil, avideo.get, "http://no-such-host.invalid/", { retry = FAST })
      assert.are.equal(0, e.retries)
    end)

    it("retries a reset or a body cut short when `reset` is in `on`, not otherwise", function()
      -- on a host of their own, each connection closed after its answer:
      -- libcurl sends a request again by itself when a reused connection
      -- dies before any answer, which would hide a retry
      for _, mode in ipairs { "reset", "cut" } do
        local s <close> = avideo.session { retry = { backoff = 0.01 } }
        local url = flaky("close=1&fail=2&mode=" .. mode, peer.url2)
        local r = s:get(url)
        assert.are.equal(200, r.status)
        assert.are.equal(3, r:json().attempt)
        assert.are.equal(2, r.retries)
        assert.are.equal(3, count(url))
        local s2 <close> = avideo.session { retry = { on = { "connect", "timeout" }, backoff = 0.01 } }
        url = flaky("close=1&fail=2&mode=" .. mode, peer.url2)
        local e = raises("protocol", nil, s2.get, s2, url)
        assert.are.equal("reset", e.cause)
        assert.are.equal(0, e.retries)
        assert.are.equal(1, count(url))
      end
    end)

    it("retries connect and sock_read timeouts when `timeout` is in `on`", function()
      local e, took = timed_error("timeout", avideo.get, peer.blackhole,
        { timeout = { connect = 0.05 }, retry = { backoff = 0.05, jitter = false } })
      assert.are.equal("connect", e.phase)
      assert.are.equal(2, e.retries)
      -- 3 x 0.05 s connects and 0.05 + 0.1 s waits
      assert.is_true(took >= 0.29 and took < 0.3 + SLACK, ("took %.3f s"):format(took))
      e = raises("timeout", nil, avideo.get, peer.blackhole,
        { timeout = { connect = 0.05 }, retry = { on = { "connect" }, backoff = 0.05 } })
      assert.are.equal(0, e.retries)
      local r = avideo.get(flaky("fail=1&stall_ms=1000"), { timeout = { sock_read = 0.1 }, retry = FAST })
      assert.are.equal(200, r.status)
      assert.are.equal(1, r.retries)
    end)

    it("shares timeout.total among all attempts", function()
      -- 503 at once, a 0.1 s wait, then an answer held 2 s: the second
      -- attempt gets what is left of the 0.5 s and its total clock expires
      local url = flaky("fail=1&ms=2000")
      local e, took = timed_error("timeout", avideo.get, url,
        { timeout = 0.5, retry = { backoff = 0.1, jitter = false } })
      assert.are.equal("total", e.phase)
      assert.are.equal(1, e.retries)
      assert.matches("within 0.5 s %(2 attempts%)", e.message)
      assert.is_true(took >= 0.45 and took < 0.5 + SLACK, ("took %.3f s"):format(took))
      assert.are.equal(2, count(url))
      -- an expired total is not retried: nothing is left of it
      url = flaky("fail=0&ms=2000")
      e = raises("timeout", nil, avideo.get, url, { timeout = 0.2, retry = FAST })
      assert.are.equal("total", e.phase)
      assert.are.equal(0, e.retries)
      assert.are.equal(1, count(url))
      -- no retry starts whose wait would end past the total: the last
      -- response is returned (waits 0.1, 0.2, then 0.4 would pass 0.5 s)
      local r
      r, took = timed(avideo.get, flaky("fail=9"),
        { timeout = 0.5, retry = { attempts = 9, backoff = 0.1, jitter = false } })
      assert.are.equal(503, r.status)
      assert.are.equal(2, r.retries)
      assert.is_true(took >= 0.29 and took < 0.5 + SLACK, ("took %.3f s"):format(took))
    end)
  end)

  describe("tasks, streams and sessions", function()
    it("a cancelled task stops retrying at once, during the wait", function()
      local url = flaky("fail=5")
      avideo.run(function()
        local s <close> = avideo.session { retry = { attempts = 5, backoff = 10, jitter = false } }
        local task = avideo.spawn(function() return s:get(url) end)
        avideo.sleep(0.2)
        local t0 = avideo.now()
        task:cancel()
        local ok, e = pcall(task.wait, task)
        assert.is_false(ok)
        assert.is_true(avideo.is_error(e, "cancelled"), tostring(e))
        assert.is_true(avideo.now() - t0 < 0.5)
        assert.are.same({ in_flight = 0, queued = 0, hosts = s:stats().hosts }, s:stats())
      end)
      assert.are.equal(1, count(url))
    end)

    it("closes a stream before retrying: it keeps no slot while waiting", function()
      -- limit 1: an unclosed stream would hold the only slot forever
      avideo.run(function()
        local s <close> = avideo.session { limit = 1, retry = FAST }
        local r = avideo.timeout(5, s.get, s, flaky("fail=2"), { stream = true })
        assert.are.equal(200, r.status)
        assert.are.equal(2, r.retries)
        assert.are.equal(3, r:json().attempt)
        assert.are.equal(0, s:stats().in_flight)
      end)
    end)

    it("says how many retries were made, 0 without a policy or when none was needed", function()
      assert.are.equal(0, avideo.get(peer.url .. "/status/200").retries)
      assert.are.equal(0, avideo.get(flaky(""), { retry = 3 }).retries)
      assert.are.equal(0, avideo.get(flaky("fail=1")).retries) -- retry is off by default
      assert.are.equal(1, avideo.get(flaky("fail=1"), { retry = { backoff = 0 } }).retries)
    end)

    it("takes a session's policy, which a request's replaces", function()
      avideo.run(function()
        local s <close> = avideo.session { retry = FAST }
        assert.are.equal(1, s:get(flaky("fail=1")).retries) -- no opts: the session's policy
        assert.are.equal(1, s:request("OPTIONS", flaky("fail=1")).retries)
        local url = flaky("fail=1")
        assert.are.equal(503, s:get(url, { retry = false }).status)
        assert.are.equal(1, count(url))
        assert.are.equal(503, s:get(flaky("fail=1"), { retry = 1 }).status)
        -- replaced, not merged: the request's own statuses
        assert.are.equal(503, s:get(flaky("fail=1"), { retry = { statuses = { 500 } } }).status)
        -- `retry = 3` is the defaults with 3 attempts; `true` the defaults
        assert.are.equal(200, s:get(flaky("fail=2"), { retry = { attempts = 3, backoff = 0 } }).status)
      end)
      local p = retry.policy(3, "test")
      assert.are.equal(3, p.attempts)
      assert.are.equal(0.5, p.backoff)
      assert.are.equal(30, p.max_backoff)
      assert.is_true(p.jitter and p.connect and p.timeout and p.reset)
      assert.is_true(p.statuses[429] and p.statuses[504] and p.methods.GET and p.methods.OPTIONS)
      assert.is_nil(p.methods.POST)
      assert.are.same(p, retry.policy(true, "test"))
      assert.is_false(retry.policy(nil, "test"))
    end)
  end)

  describe("bad input", function()
    it("refuses every bad field with an invalid error naming it", function()
      local cases = {
        { { colour = 1 }, "unknown retry field 'colour'" },
        { { attempts = 0 }, "retry attempts must be a whole number >= 1" },
        { { attempts = 1.5 }, "retry attempts" },
        { { attempts = "3" }, "retry attempts" },
        { { attempts = math.huge }, "retry attempts" },
        { 0, "retry attempts" },
        { { statuses = 503 }, "retry statuses must be a list" },
        { { statuses = { 503, 600 } }, "retry statuses .*600 %(item 2%)" },
        { { statuses = { 99 } }, "retry statuses" },
        { { statuses = { 503.5 } }, "retry statuses" },
        { { statuses = { a = 503 } }, "retry statuses must be a list.*not a list" },
        { { methods = { "GET", 1 } }, "retry methods" },
        { { methods = "GET" }, "retry methods" },
        { { backoff = -1 }, "retry backoff must be a number of seconds >= 0" },
        { { backoff = 0 / 0 }, "retry backoff" },
        { { backoff = "1" }, "retry backoff" },
        { { max_backoff = -0.5 }, "retry max_backoff" },
        { { max_backoff = math.huge }, "retry max_backoff" },
        { { jitter = 1 }, "retry jitter must be a boolean" },
        { { on = { "connect", "dns" } }, 'retry on must be a list of "connect", "timeout" or "reset"' },
        { { on = "connect" }, "retry on" },
        { "yes", "bad argument 'retry'" },
      }
      for _, case in ipairs(cases) do
        local v, pattern = case[1], case[2]
        raises("invalid", pattern, avideo.get, peer.url .. "/status/200", { retry = v })
        raises("invalid", pattern, avideo.session, { retry = v })
      end
      -- checked up front: before anything is sent, even for a POST it
      -- would not apply to, or with one attempt
      local url = flaky("")
      raises("invalid", "retry jitter", avideo.post, url, { retry = { attempts = 1, jitter = "no" } })
      assert.are.equal(0, count(url))
    end)
  end)
end)
