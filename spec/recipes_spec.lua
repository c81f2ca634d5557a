-- examples/recipes/: every recipe of the README's Recipes section runs as
-- a child lua5.4 against real servers (httpbin under gunicorn, nginx as a
-- file server and forward proxy, avideo-server at its real speed), and
-- its output shows that it did what the README says.
--
-- retries.lua and progress.lua use the `retry` option and
-- avideo.as_completed: each is pending (not failed) only while this build
-- lacks that API, and runs as soon as it has it.
local avideo = require "avideo"
local httpbin_support = require "support.httpbin"
local nginx_support = require "support.nginx"
local server_support = require "support.server"

local LUA = os.getenv("LUA") or "lua5.4"
local LIMIT = 60 -- seconds any one recipe may run before `timeout` stops it
local DIR = (os.getenv("AVIDEO_SOURCE_DIR") or ".") .. "/examples/recipes/"
local BIG = 8 * 1024 * 1024

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The recipes find the avideo this spec uses: its Lua files and its core.
local function module_paths()
  local lua_file = assert(package.searchpath("avideo", package.path))
  local core = assert(package.searchpath("avideo.core", package.cpath))
  local lua_dir = lua_file:match("^(.*)/avideo%.lua$") or "."
  local lib_dir = core:match("^(.*)/avideo/core%.so$") or "."
  return lua_dir .. "/?.lua;" .. lua_dir .. "/?/init.lua;;", lib_dir .. "/?.so;;"
end

