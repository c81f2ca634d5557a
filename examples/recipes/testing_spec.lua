-- Testing with busted against avideo-server: the spec starts its own
-- emulator on a free port (port 0; the server prints the URL it got) with
-- no delays, and stops it at the end, so tests are fast and never depend
-- on a server someone left running.
--
--   busted examples/recipes/testing_spec.lua
-- (busted must run under Lua 5.4: `lua5.4 /usr/bin/busted ...` on Debian;
-- AVIDEO_SERVER names the binary, else avideo-server from PATH)
local avideo = require "avideo"

local SERVER = os.getenv("AVIDEO_SERVER") or "avideo-server"

-- Start avideo-server; returns its URL and a function that stops it.
local function start_server(...)
  -- `exec` makes the shell's pid the server's, for the kill below
  local pipe = assert(io.popen("echo $$; exec " .. SERVER .. " --port 0 " .. table.concat({ ... }, " ")))
  local pid = pipe:read("l")
  local url = assert((pipe:read("l") or ""):match("listening on (http://%S+)"), "avideo-server did not start")
  return url, function()
    os.execute("kill " .. pid)
    pipe:close() -- waits for it to exit
  end
end

describe("the videos API", function()
  local url, stop

  setup(function() url, stop = start_server("--time-scale", "0") end)
  teardown(function() stop() end)

  it("lists ids and serves each video", function()
    local ids = avideo.get(url .. "/videos", { params = { n = 3 } }):raise_for_status():json()
    assert.equal(3, #ids)
    local video = avideo.get(url .. "/videos/" .. ids[1]):raise_for_status():json()
    assert.equal(ids[1], video.id)
  end)

  it("answers 404 for an unknown video", function()
    local ok, err = pcall(function()
      return avideo.get(url .. "/videos/nope"):raise_for_status()
    end)
    assert.is_false(ok)
    assert.is_true(avideo.is_error(err, "http"))
    assert.equal(404, err.status)
  end)

  it("gathers many at once", function()
    local videos = avideo.run(function()
      local s <close> = avideo.session { base_url = url, limit_per_host = 10 }
      local gets = {}
      for i, id in ipairs(s:get("/videos", { params = { n = 20 } }):json()) do
        gets[i] = function() return s:get("/videos/" .. id):json() end
      end
      return avideo.gather(gets)
    end)
    assert.equal(20, #videos)
  end)

  it("keeps a PATCH", function()
    local s <close> = avideo.session { base_url = url, raise_for_status = true }
    s:patch("/videos/frame", { json = { warnings = { "NASA" } } })
    assert.same({ "NASA" }, s:get("/videos/frame"):json().warnings)
  end)
end)
