-- The daily client's settings (issue 16): a cookie jar per session,
-- Basic and Digest auth, proxies (given, from the environment, or none),
-- redirect control and history. Against a real httpbin under gunicorn
-- and nginx as a forward proxy, both started here on free ports; the
-- environment cases run in a child Lua, since Lua cannot set its own.
local avideo = require "avideo"
local httpbin_support = require "support.httpbin"
local nginx_support = require "support.nginx"
local settled = require "support.settled"
local peer_support = require "support.peer"

local TIMEOUT = 10

local httpbin, nginx, other, peer
lazy_setup(function()
  httpbin = httpbin_support.start()
  nginx = nginx_support.start()
  peer = peer_support.start()
  -- the same server under another origin (localhost, not 127.0.0.1)
  other = httpbin.url:gsub("127%.0%.0%.1", "localhost")
end)
lazy_teardown(function()
  if httpbin then httpbin.stop() end
  if nginx then nginx.stop() end
  if peer then peer.stop() end
end)
after_each(settled)

local function session(opts)
  opts = opts or {}
  opts.timeout = opts.timeout or TIMEOUT
  return avideo.session(opts)
end

local function json_of(r)
  assert.equal(200, r.status)
  return r:json()
end

local function by_name(list)
  local out = {}
  for _, c in ipairs(list) do out[c.name] = c end
  return out
end

local function invalid(fn, pattern)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  assert.is_true(avideo.is_error(err, "invalid"), tostring(err))
  assert.matches(pattern, err.message)
  assert.is_nil(tostring(err):find("\n"))
end

