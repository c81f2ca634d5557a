-- Protocol hardening: where libcurl 7.88 alone would be too lenient, and
-- where a user could tell the difference. Each case runs against the test
-- peer (spec/support/peer.py), which misbehaves on request.
local avideo = require "avideo"
local peer_support = require "support.peer"
local raises = require "support.raises"
local settled = require "support.settled"

local function peer_stats(peer)
  return avideo.get(peer.url .. "/stats"):json()
end

describe("protocol", function()
  local peer
  lazy_setup(function() peer = peer_support.start() end)
  lazy_teardown(function() peer.stop() end)
  after_each(function() settled() end)

  describe("an idle kept-alive connection", function()
    -- n requests in turn on one connection's worth of limit, each answer
    -- followed 10 ms later by `fault`; the ids the answers carry
    local function ids_after(fault, n)
      return avideo.run(function()
        local s <close> = avideo.session { limit_per_host = 1 }
        local got = {}
        for i = 1, n do
          got[i] = s:get(peer.url .. "/chaos", { params = { id = i, fault = fault, ms = 10 } }):json().id
          avideo.sleep(0.1) -- the connection idles while the fault comes
        end
        return got
      end)
    end

    it("that receives unsolicited bytes is not reused: each answer reaches its own request", function()
      -- the bytes look like another answer
      assert.are.same({ "1", "2", "3", "4" }, ids_after("junk", 4))
    end)

    it("that the server closed is not reused", function()
      assert.are.same({ "1", "2", "3" }, ids_after("close", 3))
    end)

    it("that stays quiet is reused", function()
      avideo.run(function()
        local s <close> = avideo.session { limit_per_host = 1 }
        s:post(peer.url .. "/reset-stats")
        for i = 1, 5 do
          assert.are.equal(tostring(i), s:get(peer.url .. "/chaos", { params = { id = i } }):json().id)
          avideo.sleep(0.02)
        end
      end)
      assert.are.equal(1, peer_stats(peer).connections)
    end)
  end)

  describe("the sock_read timeout", function()
    -- 32 MiB read by the peer at 16 MiB/s: about 2 s of upload, of which
    -- loopback's socket buffers (a few MiB) hide only the last quarter
    local body = ("0123456789abcdef"):rep(2 * 1024 * 1024)
    local rate = 16 * 1024 * 1024

    it("does not run while the request body is still being sent", function()
      local t0 = avideo.now()
      local r = avideo.post(peer.small_buffer .. "/slow-reader?rate=" .. rate, {
        data = body, timeout = { sock_read = 0.75, total = 30 } })
      local took = avideo.now() - t0
      assert.are.equal(#body, r:json().read)
      assert.is_true(took > 1.5, "the upload should have taken longer than sock_read, took " .. took)
    end)

    it("does not run while a multipart body is still being sent", function()
      local t0 = avideo.now()
      local r = avideo.post(peer.small_buffer .. "/slow-reader?rate=" .. rate, {
        files = { f = body }, timeout = { sock_read = 0.75, total = 30 } })
      local took = avideo.now() - t0
      assert.is_true(r:json().read > #body)
      assert.is_true(took > 1.5, "the upload should have taken longer than sock_read, took " .. took)
    end)

    it("starts once the body is sent", function()
      local t0 = avideo.now()
      local e = raises("timeout", "sock_read timeout", avideo.post,
        peer.small_buffer .. "/slow-reader?stall_ms=5000&rate=" .. rate,
        { data = body, timeout = { sock_read = 0.75, total = 30 } })
      local took = avideo.now() - t0
      assert.are.equal("sock_read", e.phase)
      -- at least 1.75 s of sending, then 0.75 s of silence; the error
      -- itself shows the clock ran (the peer would answer after 5 s)
      assert.is_true(took >= 1.5 + 0.75, "took " .. took)
    end)
  end)

  describe("URLs", function()
    it("with a NUL byte are refused, never cut short", function()
      raises("invalid", "NUL", avideo.get, peer.url .. "/echo\0/evil")
      raises("invalid", "NUL", avideo.get, "http://127.0.0.1:" .. peer.port .. "\0.evil.example/echo")
      raises("invalid", "NUL", avideo.request, "GET", peer.url .. "/echo?a=\0")
    end)

    it("with an international host name go out in its ASCII form", function()
      local r = avideo.get("http://bücher.localhost:" .. peer.port .. "/echo")
      assert.are.equal(200, r.status)
      assert.are.equal("xn--bcher-kva.localhost:" .. peer.port, r:json().headers.host)
      assert.matches("^http://xn%-%-bcher%-kva%.localhost:", r.url)
    end)

    it("with a host name that is not valid IDNA are refused up front", function()
      raises("invalid", "host name", avideo.get, "http://a\u{FFFF}b.localhost:" .. peer.port .. "/echo")
    end)
  end)

  describe("a response", function()
    it("that is a status line alone is a protocol error", function()
      raises("protocol", "header", avideo.get, peer.url .. "/status-only")
    end)

    it("whose header block is cut short is a protocol error", function()
      raises("protocol", "header", avideo.get, peer.url .. "/headers-cut")
    end)

    it("with two different Content-Length values is a protocol error", function()
      raises("protocol", "Content%-Length", avideo.get, peer.url .. "/two-lengths")
    end)

    it("with both Content-Length and Transfer-Encoding is a protocol error", function()
      raises("protocol", "both Content%-Length and Transfer%-Encoding", avideo.get, peer.url .. "/length-and-chunked")
    end)

    it("with the same Content-Length repeated is read as that length", function()
      assert.are.equal("hello", avideo.get(peer.url .. "/same-lengths"):text())
    end)

    it("that is only an interim 1xx says so", function()
      raises("protocol", "interim 100 response", avideo.get, peer.url .. "/interim-only")
    end)

    it("whose status line has two spaces after the version is read, streamed too", function()
      -- the stream was never handed over, and its body was dropped: 200 ""
      assert.are.equal("hello", avideo.get(peer.url .. "/two-spaces"):text())
      avideo.run(function()
        local r <close> = avideo.get(peer.url .. "/two-spaces", { stream = true })
        assert.are.equal(200, r.status)
        assert.are.equal("hello", r:text())
      end)
    end)

    it("with a bare CR in a header has no header of the CR's making; a folded line continues its header", function()
      local r = avideo.get(peer.url .. "/bare-cr")
      assert.are.equal("foo Set-Cookie: evil=1", r.headers["x-a"])
      assert.is_nil(r.headers["set-cookie"])
      assert.are.equal("one two", r.headers["x-fold"])
      assert.are.equal("hi", r:text())
    end)

    it("that is a 401 without a Digest challenge is the response of a Digest request, body and all", function()
      local auth = { "u", "p", type = "digest" }
      local r = avideo.get(peer.url .. "/basic-only", { auth = auth })
      assert.are.equal(401, r.status)
      assert.are.equal("denied", r:text())
      avideo.run(function()
        local st <close> = avideo.get(peer.url .. "/basic-only", { auth = auth, stream = true })
        assert.are.equal(401, st.status)
        assert.are.equal("denied", st:text()) -- was "": held for an answer libcurl never sent
      end)
    end)

    it("with a malformed chunked body is the server's protocol error, not a reset to send again", function()
      -- libcurl's CURLE_BAD_FUNCTION_ARGUMENT: it was `invalid`, which says the caller erred
      raises("protocol", "chunk", avideo.get, peer.url .. "/bad-trailer")
      local s <close> = avideo.session { retry = { attempts = 3, backoff = 0 } }
      local e = raises("protocol", "hexadecimal", s.get, s, peer.url .. "/bad-chunk")
      assert.is_nil(e.cause) -- was "reset", and each retry got the same answer
      assert.are.equal(0, e.retries)
    end)

    it("with a header block over 256 KiB says so in avideo's words", function()
      raises("protocol", "response header block larger than 262144 bytes", avideo.get, peer.url .. "/many-headers")
    end)

    it("with a header line over libcurl's limit says the header is too large", function()
      local e = raises("protocol", "header", avideo.get, peer.url .. "/big-header")
      assert.not_matches("[Mm]emory", tostring(e))
    end)
  end)

  describe("a redirect that drops the body", function()
    it("drops the headers that described it (POST turned GET by a 302)", function()
      local r = avideo.post(peer.url .. "/redirect/302?to=/echo", {
        json = { a = 1 }, headers = { ["Content-Encoding"] = "identity", ["X-Keep"] = "yes" } })
      local seen = r:json()
      assert.are.equal("GET", seen.method)
      assert.are.equal("", seen.body)
      assert.is_nil(seen.headers["content-type"])
      assert.is_nil(seen.headers["content-length"])
      assert.is_nil(seen.headers["content-encoding"])
      assert.are.equal("yes", seen.headers["x-keep"])
    end)

    it("drops them for a PUT turned GET by a 303", function()
      local seen = avideo.put(peer.url .. "/redirect/303?to=/echo", {
        data = "abc", headers = { ["Content-Type"] = "text/plain" } }):json()
      assert.are.equal("GET", seen.method)
      assert.is_nil(seen.headers["content-type"])
    end)

    it("keeps them when the body is sent again (307)", function()
      local seen = avideo.post(peer.url .. "/redirect/307?to=/echo", {
        data = "abc", headers = { ["Content-Type"] = "text/plain" } }):json()
      assert.are.equal("POST", seen.method)
      assert.are.equal("abc", seen.body)
      assert.are.equal("text/plain", seen.headers["content-type"])
    end)
  end)

  describe("framing headers given by the user", function()
    it("a Content-Length that disagrees with the body is refused", function()
      raises("invalid", "Content%-Length", avideo.post, peer.url .. "/echo",
        { data = "hello", headers = { ["Content-Length"] = "10" } })
      raises("invalid", "Content%-Length", avideo.get, peer.url .. "/echo",
        { headers = { ["content-length"] = "3" } })
    end)

    it("a Content-Length equal to the body's is sent as it is", function()
      local seen = avideo.post(peer.url .. "/echo", { data = "hello", headers = { ["Content-Length"] = "5" } }):json()
      assert.are.equal("hello", seen.body)
      assert.are.equal("5", seen.headers["content-length"])
    end)

    it("Transfer-Encoding is refused: avideo frames the body", function()
      raises("invalid", "Transfer%-Encoding", avideo.post, peer.url .. "/echo",
        { data = "hello", headers = { ["Transfer-Encoding"] = "chunked" } })
    end)

    it("in a session's headers either is refused", function()
      raises("invalid", "Content%-Length", avideo.session, { headers = { ["Content-Length"] = "0" } })
      raises("invalid", "Transfer%-Encoding", avideo.session, { headers = { ["Transfer-Encoding"] = "chunked" } })
    end)
  end)
end)
