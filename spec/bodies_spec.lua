-- Request bodies (issue 15, the part with no C change): `data` as a
-- string goes byte for byte as application/octet-stream, `data` as a table
-- is a form encoded exactly as `params` encodes its query, a Content-Type
-- given by the request or the session wins, and what neither can encode is
-- refused naming the key, before anything is sent. Round trips go through
-- a real httpbin under gunicorn; the test peer counts connections and
-- shows the header lines as they arrived.
local avideo = require "avideo"
local httpbin_support = require "support.httpbin"
local peer_support = require "support.peer"
local settled = require "support.settled"

-- Every request is bounded: a hung server fails the spec, not the run.
local TIMEOUT = 10

-- httpbin shows a body that is not UTF-8 as a data: URL in base64.
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64_decode(s)
  local out, bits, nbits = {}, 0, 0
  for c in s:gmatch("[^=]") do
    bits = bits * 64 + (B64:find(c, 1, true) - 1)
    nbits = nbits + 6
    if nbits >= 8 then
      nbits = nbits - 8
      out[#out + 1] = string.char(bits // (1 << nbits))
      bits = bits % (1 << nbits)
    end
  end
  return table.concat(out)
end

-- The body httpbin saw, as bytes.
local function body_seen(echo)
  local b64 = echo.data:match("^data:application/octet%-stream;base64,(.*)$")
  return b64 and base64_decode(b64) or echo.data
end

-- Every Content-Type line the peer received.
local function content_types(echo)
  local seen = {}
  for _, kv in ipairs(echo.header_list) do
    if kv[1] == "content-type" then seen[#seen + 1] = kv[2] end
  end
  return seen
end

-- A fresh directory for each test of a describe block, and write(name,
-- bytes) -> the path of a new file in it.
local function temp_dir()
  local t = {}
  before_each(function() t.dir = assert(io.popen("mktemp -d"):read("l")) end)
  after_each(function() os.execute("rm -rf " .. t.dir) end)
  function t.write(name, bytes)
    local path = t.dir .. "/" .. name
    local f = assert(io.open(path, "wb"))
    f:write(bytes)
    f:close()
    return path
  end
  return t
end

local function refused(f, mention)
  local ok, e = pcall(f)
  assert.is_false(ok, "no error")
  assert.is_true(avideo.is_error(e, "invalid"), "not an invalid error: " .. tostring(e))
  assert.is_truthy(tostring(e):find(mention, 1, true), "message does not mention " .. mention .. ": " .. tostring(e))
  assert.is_nil(tostring(e):find("[\r\n]"), "not one line: " .. tostring(e))
  return e
end

describe("request bodies", function()
  local httpbin, peer
  lazy_setup(function()
    httpbin = httpbin_support.start()
    peer = peer_support.start()
  end)
  lazy_teardown(function()
    if httpbin then httpbin.stop() end
    if peer then peer.stop() end
  end)
  after_each(function() settled() end)

  describe("data as a string", function()
    it("arrives byte for byte, binary bytes and NULs included, as application/octet-stream", function()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local body = table.concat(bytes) .. "\0\0\0" .. table.concat(bytes):reverse() .. "\0"
      local seen = avideo.post(httpbin.url .. "/post", { data = body, timeout = TIMEOUT }):raise_for_status():json()
      assert.are.equal(body, body_seen(seen))
      assert.are.equal("application/octet-stream", seen.headers["Content-Type"])
      assert.are.equal(tostring(#body), seen.headers["Content-Length"])
      assert.are.same({}, seen.form) -- never read as a form
    end)

    it("arrives as is when it is valid UTF-8 holding NULs, and for PUT and PATCH too", function()
      for _, verb in ipairs { "put", "patch" } do
        local body = "a\0b\0\0ü=1&c=2"
        local seen = avideo[verb](httpbin.url .. "/" .. verb, { data = body, timeout = TIMEOUT }):raise_for_status():json()
        assert.are.equal(body, seen.data, verb)
        assert.are.equal("application/octet-stream", seen.headers["Content-Type"], verb)
        assert.are.same({}, seen.form, verb)
      end
    end)

    it("absent from a POST sends no Content-Type (not libcurl's form default), and Content-Length: 0", function()
      local seen = avideo.post(peer.url .. "/echo", { timeout = TIMEOUT }):json()
      assert.are.same({}, content_types(seen))
      assert.are.equal("0", seen.headers["content-length"])
      seen = avideo.post(peer.url .. "/echo", { headers = { ["X-A"] = "1" }, timeout = TIMEOUT }):json()
      assert.are.same({}, content_types(seen))
      seen = avideo.post(peer.url .. "/echo", { headers = { ["Content-Type"] = "text/x" }, timeout = TIMEOUT }):json()
      assert.are.same({ "text/x" }, content_types(seen))
    end)

    it("may be empty: an empty body, still application/octet-stream", function()
      local seen = avideo.post(peer.url .. "/echo", { data = "", timeout = TIMEOUT }):json()
      assert.are.equal("", seen.body)
      assert.are.same({ "application/octet-stream" }, content_types(seen))
      assert.are.equal("0", seen.headers["content-length"])
    end)
  end)

  describe("data as avideo.file(path)", function()
    local tmp = temp_dir()
    local write = tmp.write

    it("is read from disk as it goes out, byte for byte, with its Content-Length", function()
      local chunk = {}
      for i = 0, 255 do chunk[#chunk + 1] = string.char(i) end
      local bytes = table.concat(chunk):rep(300) .. "\0\0"
      local path = write("b.bin", bytes)
      local seen = avideo.post(httpbin.url .. "/post", { data = avideo.file(path), timeout = TIMEOUT })
        :raise_for_status():json()
      assert.are.equal(bytes, body_seen(seen))
      assert.are.equal(tostring(#bytes), seen.headers["Content-Length"])
      assert.are.equal("application/octet-stream", seen.headers["Content-Type"])
      -- its content_type, a PUT, and a 307 that sends it again from its start
      local txt = write("t.txt", "hello file")
      seen = avideo.put(httpbin.url .. "/put", { data = avideo.file(txt, { content_type = "text/plain" }),
        timeout = TIMEOUT }):json()
      assert.are.equal("hello file", seen.data)
      assert.are.equal("text/plain", seen.headers["Content-Type"])
      seen = avideo.post(httpbin.url .. "/redirect-to", { params = { url = "/post", status_code = 307 },
        data = avideo.file(txt), timeout = TIMEOUT }):json()
      assert.are.equal("hello file", seen.data)
    end)

    it("goes out at the length it had when the request was made, even if it grows or shrinks", function()
      -- each request waits for the one slot while its file changes
      local path = tmp.write("g.bin", ("A"):rep(100))
      local seen, err
      avideo.run(function()
        local s <close> = avideo.session { limit = 1, timeout = TIMEOUT }
        local hold = avideo.spawn(function() s:get(peer.url .. "/hold?ms=300") end)
        local post = avideo.spawn(function() seen = s:post(peer.url .. "/echo", { data = avideo.file(path) }):json() end)
        avideo.sleep(0.1)
        local f = assert(io.open(path, "ab"))
        f:write("GET /smuggled HTTP/1.1\r\n\r\n")
        f:close()
        avideo.gather { hold, post }
        local shrink = tmp.write("s.bin", ("B"):rep(100))
        hold = avideo.spawn(function() s:get(peer.url .. "/hold?ms=300") end)
        post = avideo.spawn(function()
          local ok, e = pcall(s.post, s, peer.url .. "/echo", { data = avideo.file(shrink) })
          err = not ok and e
        end)
        avideo.sleep(0.1)
        f = assert(io.open(shrink, "wb"))
        f:write("short")
        f:close()
        avideo.gather { hold, post }
      end)
      assert.are.equal(("A"):rep(100), seen.body)
      assert.is_true(avideo.is_error(err, "invalid"), tostring(err))
      assert.matches("shrank", err.message)
    end)

    it("is refused before anything is sent when it cannot be read", function()
      local before = avideo.get(peer.url .. "/stats", { timeout = TIMEOUT }):json().connections
      refused(function() avideo.post(peer.url .. "/echo", { data = avideo.file(tmp.dir .. "/missing") }) end, "missing")
      refused(function() avideo.post(peer.url .. "/echo", { data = avideo.file(tmp.dir) }) end, "not a regular file")
      refused(function() avideo.file(42) end, "path")
      refused(function() avideo.file("x", { size = 1 }) end, "unknown option 'size'")
      assert.are.equal(before, avideo.get(peer.url .. "/stats", { timeout = TIMEOUT }):json().connections)
    end)
  end)

  describe("data as a function", function()
    it("is sent chunked, piece by piece, the function waiting as it likes", function()
      local parts = { "hello ", "from ", "a ", "function" }
      local i = 0
      local seen = avideo.post(httpbin.url .. "/post", {
        data = function() i = i + 1; return parts[i] end, timeout = TIMEOUT }):raise_for_status():json()
      assert.are.equal("hello from a function", seen.data)
      assert.are.equal("chunked", seen.headers["Transfer-Encoding"])
      assert.are.equal("application/octet-stream", seen.headers["Content-Type"])
      avideo.run(function()
        local s <close> = avideo.session { limit = 1, timeout = { total = TIMEOUT, sock_read = 0.2 } }
        local n = 0
        -- slower than sock_read between pieces: the body is still being sent
        local r = s:put(httpbin.url .. "/put", { data = function()
          n = n + 1
          avideo.sleep(0.3)
          if n <= 3 then return ("x"):rep(100000) end
        end })
        assert.are.equal(300000, #r:json().data)
        assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
      end)
    end)

    it("ends the transfer and raises the function's error, or a wrong piece's", function()
      avideo.run(function()
        local s <close> = avideo.session { limit = 1, timeout = TIMEOUT }
        local ok, e = pcall(s.post, s, httpbin.url .. "/post", { data = function() error("boom", 0) end })
        assert.is_false(ok)
        assert.are.equal("boom", e)
        assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
        e = refused(function() s:post(httpbin.url .. "/post", { data = function() return 5 end }) end, "got number")
        assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
        refused(function()
          s:post(httpbin.url .. "/post", { data = function() end, headers = { ["Content-Length"] = "0" } })
        end, "Content-Length")
      end)
    end)

    it("is not sent again: a 307 or 308 is the response", function()
      local r = avideo.post(httpbin.url .. "/redirect-to", { params = { url = "/post", status_code = 307 },
        data = function() end, timeout = TIMEOUT })
      assert.are.equal(307, r.status)
    end)
  end)

  describe("files: multipart/form-data", function()
    local tmp = temp_dir()
    local write = tmp.write

    -- httpbin shows a file part that is not UTF-8 as a data: URL in base64
    local function file_seen(v)
      local b64 = v:match("^data:[^;]*;base64,(.*)$")
      return b64 and base64_decode(b64) or v
    end

    it("round-trips two files and fields through httpbin, byte for byte", function()
      local chunk = {}
      for i = 0, 255 do chunk[#chunk + 1] = string.char(i) end
      local binary = table.concat(chunk):rep(40) .. "\0"
      local a = write("a.bin", binary)
      local seen = avideo.post(httpbin.url .. "/post", {
        files = { first = avideo.file(a, { filename = "one.bin", content_type = "application/x-one" }),
                  second = "inline text\r\n--not a boundary" },
        data = { title = "talk", tags = { "lua", "async" } },
        timeout = TIMEOUT }):raise_for_status():json()
      assert.are.equal(binary, file_seen(seen.files.first))
      assert.are.equal("inline text\r\n--not a boundary", seen.files.second)
      assert.are.equal("talk", seen.form.title)
      assert.are.same({ "lua", "async" }, seen.form.tags)
      assert.matches("^multipart/form%-data; boundary=", seen.headers["Content-Type"])
      -- a 307 sends it all again, files from their start
      seen = avideo.post(httpbin.url .. "/redirect-to", { params = { url = "/post", status_code = 307 },
        files = { first = avideo.file(a) }, timeout = TIMEOUT }):json()
      assert.are.equal(binary, file_seen(seen.files.first))
    end)

    it("fails with the cause when a file part is gone by the time the request runs", function()
      local path = tmp.write("gone.bin", "soon gone")
      local err
      avideo.run(function()
        local s <close> = avideo.session { limit = 1, timeout = TIMEOUT }
        local hold = avideo.spawn(function() s:get(peer.url .. "/hold?ms=200") end)
        local post = avideo.spawn(function()
          local ok, e = pcall(s.post, s, peer.url .. "/echo", { files = { f = avideo.file(path) } })
          err = not ok and e
        end)
        avideo.sleep(0.05)
        os.remove(path)
        avideo.gather { hold, post }
        assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
      end)
      assert.is_true(avideo.is_error(err, "invalid"), tostring(err))
      assert.matches("multipart body", err.message)
    end)

    it("refuses what it cannot send, before anything is sent", function()
      local before = avideo.get(peer.url .. "/stats", { timeout = TIMEOUT }):json().connections
      local url = peer.url .. "/echo"
      refused(function() avideo.post(url, { files = { f = avideo.file(tmp.dir .. "/missing") } }) end, "files field 'f'")
      refused(function() avideo.post(url, { files = { f = 42 } }) end, "files field 'f'")
      -- a file part is checked as a file body is: a directory would fail
      -- mid-upload, and opening a FIFO would block the whole loop
      refused(function() avideo.post(url, { files = { f = avideo.file(tmp.dir) } }) end, "not a regular file")
      local fifo = tmp.dir .. "/fifo"
      assert(os.execute("mkfifo " .. fifo), "mkfifo failed")
      refused(function() avideo.post(url, { files = { f = avideo.file(fifo) } }) end, "not a regular file")
      os.remove(fifo)
      -- a file object beside files, or as params, is no table of fields
      local file = tmp.dir .. "/part.txt"
      local f = assert(io.open(file, "w"))
      f:write("x")
      f:close()
      refused(function() avideo.post(url, { files = { f = "x" }, data = avideo.file(file) }) end, "a file goes in files")
      refused(function() avideo.get(url, { params = avideo.file(file) }) end, "params must be a table of fields")
      os.remove(file)
      refused(function() avideo.post(url, { files = { f = "x" }, json = {} }) end, "json or files")
      refused(function() avideo.post(url, { files = { f = "x" }, data = "raw" }) end, "data beside files")
      refused(function() avideo.post(url, { files = { [1] = "x" } }) end, "files field names must be strings")
      refused(function() avideo.post(url, { files = { f = "x" }, data = { a = { b = 1 } } }) end, "data field 'a'")
      refused(function() avideo.post(url, { files = { f = "x" }, headers = { ["Content-Length"] = "0" } }) end,
        "Content-Length")
      assert.are.equal(before, avideo.get(peer.url .. "/stats", { timeout = TIMEOUT }):json().connections)
    end)
  end)

  describe("data as a table", function()
    local fields = {
      text = "x y&z=1+2%ü", list = { 1, 2.5, "three" }, yes = true, no = false,
      int = 42, float = 0.1, ["a key"] = "v", empty = "",
    }

    it("round-trips through httpbin's form", function()
      local seen = avideo.post(httpbin.url .. "/post", { data = fields, timeout = TIMEOUT }):raise_for_status():json()
      assert.are.same({
        text = "x y&z=1+2%ü", list = { "1", "2.5", "three" }, yes = "true", no = "false",
        int = "42", float = "0.1", ["a key"] = "v", empty = "",
      }, seen.form)
      assert.are.equal("application/x-www-form-urlencoded", seen.headers["Content-Type"])
      assert.are.equal("", seen.data)
    end)

    it("is encoded exactly as params encodes its query, names sorted", function()
      local form = avideo.post(peer.url .. "/echo", { data = fields, timeout = TIMEOUT }):json()
      -- the URL sent, as the response has it: the peer shows the query decoded
      local sent = avideo.get(peer.url .. "/echo", { params = fields, timeout = TIMEOUT }).url
      assert.are.equal(sent:match("%?(.*)$"), form.body)
      assert.are.equal("a%20key=v&empty=&float=0.1&int=42&list=1&list=2.5&list=three&no=false"
        .. "&text=x%20y%26z%3D1%2B2%25%C3%BC&yes=true", form.body)
      assert.are.same({ "application/x-www-form-urlencoded" }, content_types(form))
    end)

    it("may be empty: an empty form", function()
      local seen = avideo.post(peer.url .. "/echo", { data = {}, timeout = TIMEOUT }):json()
      assert.are.equal("", seen.body)
      assert.are.same({ "application/x-www-form-urlencoded" }, content_types(seen))
    end)

    it("goes with every verb, from tasks at once", function()
      local got = avideo.run(function()
        local s <close> = avideo.session { timeout = TIMEOUT }
        return avideo.gather(
          function() return s:post(httpbin.url .. "/post", { data = { n = 1 } }):json().form end,
          function() return s:put(httpbin.url .. "/put", { data = { n = 2 } }):json().form end,
          function() return s:patch(httpbin.url .. "/patch", { data = { n = 3 } }):json().form end,
          function() return s:request("DELETE", httpbin.url .. "/delete", { data = { n = 4 } }):json().form end)
      end)
      assert.are.same({ { n = "1" }, { n = "2" }, { n = "3" }, { n = "4" } }, got)
    end)
  end)

  describe("a Content-Type given", function()
    it("by the request wins over the string's, in any case, and goes once", function()
      local seen = avideo.post(peer.url .. "/echo", { data = "<a/>", headers = { ["content-TYPE"] = "text/xml" },
        timeout = TIMEOUT }):json()
      assert.are.same({ "text/xml" }, content_types(seen))
      assert.are.equal("<a/>", seen.body)
    end)

    it("by the request wins over the form's: the encoded form goes under that type", function()
      local seen = avideo.post(httpbin.url .. "/post", { data = { a = "1 2" }, timeout = TIMEOUT,
        headers = { ["Content-Type"] = "text/plain" } }):json()
      assert.are.equal("text/plain", seen.headers["Content-Type"])
      assert.are.equal("a=1%202", seen.data)
      assert.are.same({}, seen.form)
    end)

    it("by the session wins too, for strings, forms and JSON", function()
      avideo.run(function()
        local s <close> = avideo.session { headers = { ["Content-Type"] = "application/x-custom" }, timeout = TIMEOUT }
        for _, opts in ipairs { { data = "x" }, { data = { a = 1 } }, { json = { a = 1 } } } do
          assert.are.same({ "application/x-custom" }, content_types(s:post(peer.url .. "/echo", opts):json()))
        end
      end)
    end)
  end)

  describe("params", function()
    it("keep a list value as the name repeated, and an empty list as nothing", function()
      local seen = avideo.get(httpbin.url .. "/get", { params = { a = { 1, 2 }, b = {}, c = "x" },
        timeout = TIMEOUT }):json()
      assert.are.same({ a = { "1", "2" }, c = "x" }, seen.args)
    end)
  end)

  describe("refuses with an invalid error naming the key, and sends nothing", function()
    local url
    local cases = {
      { "params with a nested table", function() avideo.get(url, { params = { a = { b = 1 } } }) end, "param 'a'" },
      { "params with a list of pairs", function() avideo.get(url, { params = { { "b", 1 } } }) end, "item 1" },
      { "params with a list of pairs beside a field", function()
        avideo.get(url, { params = { a = 1, { "b", 1 } } })
      end, "not a list of pairs" },
      { "params with a list holding a table", function() avideo.get(url, { params = { a = { 1, { 2 } } } }) end, "param 'a'" },
      { "params with a list that has a name too", function()
        avideo.get(url, { params = { a = { 1, 2, x = 3 } } })
      end, "param 'a'" },
      { "params with a boolean name", function() avideo.get(url, { params = { [true] = 1 } }) end, "param names" },
      { "data a coroutine", function() avideo.post(url, { data = coroutine.create(print) }) end, "data must be a string" },
      { "data a userdata", function() avideo.post(url, { data = io.stdout }) end, "data must be a string" },
      { "data a number", function() avideo.post(url, { data = 5 }) end, "data must be a string" },
      { "data a boolean", function() avideo.post(url, { data = true }) end, "data must be a string" },
      { "data with a nested table", function() avideo.post(url, { data = { a = { b = 1 } } }) end, "data field 'a'" },
      { "data with a function value", function() avideo.post(url, { data = { f = print } }) end, "data field 'f'" },
      { "data with NaN", function() avideo.post(url, { data = { n = 0 / 0 } }) end, "data field 'n'" },
      { "data with a list of pairs", function() avideo.post(url, { data = { { "a", 1 } } }) end, "data must be" },
      { "data with a table name", function() avideo.post(url, { data = { [{}] = 1 } }) end, "data field names" },
      { "data and json", function() avideo.post(url, { data = "x", json = { a = 1 } }) end, "give json or data" },
      { "a data table and json", function() avideo.post(url, { data = { a = 1 }, json = 1 }) end, "give json or data" },
    }

    it("for each case", function()
      url = peer.url .. "/echo"
      local before = avideo.get(peer.url .. "/stats", { timeout = TIMEOUT }):json().connections
      for _, case in ipairs(cases) do
        local name, f, mention = case[1], case[2], case[3]
        local ok, e = pcall(refused, f, mention)
        assert(ok, name .. ": " .. tostring(e))
      end
      -- the only new connection is the one that asks for the stats again
      local after = avideo.get(peer.url .. "/stats", { timeout = TIMEOUT }):json().connections
      assert.is_true(after - before <= 1)
    end)

    it("and the caller's table is left as it was", function()
      local data = { a = { b = 1 }, c = "x" }
      refused(function() avideo.post(peer.url .. "/echo", { data = data }) end, "data field 'a'")
      assert.are.same({ a = { b = 1 }, c = "x" }, data)
    end)
  end)
end)