-- Runs `code` in a child lua5.4 with the environment `env` ("A=1 B=2");
-- its printed output.
local function child(env, code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local p = assert(io.popen(("env -u http_proxy -u HTTP_PROXY -u https_proxy -u HTTPS_PROXY -u all_proxy "
    .. "-u ALL_PROXY -u no_proxy -u NO_PROXY -u REQUEST_METHOD %s timeout 20 lua5.4 %s 2>&1"):format(env, path)))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out
end

-- A child that GETs /headers from httpbin and prints whether it went
-- through nginx; session options as Lua text.
local function via_proxy(env, opts)
  return child(env, ([[
local avideo = require "avideo"
local ok, r = pcall(function() return avideo.session(%s):get(%q) end)
if not ok then print("error: " .. tostring(r)) os.exit(0) end
print(r.headers["x-proxied-by"] and "proxied" or "direct")
]]):format(opts or "{ timeout = 10 }", httpbin.url .. "/headers")):gsub("%s+$", "")
end

describe("cookies", function()
  it("are stored from a response and sent back", function()
    local s = session()
    s:get(httpbin.url .. "/cookies/set/a/1", { allow_redirects = false })
    assert.same({ a = "1" }, json_of(s:get(httpbin.url .. "/cookies")).cookies)
    local c = by_name(s:cookies()).a
    assert.same({ name = "a", value = "1", domain = "127.0.0.1", path = "/", secure = false, http_only = false },
      c)
  end)

  it("are stored from a redirect's response and sent on the next hop", function()
    local s = session()
    -- /cookies/set answers 302 with Set-Cookie, to /cookies, which shows them
    local r = s:get(httpbin.url .. "/cookies/set?a=1&b=two")
    assert.same({ a = "1", b = "two" }, json_of(r).cookies)
    assert.equal(302, r.history[1].status)
  end)

  it("are deleted when the server expires them", function()
    local s = session()
    s:get(httpbin.url .. "/cookies/set?a=1&b=2")
    assert.same({ b = "2" }, json_of(s:get(httpbin.url .. "/cookies/delete?a")).cookies)
    assert.same({ "b" }, (function()
      local names = {}
      for _, c in ipairs(s:cookies()) do names[#names + 1] = c.name end
      return names
    end)())
  end)

  it("keep their attributes, and the path, domain and expiry rules hold", function()
    local s = session()
    local set = "k=v; Path=/cookies; Max-Age=100; Secure; HttpOnly"
    s:get(httpbin.url .. "/response-headers", { params = { ["Set-Cookie"] = set } })
    s:get(httpbin.url .. "/response-headers", { params = { ["Set-Cookie"] = "elsewhere=1; Path=/other" } })
    s:get(httpbin.url .. "/response-headers", { params = { ["Set-Cookie"] = "gone=1; Max-Age=0" } })
    local jar = by_name(s:cookies())
    assert.is_nil(jar.gone)
    local k = jar.k
    assert.equal("/cookies", k.path)
    assert.is_true(k.secure) -- 127.0.0.1 counts as a secure context
    assert.is_true(k.http_only)
    assert.is_true(math.abs(k.expires - (os.time() + 100)) <= 5)
    assert.is_nil(jar.elsewhere.expires) -- a session cookie
    -- path: /other's cookie is not sent to /cookies
    assert.same({ k = "v" }, json_of(s:get(httpbin.url .. "/cookies")).cookies)
    -- domain: 127.0.0.1's cookies are not sent to localhost
    assert.same({}, json_of(s:get(other .. "/cookies")).cookies)
  end)

  it("are never shared between sessions, and one-off requests keep none", function()
    local a, b = session(), session()
    a:get(httpbin.url .. "/cookies/set/a/1")
    assert.same({}, json_of(b:get(httpbin.url .. "/cookies")).cookies)
    assert.same({}, b:cookies())
    avideo.get(httpbin.url .. "/cookies/set/one/off", { timeout = TIMEOUT })
    assert.same({}, json_of(avideo.get(httpbin.url .. "/cookies", { timeout = TIMEOUT })).cookies)
    local none = session { cookie_jar = false }
    none:get(httpbin.url .. "/cookies/set/a/1")
    assert.same({}, json_of(none:get(httpbin.url .. "/cookies")).cookies)
    assert.same({}, none:cookies())
  end)

  it("given to a session go to every host and are listed with domain ''", function()
    local s = session { cookies = { seed = "x", n = 5 } }
    assert.same({ seed = "x", n = "5" }, json_of(s:get(httpbin.url .. "/cookies")).cookies)
    assert.same({ seed = "x", n = "5" }, json_of(s:get(other .. "/cookies")).cookies)
    local seed = by_name(s:cookies()).seed
    assert.same({ name = "seed", value = "x", domain = "", path = "/", secure = false, http_only = false }, seed)
  end)

  it("given to a request are sent with the session's and not kept", function()
    local s = session { cookies = { seed = "x" } }
    assert.same({ seed = "x", r = "y" }, json_of(s:get(httpbin.url .. "/cookies", { cookies = { r = "y" } })).cookies)
    assert.same({ seed = "z" }, json_of(s:get(httpbin.url .. "/cookies", { cookies = { seed = "z" } })).cookies)
    assert.same({ seed = "x" }, json_of(s:get(httpbin.url .. "/cookies")).cookies)
  end)

  it("given as a Cookie header share the one Cookie line with the jar's and the given ones", function()
    -- libcurl sent the header on a line of its own: servers read "j=2,h=1"
    -- (RFC 6265 allows one line), and a request's header dropped the
    -- session's `cookies`
    local function lines(r)
      local out = {}
      for _, kv in ipairs(json_of(r).header_list) do
        if kv[1] == "cookie" then out[#out + 1] = kv[2] end
      end
      return out
    end
    local s = session { headers = { Cookie = "h=1" }, cookies = { seed = "x" } }
    s:get(httpbin.url .. "/cookies/set?j=2")
    assert.same({ h = "1", j = "2", seed = "x" }, json_of(s:get(httpbin.url .. "/cookies")).cookies)
    local seen = lines(s:get(peer.url .. "/echo"))
    assert.equal(1, #seen)
    assert.equal("j=2; seed=x; h=1", seen[1]) -- (a cookie knows no port: the peer is 127.0.0.1 too)
    -- a request's Cookie header replaces the session's, the cookies stay
    seen = lines(s:get(peer.url .. "/echo", { headers = { cookie = "r=3" } }))
    assert.same({ "j=2; seed=x; r=3" }, seen)
    -- it goes where the header would go: not to another origin
    local away = json_of(s:get(httpbin.url .. "/redirect-to", { params = { url = other .. "/cookies" } }))
    assert.same({ seed = "x" }, away.cookies)
    -- an empty one replaces the session's too
    assert.same({ "j=2; seed=x" }, lines(s:get(peer.url .. "/echo", { headers = { Cookie = "" } })))
    -- checked as every header value: no header of its own can ride in it
    for _, bad in ipairs { "a=1\r\nX-Evil: 1", "a=1\0", "a\1=1", "a=\127" } do
      local ok, e = pcall(s.get, s, peer.url .. "/echo", { headers = { Cookie = bad } })
      assert.is_false(ok)
      assert.is_true(avideo.is_error(e, "invalid"), tostring(e))
      assert.matches("header 'Cookie' value contains", e.message, 1, true)
    end
    local ok, e = pcall(session, { headers = { Cookie = "a=1\nX: y" } })
    assert.is_false(ok)
    assert.matches("CR, LF or NUL", tostring(e), 1, true)
    -- clear_cookies forgets cookies, not a header
    s:clear_cookies()
    assert.same({ "h=1" }, lines(s:get(peer.url .. "/echo")))
  end)

  it("are all forgotten by clear_cookies", function()
    local s = session { cookies = { seed = "x" } }
    s:get(httpbin.url .. "/cookies/set/a/1")
    assert.equal(2, #s:cookies())
    s:clear_cookies()
    assert.same({}, s:cookies())
    assert.same({}, json_of(s:get(httpbin.url .. "/cookies")).cookies)
  end)
end)

describe("auth", function()
  it("sends Basic credentials, and a wrong password gets 401", function()
    local s = session()
    assert.equal(200, s:get(httpbin.url .. "/basic-auth/u/p", { auth = { "u", "p" } }).status)
    assert.equal(401, s:get(httpbin.url .. "/basic-auth/u/p", { auth = { "u", "x" } }).status)
    local with = session { auth = { "u", "p" } }
    assert.same({ authenticated = true, user = "u" }, json_of(with:get(httpbin.url .. "/basic-auth/u/p")))
    -- a request's auth = false drops the session's
    assert.equal(401, with:get(httpbin.url .. "/basic-auth/u/p", { auth = false }).status)
  end)

  it("answers a Digest challenge", function()
    local s = session()
    local r = s:get(httpbin.url .. "/digest-auth/auth/u/p", { auth = { "u", "p", type = "digest" } })
    assert.same({ authenticated = true, user = "u" }, json_of(r))
    assert.equal(401, s:get(httpbin.url .. "/digest-auth/auth/u/p", { auth = { "u", "x", type = "digest" } }).status)
  end)

  it("gives the final response of a Digest exchange, not the challenge before it", function()
    local r = session():get(httpbin.url .. "/digest-auth/auth/u/p", { auth = { "u", "p", type = "digest" } })
    assert.equal(200, r.status)
    assert.equal("OK", r.reason)
    assert.is_nil(r.headers["www-authenticate"])
    assert.same({ "application/json" }, r.headers:getall("content-type"))
    -- streamed: the response is the one after the challenge, with its body
    avideo.run(function()
      local s <close> = session()
      local st <close> = s:get(httpbin.url .. "/digest-auth/auth/u/p",
        { auth = { "u", "p", type = "digest" }, stream = true })
      assert.equal(200, st.status)
      assert.same({ authenticated = true, user = "u" }, st:json())
    end)
  end)

  it("stops answering a Digest server that calls every nonce stale: its 401 is the response", function()
    -- libcurl's count of re-sends was unbounded: 2,582 requests, then a
    -- header limit's error marked as a reset (so retried)
    local r = session():get(peer.url .. "/digest-stale?key=a", { auth = { "u", "p", type = "digest" } })
    local sent = json_of(avideo.get(peer.url .. "/digest-stale?key=a&count=1", { timeout = TIMEOUT }))
    assert.is_true(sent <= 3, sent)
    assert.equal(401, r.status)
    assert.matches("stale=true", r.headers["www-authenticate"], 1, true)
    assert.equal("", r:text()) -- libcurl skips the body of a challenge it answers
  end)

  it("never carries a Digest nonce from one server to the next request", function()
    -- two realms of one peer stand for two servers: each takes only its own nonces
    local a, b = session { auth = { "alice", "pw", type = "digest" } }, session { auth = { "bob", "pw", type = "digest" } }
    for _ = 1, 3 do
      assert.equal(200, a:get(peer.url .. "/digest/one").status)
      assert.equal(200, b:get(peer.url .. "/digest/two").status)
      assert.equal(200, a:get(peer.url .. "/digest/two").status)
    end
  end)

  it("forgets a Digest handle it frees on the connection it keeps alive", function()
    -- a Digest exchange's handle is freed, not pooled (its nonce), while
    -- its kept-alive connection stays watched and still named the handle:
    -- the peer closing that connection made the loop read freed memory
    -- (ASan and valgrind see it; a plain build read garbage)
    local own = peer_support.start()
    local s = session { auth = { "u", "pw", type = "digest" } }
    assert.equal(200, s:get(own.url .. "/digest/three").status)
    own.stop()
    avideo.run(function() avideo.sleep(0.3) end) -- the loop sees the close
    assert.equal(200, s:get(peer.url .. "/digest/three").status)
    s:close()
  end)

  it("takes credentials from the URL", function()
    local url = httpbin.url:gsub("^http://", "http://u:p@") .. "/basic-auth/u/p"
    assert.equal(200, session():get(url).status)
  end)

  it("is kept on a redirect within the origin and never sent to another", function()
    local s = session { auth = { "u", "p" } }
    local same = s:get(httpbin.url .. "/redirect-to", { params = { url = "/basic-auth/u/p" } })
    assert.equal(200, same.status)
    local away = s:get(httpbin.url .. "/redirect-to", { params = { url = other .. "/basic-auth/u/p" } })
    assert.equal(401, away.status)
    assert.equal(other .. "/basic-auth/u/p", away.url)
    -- nor back to the first origin after leaving it
    local back = s:get(httpbin.url .. "/redirect-to", { params = {
      url = other .. "/redirect-to?url=" .. httpbin.url .. "/basic-auth/u/p" } })
    assert.equal(401, back.status)
  end)
end)

describe("redirects", function()
  it("allow_redirects = false returns the 3xx itself", function()
    local r = session():get(httpbin.url .. "/redirect/3", { allow_redirects = false })
    assert.equal(302, r.status)
    assert.equal("/relative-redirect/2", r.headers.location)
    assert.same({}, r.history)
    local s = session { allow_redirects = false }
    assert.equal(302, s:get(httpbin.url .. "/absolute-redirect/1").status)
    assert.equal(200, s:get(httpbin.url .. "/absolute-redirect/1", { allow_redirects = true }).status)
  end)

  it("allow_redirects = false hands a stream the 3xx and its body", function()
    avideo.run(function()
      local s <close> = session()
      local r <close> = s:get(peer.url .. "/redirect-big", { allow_redirects = false, stream = true })
      assert.equal(302, r.status)
      assert.equal(300000, #r:text())
    end)
  end)

  it("keeps the history of the responses redirected from", function()
    local r = session():get(httpbin.url .. "/redirect/3")
    assert.equal(200, r.status)
    assert.equal(httpbin.url .. "/get", r.url)
    assert.equal(3, #r.history)
    assert.equal(httpbin.url .. "/redirect/3", r.history[1].url)
    assert.equal(httpbin.url .. "/relative-redirect/1", r.history[3].url)
    for _, hop in ipairs(r.history) do assert.equal(302, hop.status) end
    assert.equal("/get", r.history[3].headers.location)
    assert.equal("/get", r.history[3].headers.Location)
    local abs = session():get(httpbin.url .. "/absolute-redirect/2")
    assert.equal(2, #abs.history)
    assert.equal(httpbin.url .. "/absolute-redirect/1", abs.history[2].url)
    assert.same({}, session():get(httpbin.url .. "/get").history)
  end)

  it("max_redirects bounds them, naming the last URL", function()
    local s = session()
    assert.equal(200, s:get(httpbin.url .. "/redirect/3", { max_redirects = 3 }).status)
    local ok, err = pcall(s.get, s, httpbin.url .. "/redirect/3", { max_redirects = 2 })
    assert.is_false(ok)
    assert.equal("protocol", err.kind)
    assert.matches("too many redirects %(max_redirects = 2%)", err.message)
    assert.matches("the last URL, '" .. httpbin.url:gsub("%p", "%%%0") .. "/relative%-redirect/1', redirects to '" .. httpbin.url:gsub("%p", "%%%0") .. "/get'", err.message)
    ok, err = pcall(session { max_redirects = 0 }.get, session { max_redirects = 0 }, httpbin.url .. "/redirect/1")
    assert.is_false(ok)
    assert.matches("too many redirects", err.message)
    -- the default is 10
    assert.equal(200, s:get(httpbin.url .. "/redirect/10").status)
    assert.is_false((pcall(s.get, s, httpbin.url .. "/redirect/11")))
  end)
end)

describe("proxies", function()
  it("carry requests given proxy = URL, with proxy_auth", function()
    local s = session { proxy = nginx.url }
    local r = s:get(httpbin.url .. "/headers")
    assert.equal("nginx", r.headers["x-proxied-by"])
    assert.equal("avideo-spec", json_of(r).headers["X-Via-Proxy"])
    local authed = session { proxy = nginx.url, proxy_auth = { "pu", "pp" } }
    local seen = json_of(authed:get(httpbin.url .. "/headers")).headers["X-Proxy-Auth"]
    assert.equal("Basic cHU6cHA=", seen) -- base64 of "pu:pp"
    -- userinfo in the proxy URL works the same
    local userinfo = session { proxy = nginx.url:gsub("^http://", "http://pu:pp@") }
    assert.equal("Basic cHU6cHA=", json_of(userinfo:get(httpbin.url .. "/headers")).headers["X-Proxy-Auth"])
    -- a request's own proxy = false goes direct
    assert.is_nil(s:get(httpbin.url .. "/headers", { proxy = false }).headers["x-proxied-by"])
    -- and a request can name one for itself
    assert.equal("nginx", session():get(httpbin.url .. "/get", { proxy = nginx.url }).headers["x-proxied-by"])
    -- the session's proxy_auth goes to the session's proxy, not to
    -- another that a request names (here nginx again, under another name)
    local other = nginx.url:gsub("127%.0%.0%.1", "localhost")
    assert.are_not.equal(nginx.url, other)
    local h = json_of(authed:get(httpbin.url .. "/headers", { proxy = other })).headers
    assert.equal("avideo-spec", h["X-Via-Proxy"])
    assert.is_nil(h["X-Proxy-Auth"])
    h = json_of(authed:get(httpbin.url .. "/headers", { proxy = other, proxy_auth = { "pu", "pp" } })).headers
    assert.equal("Basic cHU6cHA=", h["X-Proxy-Auth"])
    -- the session's own proxy named again keeps them
    h = json_of(authed:get(httpbin.url .. "/headers", { proxy = nginx.url })).headers
    assert.equal("Basic cHU6cHA=", h["X-Proxy-Auth"])
  end)

  it("tunnel https through CONNECT, with proxy_auth, the proxy's answer not the response's", function()
    local s = session { proxy = peer.connect_proxy, proxy_auth = { "pu", "pp" }, ca_file = peer.tls_cert }
    local r = s:get(peer.tls .. "/status/404")
    assert.equal(404, r.status)
    assert.equal("Not Found", r.reason)
    assert.is_nil(r.headers["proxy-agent"]) -- the CONNECT answer's header
    assert.equal(1, #r.headers:getall("content-length"))
    local seen = json_of(avideo.get(peer.url .. "/connect-seen", { timeout = TIMEOUT }))
    assert.equal(peer.tls:match("//(.*)$"), seen[#seen].target)
    assert.equal("Basic cHU6cHA=", seen[#seen].auth)
    -- a session with other proxy credentials never rides that tunnel
    local other_s = session { proxy = peer.connect_proxy, proxy_auth = { "x", "y" }, ca_file = peer.tls_cert }
    assert.equal(200, other_s:get(peer.tls .. "/status/200").status)
    seen = json_of(avideo.get(peer.url .. "/connect-seen", { timeout = TIMEOUT }))
    assert.equal("Basic eDp5", seen[#seen].auth) -- base64 of "x:y"
    -- streamed too: the response is the one through the tunnel
    avideo.run(function()
      local st <close> = s:get(peer.tls .. "/status/404", { stream = true })
      assert.equal(404, st.status)
      assert.is_nil(st.headers["proxy-agent"])
    end)
  end)

  it("fail as connect errors when the proxy is not there", function()
    local port = require("socket").bind("127.0.0.1", 0)
    local _, p = port:getsockname()
    port:close()
    local ok, err = pcall(function() return session { proxy = "http://127.0.0.1:" .. p }:get(httpbin.url .. "/get") end)
    assert.is_false(ok)
    assert.equal("connect", err.kind)
  end)

  it("come from the environment as curl and requests read it", function()
    assert.equal("direct", via_proxy(""))
    assert.equal("proxied", via_proxy("http_proxy=" .. nginx.url))
    assert.equal("proxied", via_proxy("HTTP_PROXY=" .. nginx.url))
    assert.equal("proxied", via_proxy("all_proxy=" .. nginx.url))
    -- "host:port" alone is an HTTP proxy
    assert.equal("proxied", via_proxy("http_proxy=" .. nginx.url:gsub("^http://", "")))
    -- a CGI program's HTTP_PROXY can come from a request header (httpoxy)
    assert.equal("direct", via_proxy("REQUEST_METHOD=GET HTTP_PROXY=" .. nginx.url))
    assert.equal("direct", via_proxy("no_proxy=127.0.0.1 http_proxy=" .. nginx.url))
    assert.equal("direct", via_proxy("NO_PROXY=* http_proxy=" .. nginx.url))
    -- the https proxy is not the http one
    assert.equal("direct", via_proxy("https_proxy=" .. nginx.url))
    -- proxy = false ignores the environment
    assert.equal("direct", via_proxy("http_proxy=" .. nginx.url, "{ proxy = false, timeout = 10 }"))
  end)

  it("from the environment are checked, naming the variable", function()
    local out = via_proxy("http_proxy=ftp://127.0.0.1:1")
    assert.matches("avideo.invalid error: the environment's http_proxy must be an http://", out, 1, true)
  end)
end)

describe("bad client options", function()
  local url
  before_each(function() url = httpbin.url .. "/get" end)
  it("auth", function()
    invalid(function() session { auth = "u:p" } end, "auth must be { user, password }, got string")
    invalid(function() session { auth = { "u" } } end, "auth's password %(item 2%) must be a string")
    invalid(function() session { auth = { "u", "p", kind = "basic" } } end, "unknown field 'kind' in auth")
    invalid(function() session { auth = { "u", "p", type = "ntlm" } } end, 'auth type must be "basic" or "digest"')
    invalid(function() session { auth = { "a:b", "p" } } end, "must not contain ':'")
    invalid(function() session { auth = { "u", "p\0q" } } end, "NUL")
    invalid(function() session { auth = false } end, "auth must be")
    invalid(function() session():get(url, { auth = { 1, 2 } }) end, "auth's user %(item 1%) must be a string")
  end)
  it("proxy and proxy_auth", function()
    invalid(function() session { proxy = "ftp://h:1" } end, "proxy must be an http://")
    invalid(function() session { proxy = "http://" } end, "proxy has no host")
    invalid(function() session { proxy = 3128 } end, "proxy must be a string")
    invalid(function() session { proxy = true } end, "proxy must be a string")
    invalid(function() session { proxy_auth = { "u" } } end, "proxy_auth's password")
    invalid(function() session():get(url, { proxy = "gopher://x" }) end, "proxy must be an http://")
  end)
  it("cookies and cookie_jar", function()
    invalid(function() session { cookies = "a=b" } end, "cookies must be a table")
    invalid(function() session { cookies = { ["a b"] = "1" } } end, "cookies names must be tokens")
    invalid(function() session { cookies = { a = "1;b=2" } } end, "cookie 'a' has a character")
    invalid(function() session { cookies = { a = {} } } end, "cookie 'a' must be a string or number")
    invalid(function() session():get(url, { cookies = { [1] = "x" } }) end, "cookies names must be tokens")
    invalid(function() session { cookie_jar = "no" } end, "cookie_jar")
  end)
  it("allow_redirects and max_redirects", function()
    invalid(function() session { allow_redirects = "no" } end, "allow_redirects must be a boolean")
    invalid(function() session { max_redirects = -1 } end, "max_redirects must be a whole number")
    invalid(function() session { max_redirects = 1.5 } end, "max_redirects must be a whole number")
    invalid(function() session():get(url, { max_redirects = 1e6 }) end, "max_redirects must be a whole number")
  end)
end)
