-- Sessions against a recording HTTP peer on loopback (spec/support/peer.py):
-- what goes on the wire (verbs, params, headers, bodies), responses, error
-- kinds the peer can provoke (resets, stalls, bad TLS), and refused input.
-- Limits, connection reuse and the timeouts' clocks are checked against
-- avideo-server itself in limits_spec.lua.
local avideo = require "avideo"
local peer_support = require "support.peer"

local peer

local function stats()
  return avideo.get(peer.url .. "/stats"):json()
end

local function reset_stats()
  avideo.post(peer.url .. "/reset-stats")
end

local settled = require "support.settled"

local raises = require "support.raises"

describe("session", function()
  lazy_setup(function() peer = peer_support.start() end)
  lazy_teardown(function() peer.stop() end)
  after_each(settled)

  describe("requests", function()
    it("sends each verb with params, headers, json and data", function()
      avideo.run(function()
        local s <close> = avideo.session { headers = { ["X-Default"] = "d", ["X-Over"] = "session" } }
        local r = s:get(peer.url .. "/echo", { params = { q = "a b&c", n = 3 }, headers = { ["X-Over"] = "request" } }):json()
        assert.are.equal("GET", r.method)
        assert.are.same({ "3" }, r.query.n)
        assert.are.same({ "a b&c" }, r.query.q)
        assert.are.equal("d", r.headers["x-default"])
        assert.are.equal("request", r.headers["x-over"])
        for _, verb in ipairs { "post", "put", "patch", "delete" } do
          local e = s[verb](s, peer.url .. "/echo", { json = { warnings = avideo.json.array() } }):json()
          assert.are.equal(verb:upper(), e.method)
          assert.are.equal('{"warnings":[]}', e.body)
          assert.are.equal("application/json", e.headers["content-type"])
        end
        local d = s:post(peer.url .. "/echo", { data = "raw body", headers = { ["Content-Type"] = "text/plain" } }):json()
        assert.are.equal("raw body", d.body)
        assert.are.equal("text/plain", d.headers["content-type"])
        local h = s:head(peer.url .. "/echo")
        assert.are.equal(200, h.status)
        assert.are.equal("", h:text())
        assert.are.equal("PATCH", s:request("patch", peer.url .. "/echo"):json().method)
      end)
    end)

    it("sends a User-Agent and Accept-Encoding unless told otherwise, and decodes compressed answers", function()
      local e = avideo.get(peer.url .. "/echo"):json()
      assert.matches("^avideo/%d+%.%d+", e.headers["user-agent"])
      assert.are.equal("gzip, deflate", e.headers["accept-encoding"])
      avideo.run(function()
        local s <close> = avideo.session { headers = { ["user-agent"] = "mine/1" } }
        local r = s:get(peer.url .. "/echo", { headers = { ["Accept-Encoding"] = "identity" } }):json()
        assert.are.equal("mine/1", r.headers["user-agent"])
        assert.are.equal("identity", r.headers["accept-encoding"])
        -- the session's defaults still apply to its next request
        assert.are.equal("gzip, deflate", s:get(peer.url .. "/echo"):json().headers["accept-encoding"])
        local empty = s:get(peer.url .. "/echo", { headers = { ["User-Agent"] = "" } }):json()
        assert.are.equal("", empty.headers["user-agent"])
        local plain <close> = avideo.session { headers = { ["ACCEPT-ENCODING"] = "identity" } }
        local p = plain:get(peer.url .. "/echo"):json()
        assert.are.equal("identity", p.headers["accept-encoding"])
        assert.matches("^avideo/", p.headers["user-agent"])
      end)
      local g = avideo.get(peer.url .. "/gzip")
      assert.are.equal("gzip", g.headers["content-encoding"])
      assert.are.same({ compressed = true, accept = "gzip, deflate" }, g:json())
    end)

    it("sends every session header of a name alongside a request's own headers", function()
      avideo.run(function()
        local s <close> = avideo.session { headers = { ["X-A"] = "1", ["x-a"] = "2" } }
        for _, opts in ipairs { {}, { headers = { ["X-B"] = "b" } } } do
          local values = {}
          for _, kv in ipairs(s:get(peer.url .. "/echo", opts):json().header_list) do
            if kv[1] == "x-a" then values[#values + 1] = kv[2] end
          end
          table.sort(values)
          assert.are.same({ "1", "2" }, values)
        end
      end)
    end)

    it("never waits for 100-continue on large bodies", function()
      local big = string.rep("x", 200000)
      local t0 = avideo.now()
      local r = avideo.post(peer.url .. "/echo", { data = big }):json()
      assert.are.equal(#big, #r.body)
      assert.is_nil(r.headers.expect)
      assert.is_true(avideo.now() - t0 < 0.5)
    end)

    it("gives a response with status, reason, ok, url, headers, text, json", function()
      local r = avideo.get(peer.url .. "/status/404")
      assert.are.equal(404, r.status)
      assert.are.equal("Not Found", r.reason)
      assert.is_false(r.ok)
      assert.are.equal(peer.url .. "/status/404", r.url)
      assert.are.equal("application/json; charset=utf-8", r.headers["Content-Type"])
      assert.are.equal(r.headers["content-type"], r.headers["CONTENT-TYPE"])
      assert.are.same({ status = 404 }, r:json())
      local e = raises("http", "404 Not Found", r.raise_for_status, r)
      assert.are.equal(404, e.status)
      assert.are.equal(peer.url .. "/status/404", e.url)
      local ok = avideo.get(peer.url .. "/status/200")
      assert.is_true(ok.ok)
      assert.are.equal("OK", ok.reason)
      assert.are.equal(ok, ok:raise_for_status())
    end)

    it("follows redirects and reports the final url", function()
      local r = avideo.get(peer.url .. "/redirect", { params = { to = "/status/201" } })
      assert.are.equal(201, r.status)
      assert.are.equal(peer.url .. "/status/201", r.url)
    end)

    it("joins base_url and raises for status when asked", function()
      avideo.run(function()
        local s <close> = avideo.session { base_url = peer.url, raise_for_status = true }
        assert.are.equal(200, s:get("/status/200").status)
        assert.are.equal(200, s:get("status/200").status)
        raises("http", "500", s.get, s, "/status/500")
        assert.are.equal(500, s:get("/status/500", { raise_for_status = false }).status)
      end)
    end)

    it("blocks outside tasks, with the same session, and on the module's default session", function()
      local s <close> = avideo.session {}
      assert.are.equal(200, s:get(peer.url .. "/status/200").status)
      for _, verb in ipairs { "get", "post", "put", "patch", "delete" } do
        local e = avideo[verb](peer.url .. "/echo", { json = { verb = verb } }):json()
        assert.are.equal(verb:upper(), e.method)
        if verb ~= "get" then assert.are.equal(('{"verb":"%s"}'):format(verb), e.body) end
      end
      assert.are.equal("", avideo.head(peer.url .. "/echo"):text())
      assert.are.equal("OPTIONS", avideo.request("OPTIONS", peer.url .. "/echo"):json().method)
    end)

    it("close() refuses new requests", function()
      local s = avideo.session {}
      s:close()
      assert.is_true(s.closed)
      raises("invalid", "session is closed", s.get, s, peer.url .. "/status/200")
    end)

    -- Lua 5.4's statement: left out under older Luas (spec/lua_versions.cmake),
    -- which have no such statement (the name's `<close>` survives the
    -- portable helper, which erases " <close>")
    it("is closed at the end of a `<close>` variable's scope", function()
      local s = avideo.session {}
      do
        local s2 <close> = s
      end
      assert.is_true(s.closed)
    end)
  end)

  describe("errors", function()
    it("names each kind, with the URL and method, in one line", function()
      local cases = {
        { "connect", "http://127.0.0.1:1/" },
        { "dns", "http://no-such-host.invalid/" },
        { "tls", peer.tls .. "/status/200" },
        { "protocol", peer.url .. "/reset-before" },
        { "protocol", peer.url .. "/reset-mid" },
        { "protocol", peer.url .. "/short" },
        { "protocol", peer.url .. "/bad-status" },
      }
      for _, case in ipairs(cases) do
        local kind, url = case[1], case[2]
        local e = raises(kind, nil, avideo.get, url)
        assert.are.equal(url, e.url)
        assert.are.equal("GET", e.method)
        assert.is_string(e.message)
        assert.is_nil(tostring(e):find("\n"), tostring(e))
        assert.matches("^avideo%." .. kind .. " error: ", tostring(e))
        assert.is_truthy(tostring(e):find(url, 1, true), tostring(e))
      end
      local e = raises("invalid", "not valid JSON", function() return avideo.get(peer.url .. "/not-json"):json() end)
      assert.are.equal(peer.url .. "/not-json", e.url)
      e = raises("http", "503", function() return avideo.get(peer.url .. "/status/503"):raise_for_status() end)
      assert.are.equal(503, e.status)
      assert.are.equal(peer.url .. "/status/503", e.url)
      assert.is_nil(tostring(e):find("\n"))
    end)

    it("times out by phase: sock_read, total, connect, each on its own clock", function()
      local slow = os.getenv("AVIDEO_SLOW") == "1"
      local function timed(phase, seconds, url, timeout)
        local t0 = avideo.now()
        local e = raises("timeout", phase, avideo.get, url, { timeout = timeout })
        local took = avideo.now() - t0
        assert.are.equal(phase, e.phase)
        assert.are.equal(url, e.url)
        assert.is_true(took >= seconds - 0.005 and took < seconds + (slow and 1 or 0.1),
                       ("%s timeout after %.3f s, expected %.3f s"):format(phase, took, seconds))
      end
      timed("sock_read", 0.1, peer.url .. "/stall", { sock_read = 0.1 })
      -- /drip sends a byte every 50 ms: sock_read never fires, total does
      timed("total", 0.2, peer.url .. "/drip", { total = 0.2, sock_read = 0.1 })
      timed("connect", 0.05, peer.blackhole, { connect = 0.05 })
    end)

    it("cuts off a body larger than max_body_size", function()
      raises("protocol", "max_body_size", avideo.get, peer.url .. "/big?bytes=100000", { max_body_size = 1000 })
      assert.are.equal(100000, #avideo.get(peer.url .. "/big?bytes=100000"):text())
    end)
  end)

  describe("TLS", function()
    it("verifies certificates by default; ssl = false and ca_file are per session", function()
      local url = peer.tls .. "/status/200"
      local e = raises("tls", nil, avideo.get, url)
      assert.are.equal(url, e.url)
      avideo.run(function()
        local trusting <close> = avideo.session { ca_file = peer.tls_cert }
        local insecure <close> = avideo.session { ssl = false }
        local strict <close> = avideo.session {}
        -- interleaved on one loop: easy handles and connections are shared
        -- between sessions, settings must not leak from one to another
        for _ = 1, 2 do
          assert.are.equal(200, trusting:get(url).status)
          assert.are.equal(200, insecure:get(url).status)
          raises("tls", nil, strict.get, strict, url)
        end
        assert.are.same({ 200, 200 }, avideo.gather(
          function() return trusting:get(url).status end, function() return insecure:get(url).status end))
        raises("tls", nil, strict.get, strict, url)
      end)
      -- a ca_file is the only trust: one that holds another certificate
      -- for the same address fails
      local other, key = os.tmpname(), os.tmpname()
      assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 1"
        .. " -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null"):format(key, other)))
      local e2 = raises("tls", nil, function() return avideo.session { ca_file = other }:get(url) end)
      assert.matches("certificate", e2.message)
      os.remove(other)
      os.remove(key)
      raises("invalid", "ca_file cannot be read", avideo.session, { ca_file = "/no/such/file.pem" })
      raises("invalid", "bad argument 'ssl'", avideo.session, { ssl = "no" })
      raises("invalid", "not both", avideo.session, { ssl = false, ca_file = peer.tls_cert })
    end)
  end)

  describe("refused input (nothing is sent)", function()
    it("refuses other schemes and bad URLs", function()
      for _, url in ipairs { "file:///etc/passwd", "gopher://x/", "dict://x/", "ftp://x/", "/relative", "http://", "not a url" } do
        raises("invalid", nil, avideo.get, url)
      end
    end)

    it("refuses a bad URL on an origin it has already used", function()
      avideo.run(function()
        local s <close> = avideo.session {}
        assert.are.equal(200, s:get(peer.url .. "/status/200").status)
        raises("invalid", "URL", s.get, s, peer.url .. "/bad path")
        raises("invalid", nil, s.get, s, peer.url .. "0/status/200")
        assert.are.equal(200, s:get(peer.url .. "/status/200?x=1#f").status)
      end)
    end)

    it("takes read_bufsize within libcurl's bounds", function()
      local s <close> = avideo.session { read_bufsize = 1024 }
      assert.are.equal(100000, #s:get(peer.url .. "/big?bytes=100000"):text())
      raises("invalid", "read_bufsize", avideo.session, { read_bufsize = 100 })
      raises("invalid", "read_bufsize", avideo.session, { read_bufsize = 4096.5 })
    end)

    it("refuses redirects to other schemes", function()
      for _, scheme in ipairs { "file:///etc/passwd", "gopher://127.0.0.1/", "ftp://127.0.0.1/" } do
        local e = raises("protocol", "only http and https", avideo.get, peer.url .. "/redirect?to=" .. scheme)
        assert.are.equal(peer.url .. "/redirect?to=" .. scheme, e.url)
      end
    end)

    it("refuses CR/LF in headers and bad header names", function()
      reset_stats()
      raises("invalid", "CR, LF", avideo.get, peer.url .. "/echo", { headers = { ["X-A"] = "a\r\nX-Injected: 1" } })
      raises("invalid", "CR, LF", avideo.get, peer.url .. "/echo", { headers = { ["X-A"] = "a\nb" } })
      raises("invalid", "not allowed", avideo.get, peer.url .. "/echo", { headers = { ["X A"] = "v" } })
      raises("invalid", "CR, LF", avideo.session, { headers = { X = "\r" } })
      assert.are.equal(0, stats().connections - 1)
    end)

    it("refuses wrong types, unknown options, bad limits and timeouts", function()
      raises("invalid", "url", avideo.get, 42)
      raises("invalid", "unknown option 'limit_perhost'", avideo.session, { limit_perhost = 1 })
      for _, bad in ipairs { -1, 0 / 0, 1.5, "10" } do
        raises("invalid", "limit", avideo.session, { limit = bad })
        raises("invalid", "limit_per_host", avideo.session, { limit_per_host = bad })
      end
      raises("invalid", "timeout", avideo.session, { timeout = -1 })
      raises("invalid", "timeout", avideo.session, { timeout = { total = 0 / 0 } })
      raises("invalid", "unknown timeout field", avideo.session, { timeout = { read = 1 } })
      raises("invalid", "bad argument 'url'", function() return avideo.session():get() end)
      raises("invalid", "as a method", function() local s = avideo.session() return s.get(peer.url) end)
      raises("invalid", "JSON", avideo.post, peer.url .. "/echo", { json = { f = print } })
      raises("invalid", "json or data", avideo.post, peer.url .. "/echo", { json = 1, data = "x" })
      raises("invalid", "HTTP method", avideo.request, "GE T", peer.url)
    end)
  end)
end)
