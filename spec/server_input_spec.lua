-- avideo-server: bad input of every kind, the keep-alive idle close, the
-- command line and signals. Never a crash, never a stuck connection.
local support = require "support.server"
local client = require "support.server_client"

local function assert_clean_exit(server)
  assert(support.stop_clean(server))
end

local function status_of(reply)
  return tonumber((reply or ""):match("^HTTP/1%.%d (%d%d%d)"))
end

-- Run the binary with args, without a server start; returns exit code and output.
local function run(args)
  local bin = os.getenv("AVIDEO_SERVER") or "build/src/server/avideo-server"
  local pipe = io.popen("env -u LD_PRELOAD '" .. bin .. "' " .. args .. " 2>&1")
  local out = pipe:read("a")
  local _, _, code = pipe:close()
  return code, out
end

describe("avideo-server bad input #server", function()
  after_each(support.stop_scoped)

  local server, id

  setup(function()
    server = support.start { time_scale = 0.1 }
    id = client.get_json(server.url .. "/videos/?n=1")[1]
  end)
  teardown(function()
    -- After all of it the server still answers, then exits cleanly.
    assert.are.equal(200, client.get(server.url .. "/videos/" .. id).status)
    assert_clean_exit(server)
  end)

  it("answers malformed requests with 400 and closes", function()
    local cases = {
      "GARBAGE\r\n\r\n",
      "GET\r\n\r\n",
      "GET /videos/ HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
      "GET /videos/ HTTP/9.9\r\nHost: x\r\n\r\n",
      "GET /videos/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
      "GET /videos/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "GET /videos/ HTTP/1.1\r\n\r\n", -- HTTP/1.1 without Host
      "\1\2\3\255\254 binary junk\r\n\r\n",
    }
    for i, data in ipairs(cases) do
      local reply, ended = client.raw(server, data, 5)
      local status = status_of(reply)
      assert.is_true(status == nil or (status >= 400 and status < 600), ("case %d: %s"):format(i, reply))
      assert.is_truthy(ended == "closed" or ended == "connection reset by peer", ("case %d: %s"):format(i, ended))
    end
  end)

  it("closes a connection that sends only NULs and blank lines, at its idle timeout", function()
    -- Blank lines before a request line are allowed (RFC 9112 2.2), and a
    -- NUL ends the line early: MHD keeps waiting for a request.
    local quick = support.start_scoped { time_scale = 0, keepalive_timeout = 1 }
    local reply, ended = client.raw(quick, "\0\1\2 junk\r\n\r\n\r\n", 5)
    assert.are.equal("", reply)
    assert.are.equal("closed", ended)
  end)

  it("refuses oversized request lines and headers, and closes", function()
    local long_url = "GET /videos/" .. ("a"):rep(40000) .. " HTTP/1.1\r\nHost: x\r\n\r\n"
    local long_header = "GET /videos/ HTTP/1.1\r\nHost: x\r\nX-Big: " .. ("b"):rep(40000) .. "\r\n\r\n"
    local many_headers = "GET /videos/ HTTP/1.1\r\nHost: x\r\n" .. ("X-A: 1\r\n"):rep(5000) .. "\r\n"
    for _, data in ipairs { long_url, long_header, many_headers } do
      local reply, ended = client.raw(server, data, 5)
      local status = status_of(reply)
      assert.is_true(status == nil or (status >= 400 and status < 500), reply)
      assert.is_truthy(ended == "closed" or ended == "connection reset by peer", ended)
    end
  end)

  it("answers 413 to a body announced over 1 MiB, at once", function()
    local sock = client.connect(server)
    local start = client.now()
    assert(sock:send(("PATCH /videos/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n{"):format(id)))
    local status, headers, body = client.read_response(sock)
    assert.are.equal(413, status)
    assert.are.equal("application/json", headers["content-type"])
    assert.is_truthy(body:find('"detail"', 1, true))
    assert.is_true(client.now() - start < 0.5)
    sock:close()
    -- on any route, and with curl's Expect: 100-continue too
    local r = client.request("PATCH", server.url .. "/videos/" .. id, { body = ("x"):rep(2 * 1048576) })
    assert.are.equal(413, r.status)
    r = client.request("POST", server.url .. "/nope", { body = ("x"):rep(1048577) })
    assert.are.equal(413, r.status)
  end)

  it("answers 413 to a chunked body that grows past 1 MiB", function()
    local sock = client.connect(server)
    assert(sock:send(("PATCH /videos/%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"):format(id)))
    local chunk = ("x"):rep(65536)
    for _ = 1, 20 do assert(sock:send(("%x\r\n%s\r\n"):format(#chunk, chunk))) end
    assert(sock:send("0\r\n\r\n"))
    local status, headers = client.read_response(sock)
    assert.are.equal(413, status)
    assert.are.equal("application/json", headers["content-type"])
    sock:close()
  end)

  it("cuts a connection that streams far past the limit", function()
    local sock = client.connect(server, 10)
    assert(sock:send(("PATCH /videos/%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"):format(id)))
    local chunk = ("x"):rep(1048576)
    local sent_ok = true
    for _ = 1, 40 do
      if not sock:send(("%x\r\n%s\r\n"):format(#chunk, chunk)) then sent_ok = false; break end
    end
    if sent_ok then
      local status, err = client.read_response(sock)
      assert.is_nil(status)
      assert.is_truthy(err == "closed" or err == "connection reset by peer", err)
    end
    sock:close()
  end)

  it("accepts a PATCH body of up to 1 MiB, chunked or not", function()
    local other = support.start_scoped { time_scale = 0 }
    local big = '{"blob":"' .. ("y"):rep(1048576 - 12) .. '"}'
    assert.is_true(#big <= 1048576)
    local r = client.request("PATCH", other.url .. "/videos/" .. id, { body = big })
    assert.are.equal(200, r.status)
    r = client.request("PATCH", other.url .. "/videos/" .. id,
                       { body = '{"small":1}', headers = { "Transfer-Encoding: chunked" } })
    assert.are.equal(200, r.status)
    local video = client.get_json(other.url .. "/videos/" .. id)
    assert.are.equal(1048576 - 12, #video.blob)
    assert.are.equal(1, video.small)
    assert_clean_exit(other)
  end)

  it("ignores a body on GET but still answers", function()
    local r = client.request("GET", server.url .. "/videos/" .. id, { body = '{"ignored":true}' })
    assert.are.equal(200, r.status)
    assert.is_nil(r.body:find("ignored", 1, true))
  end)

  it("copes with clients that send half a request and leave", function()
    for _, data in ipairs {
      "GET /vid",
      "GET /videos/ HTTP/1.1\r\nHost",
      ("PATCH /videos/%s HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"a\""):format(id),
      ("PATCH /videos/%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\""):format(id),
    } do
      local sock = client.connect(server)
      sock:send(data)
      sock:close()
    end
    assert.are.equal(200, client.get(server.url .. "/videos/" .. id).status)
  end)

  it("serves HTTP/1.0 and closes after the answer", function()
    local reply, ended = client.raw(server, ("GET /videos/%s HTTP/1.0\r\n\r\n"):format(id), 5)
    assert.are.equal(200, status_of(reply))
    assert.are.equal("closed", ended)
  end)
end)

describe("avideo-server keep-alive timeout #server", function()
  after_each(support.stop_scoped)

  it("closes a connection idle for --keepalive-timeout seconds", function()
    local server = support.start_scoped { time_scale = 0, keepalive_timeout = 1 }
    local sock = client.connect(server)
    assert(sock:send("GET /videos/?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert.are.equal(200, (client.read_response(sock)))
    local took = client.time_to_close(sock, 5)
    assert.is_truthy(took, "the server never closed the idle connection")
    assert.is_true(took >= 0.9 and took < 2.2, took)
    sock:close()
    -- a connection that never sent a request is closed the same way
    sock = client.connect(server)
    took = client.time_to_close(sock, 5)
    assert.is_true(took ~= nil and took >= 0.9 and took < 2.2, tostring(took))
    sock:close()
    assert_clean_exit(server)
  end)

  it("keeps a connection that stays busy, and the default is 5 s", function()
    local server = support.start_scoped { time_scale = 0, keepalive_timeout = 1 }
    local sock = client.connect(server)
    for _ = 1, 4 do
      assert(sock:send("GET /videos/?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert.are.equal(200, (client.read_response(sock)))
      client.sleep(0.6)
    end
    sock:close()
    assert_clean_exit(server)
    server = support.start_scoped { time_scale = 0 }
    sock = client.connect(server)
    assert.is_nil(client.time_to_close(sock, 4))
    local took = client.time_to_close(sock, 3)
    assert.is_true(took ~= nil and took < 2.2, tostring(took))
    sock:close()
    assert_clean_exit(server)
  end)
end)

describe("avideo-server command line #server", function()
  after_each(support.stop_scoped)

  it("prints its help and exits 0", function()
    local code, out = run("--help")
    assert.are.equal(0, code)
    for _, option in ipairs { "--host", "--port", "--videos", "--seed", "--time-scale", "--keepalive-timeout", "1 MiB" } do
      assert.is_truthy(out:find(option, 1, true), option)
    end
  end)

  it("refuses bad options with exit 2", function()
    for _, args in ipairs { "--nope", "--port", "--port 70000", "--port -1", "--videos 100001", "--videos x",
                            "--time-scale -1", "--time-scale nan", "--keepalive-timeout abc", "--seed 1x",
                            "--host ''", "extra" } do
      local code, out = run(args)
      assert.are.equal(2, code, args)
      assert.is_truthy(out:find("avideo-server:", 1, true), args)
    end
  end)

  it("accepts --name=value", function()
    local server = support.start_scoped { args = { "--time-scale=0", "--videos=3", "--seed=7" } }
    assert.are.equal(3, #client.get_json(server.url .. "/videos/"))
    assert_clean_exit(server)
  end)

  it("exits 1 with a message when the port is taken", function()
    local server = support.start_scoped { time_scale = 0 }
    local code, out = run("--port " .. server.port)
    assert.are.equal(1, code)
    assert.is_truthy(out:find("avideo-server", 1, true))
    assert_clean_exit(server)
  end)

  it("prints exactly one line and stops on SIGINT with exit 0, ignoring a second signal", function()
    local server = support.start_scoped { time_scale = 0 }
    assert.are.equal(200, client.get(server.url .. "/videos/?n=1").status)
    os.execute(("kill -INT %d; kill -TERM %d"):format(server.pid, server.pid))
    local status = server.wait()
    assert.are.same({ ok = true, how = "exit", code = 0 }, status)
    assert.are.equal("", server.output)
  end)
end)