-- Runs `command` (a list of words) with the module's paths and no proxy
-- from the environment; its output (stdout and stderr) and exit status.
local function child(command, env)
  local lua_path, lua_cpath = module_paths()
  local words = { "env", "-u", "http_proxy", "-u", "HTTP_PROXY", "-u", "https_proxy", "-u", "HTTPS_PROXY",
    "-u", "all_proxy", "-u", "ALL_PROXY", "-u", "no_proxy", "-u", "NO_PROXY",
    "LUA_PATH=" .. quote(lua_path), "LUA_CPATH=" .. quote(lua_cpath) }
  for k, v in pairs(env or {}) do words[#words + 1] = k .. "=" .. quote(v) end
  words[#words + 1] = "timeout " .. LIMIT
  for _, w in ipairs(command) do words[#words + 1] = quote(w) end
  local pipe = assert(io.popen(table.concat(words, " ") .. " 2>&1"))
  local out = pipe:read("a")
  local _, _, code = pipe:close()
  return out, code
end

-- Runs examples/recipes/<name>.lua with args; its output, asserted clean.
local function recipe(name, ...)
  local out, code = child({ LUA, DIR .. name .. ".lua", ... })
  assert.are.equal(0, code, out)
  return out
end

local function has(out, line)
  assert.is_truthy(out:find(line, 1, true), ("%q not in:\n%s"):format(line, out))
end

describe("recipes", function()
  local httpbin, nginx, server

  lazy_setup(function()
    httpbin = httpbin_support.start()
    nginx = nginx_support.start { files = { ["big.bin"] = BIG } }
    server = server_support.start {} -- time scale 1: the timeouts recipe counts on 0.2 s a video
  end)

  lazy_teardown(function()
    if httpbin then httpbin.stop() end
    if nginx then nginx.stop() end
    if server then assert.are.equal(0, server.stop().code) end
  end)

  it("json_api.lua authenticates and pages through the list", function()
    local out = recipe("json_api", httpbin.url, server.url)
    has(out, "basic auth: alice authenticated=true\n")
    has(out, "bearer token: t0ken\n")
    local ids = avideo.get(server.url .. "/videos?n=10"):json()
    has(out, "page 1: " .. table.concat(ids, " ", 1, 4) .. "\n")
    has(out, "page 2: " .. table.concat(ids, " ", 5, 8) .. "\n")
    has(out, "page 3: " .. table.concat(ids, " ", 9, 10) .. "\n")
    assert.is_nil(out:find("page 4"))
  end)

  it("form_post.lua sends a form with a list, a number and a query boolean", function()
    local out = recipe("form_post", httpbin.url)
    has(out, "query: draft=true\n")
    has(out, "content-type: application/x-www-form-urlencoded\n")
    has(out, "title: talk, minutes: 30\n")
    has(out, "tags: lua,async\n")
  end)

  it("upload.lua PUTs a file as the body and POSTs multipart parts", function()
    local out = recipe("upload", httpbin.url)
    has(out, "put: 10000 bytes as text/plain\n")
    has(out, "multipart: video 10000 bytes, notes 'plain text', title 'talk'\n")
  end)

  it("download.lua saves a large body to a file, complete", function()
    local path = os.tmpname()
    local out = recipe("download", nginx.url .. "/files/big.bin", path)
    has(out, ("saved %d bytes to %s (announced %d)\n"):format(BIG, path, BIG))
    local f = assert(io.open(path, "rb"))
    assert.are.equal(BIG, f:seek("end"))
    f:close()
    assert.is_nil(io.open(path .. ".part"))
    os.remove(path)
  end)

  it("stream_lines.lua handles each line as it comes", function()
    local out = recipe("stream_lines", httpbin.url)
    assert.are.equal("line 0\nline 1\nline 2\nline 3\nline 4\n", out)
  end)

  it("cookies_login.lua keeps the login cookie, lists the jar and clears it", function()
    local out = recipe("cookies_login", httpbin.url)
    has(out, "after login the server sees: {lang=en, sessionid=abc123}\n")
    has(out, "login redirected: 302 -> /cookies\n")
    has(out, "jar: lang=en domain ''\n")
    has(out, "jar: sessionid=abc123 domain '127.0.0.1'\n")
    has(out, "after clear_cookies: {}\n")
  end)

  it("retries.lua retries a 503 and a refused connection, not a POST", function()
    if not pcall(avideo.session, { retry = 1 }) then
      pending("this build has no `retry` option yet")
      return
    end
    local out = recipe("retries", httpbin.url)
    has(out, "GET 503: status 503 after 2 retries\n")
    has(out, "GET 200: status 200 after 0 retries\n")
    has(out, "POST 503: status 503 after 0 retries\n")
    has(out, "GET to a closed port: connect error after 2 retries\n")
  end)

  it("progress.lua reports a big gather as it completes, a failure included", function()
    if avideo.as_completed == nil then
      pending("this build has no avideo.as_completed yet")
      return
    end
    local out = recipe("progress", server.url)
    for _, n in ipairs { 25, 50, 75, 100, 101 } do has(out, ("progress: %d/101\n"):format(n)) end
    has(out, "failed: no-such-video (http)\n")
    has(out, "done 100, failed 1\n")
  end)

  it("timeouts.lua times out one request and keeps what a batch finished by its deadline", function()
    local out = recipe("timeouts", server.url)
    has(out, "one request: false, timeout error (sock_read)\n")
    local kept, cancelled, after = out:match("batch: all in time false; (%d+) videos kept, (%d+) cancelled after ([%d.]+) s")
    assert.is_string(kept, out)
    kept, cancelled = tonumber(kept), tonumber(cancelled)
    -- ten at a time, 0.2 s each: about 20 by the 0.5 s deadline, the rest
    -- cancelled there (all 100 would take 2 s); loose bounds for a busy machine
    assert.is_true(kept > 0 and cancelled > 0, out)
    assert.are.equal(100, kept + cancelled)
    assert.is_true(tonumber(after) < 1.9, out)
  end)

  it("proxies.lua goes through the proxy with credentials, and direct on request", function()
    local out = recipe("proxies", nginx.url, httpbin.url)
    has(out, "via proxy: X-Proxied-By nginx\n")
    has(out, "proxy saw credentials: Basic cHJveHl1c2VyOnB3\n") -- base64 of "proxyuser:pw"
    has(out, "direct: X-Proxied-By nil\n")
  end)

  it("testing_spec.lua is a busted spec that starts and stops its own avideo-server", function()
    local busted = io.popen("command -v busted"):read("l")
    assert.is_string(busted, "busted not found")
    local out, code = child({ LUA, busted, "--output=TAP", DIR .. "testing_spec.lua" },
      { AVIDEO_SERVER = os.getenv("AVIDEO_SERVER") or "build/src/server/avideo-server" })
    assert.are.equal(0, code, out)
    has(out, "1..4\n")
    assert.is_nil(out:find("not ok"), out)
  end)
end)
