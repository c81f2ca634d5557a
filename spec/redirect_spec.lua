-- Redirects as aiohttp follows them: a 303 (unless HEAD) becomes a GET
-- without body, a 301 or 302 turns only a POST into a GET, anything else
-- keeps its method and body. The core follows every redirect itself
-- (libcurl's FOLLOWLOCATION is off: it re-sends a custom method as it is),
-- for every method: credentials only within an origin, at most 10
-- redirects, only to http and https, one slot and one total timeout.
local avideo = require "avideo"
local peer_support = require "support.peer"
local settled = require "support.settled"

describe("redirects", function()
  local peer
  lazy_setup(function() peer = peer_support.start() end)
  lazy_teardown(function() peer.stop() end)
  after_each(settled)

  -- what the last request that reached /echo was
  local function seen()
    return avideo.get(peer.url .. "/last-echo"):json()
  end

  describe("method and body at the target", function()
    local verbs = {
      { "GET" }, { "GET", "hello" }, { "HEAD" }, { "POST", "hello" },
      { "PUT", "hello" }, { "PATCH", "hello" }, { "DELETE", "hello" },
    }
    for _, v in ipairs(verbs) do
      local verb, data = v[1], v[2]
      for _, code in ipairs { 301, 302, 303, 307, 308 } do
        local to_get = (code == 303 and verb ~= "HEAD") or ((code == 301 or code == 302) and verb == "POST")
        local method = to_get and "GET" or verb
        local body = (not to_get and data) or ""
        it(("%s%s + %d: %s %s"):format(verb, data and " with a body" or "", code, method,
          body ~= "" and "with the body" or "without a body"), function()
          local r = avideo.request(verb, peer.url .. "/redirect/" .. code, { data = data })
          assert.are.equal(200, r.status)
          assert.are.equal(peer.url .. "/echo", r.url)
          assert.are.equal(method, r.method)
          local s = seen()
          assert.are.same({ method, body }, { s.method, s.body })
          -- the final response's body alone, not the redirect's with it
          if verb ~= "HEAD" then assert.are.same(s, r:json()) end
        end)
      end
    end

    it("a 3xx without Location is the response", function()
      local r = avideo.request("PUT", peer.url .. "/status/302", { data = "x" })
      assert.are.equal(302, r.status)
      assert.are.equal(peer.url .. "/status/302", r.url)
    end)

    it("a function body ends at a redirect to GET: the GET carries none", function()
      local parts, i = { "a", "b" }, 0
      local r = avideo.post(peer.url .. "/redirect/303", { data = function() i = i + 1; return parts[i] end })
      assert.are.same({ 200, "GET" }, { r.status, r.method })
      local s = seen()
      -- it went out chunked, with an empty body, before
      assert.are.same({ "GET", "", nil }, { s.method, s.body, s.headers["transfer-encoding"] })
    end)

    it("a function body still being made is not sent on to the redirect's target", function()
      -- the 303 comes before the body is read; the target is another origin
      local calls, got = 0, nil
      avideo.run(function()
        got = avideo.post(peer.url .. "/redirect-unread/303?to=" .. peer.url2 .. "/echo", { timeout = 10, data = function()
          calls = calls + 1
          if calls > 20 then return nil end
          avideo.sleep(0.02)
          return "secret piece " .. calls .. "\n"
        end })
      end)
      assert.are.same({ 200, "GET", peer.url2 .. "/echo" }, { got.status, got.method, got.url })
      local s = seen()
      assert.are.same({ "GET", "" }, { s.method, s.body })
      assert.is_nil(s.headers["transfer-encoding"])
      assert.is_true(calls < 20, "the function was still asked for pieces after the redirect")
    end)

    it("a Location with an international host name goes to its ASCII form, as a URL asked for does", function()
      -- the raw UTF-8 name reached libcurl, whose own conversion fails in a
      -- process that never called setlocale: "URL using bad/illegal format"
      local t0 = avideo.now()
      local ok, e = pcall(avideo.get, peer.url .. "/redirect-unread/302?to=http://b%C3%BCcher.invalid/x", { timeout = 10 })
      assert.is_false(ok)
      assert.is_true(avideo.is_error(e, "dns"), tostring(e)) -- made ASCII and looked up; it does not exist
      assert.matches("xn--bcher-kva.invalid", e.message, 1, true)
      assert.is_true(avideo.now() - t0 < 10)
    end)

    it("a relative Location resolves against the redirecting URL", function()
      local r = avideo.request("PATCH", peer.url .. "/redirect/307?to=..%2Fecho%3Fa%3D1", { data = "x" })
      assert.are.equal(peer.url .. "/echo?a=1", r.url)
      assert.are.same({ "PATCH", "x", { "1" } }, { seen().method, seen().body, seen().query.a })
    end)
  end)

  describe("credentials", function()
    local secret = { Authorization = "Bearer secret", Cookie = "a=b", ["Proxy-Authorization"] = "Basic cHg6cHc=",
                     ["X-Other"] = "kept" }
    for _, v in ipairs { { "GET" }, { "PUT", "x" } } do
      local verb, data = v[1], v[2]
      it(verb .. ": Authorization, Proxy-Authorization and Cookie go on within the origin", function()
        local h = avideo.request(verb, peer.url .. "/redirect/302?to=/echo", { headers = secret, data = data })
          :json().headers
        assert.are.same({ "Bearer secret", "a=b", "Basic cHg6cHc=", "kept" },
          { h.authorization, h.cookie, h["proxy-authorization"], h["x-other"] })
      end)

      it(verb .. ": Authorization, Proxy-Authorization and Cookie are dropped on a redirect to another origin", function()
        local r = avideo.request(verb, peer.url .. "/redirect/302?to=" .. peer.url2 .. "/echo",
          { headers = secret, data = data })
        assert.are.equal(peer.url2 .. "/echo", r.url)
        local h = r:json().headers
        assert.is_nil(h.authorization)
        assert.is_nil(h.cookie)
        assert.is_nil(h["proxy-authorization"])
        assert.are.equal("kept", h["x-other"])
      end)
    end

    it("a session's default Authorization is dropped too", function()
      avideo.run(function()
        local s <close> = avideo.session { headers = { Authorization = "Bearer session" } }
        local same = s:put(peer.url .. "/redirect/307", { data = "x" }):json().headers
        assert.are.equal("Bearer session", same.authorization)
        local cross = s:put(peer.url .. "/redirect/307?to=" .. peer.url2 .. "/echo", { data = "x" }):json()
        assert.is_nil(cross.headers.authorization)
        assert.are.same({ "PUT", "x" }, { cross.method, cross.body })
        -- and the session's own headers are untouched for the next request
        assert.are.equal("Bearer session", s:put(peer.url2 .. "/echo", { data = "x" }):json().headers.authorization)
      end)
    end)
  end)

  describe("limits", function()
    for _, v in ipairs { { "GET" }, { "PUT", "x" } } do
      local verb, data = v[1], v[2]
      it(verb .. ": follows 10 redirects, not 11", function()
        local r = avideo.request(verb, peer.url .. "/chain/10", { data = data })
        assert.are.equal(200, r.status)
        assert.are.equal(peer.url .. "/echo", r.url)
        local ok, e = pcall(avideo.request, verb, peer.url .. "/chain/11", { data = data })
        assert.is_false(ok)
        assert.are.equal("protocol", e.kind)
        assert.matches("too many redirects %(max_redirects = 10%)", e.message)
      end)

      it(verb .. ": a redirect to a scheme other than http and https is refused", function()
        local ok, e = pcall(avideo.request, verb, peer.url .. "/redirect/302?to=ftp://127.0.0.1/x", { data = data })
        assert.is_false(ok)
        assert.are.equal("protocol", e.kind)
      end)
    end

    it("a followed request keeps its slot and its easy handle", function()
      avideo.run(function()
        local s <close> = avideo.session { limit = 1 }
        local before = avideo.stats().easy_handles
        local r = avideo.gather {
          function() return s:delete(peer.url .. "/chain/5?code=308", { data = "x" }):json() end,
          function() return s:put(peer.url .. "/echo", { data = "y" }):json() end,
        }
        assert.are.same({ "DELETE", "x" }, { r[1].method, r[1].body })
        assert.are.same({ "PUT", "y" }, { r[2].method, r[2].body })
        assert.is_true(avideo.stats().easy_handles <= math.max(before, 1))
        assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
      end)
    end)

    it("the total timeout counts from the slot, not from each hop", function()
      local slow = os.getenv("AVIDEO_SLOW") and 4 or 1
      local url = peer.url .. "/chain/3?code=307&ms=" .. 200 * slow
      local t0 = avideo.now()
      local ok, e = pcall(avideo.request, "PUT", url, { data = "x", timeout = 0.5 * slow })
      assert.is_false(ok)
      assert.are.equal("timeout", e.kind)
      assert.are.equal("total", e.phase)
      assert.is_true(avideo.now() - t0 < 0.75 * slow)
      assert.are.equal(200, avideo.request("PUT", url, { data = "x", timeout = 5 * slow }).status)
    end)

    it("the total timeout starts with the request, whatever the process did since the loop's last turn", function()
      assert.are.equal(200, avideo.get(peer.url .. "/echo").status)
      -- busy for 0.5 s with no loop turn: the loop's cached clock goes stale
      local t0 = os.clock()
      while os.clock() - t0 < 0.5 do end
      local r = avideo.request("PUT", peer.url .. "/redirect/307?to=/echo", { data = "x", timeout = 0.4 })
      assert.are.equal(200, r.status)
    end)

    for _, verb in ipairs { "GET", "PUT" } do
      it(verb .. ": a connect timeout on a later hop is reported as the connect timeout", function()
        local to = peer.blackhole:gsub("[^%w]", function(c) return ("%%%02X"):format(c:byte()) end)
        local path = verb == "GET" and "/redirect?to=" or "/redirect/307?to="
        local t0 = avideo.now()
        local ok, e = pcall(avideo.request, verb, peer.url .. path .. to,
          { data = verb == "PUT" and "x" or nil, timeout = { total = 3, connect = 0.2 } })
        assert.is_false(ok)
        assert.are.equal("timeout", e.kind)
        assert.are.equal("connect", e.phase)
        assert.is_true(avideo.now() - t0 < 2, "it waited for the total timeout")
      end)
    end
  end)
end)
