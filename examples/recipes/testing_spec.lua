-- Testing with busted against avideo-server: avideo.testing.server starts
-- the emulator on a free port with no delays, and the spec stops it at the
-- end (close; <close> and garbage collection also do), so tests are fast
-- and never depend on a server someone left running.
--
--   busted examples/recipes/testing_spec.lua
-- (busted must run under Lua 5.4: `lua5.4 /usr/bin/busted ...` on Debian;
-- the binary is AVIDEO_SERVER's, else the one installed beside the module,
-- else avideo-server from PATH)
local avideo = require "avideo"

describe("the videos API", function()
  local server, url

  setup(function()
    server = avideo.testing.server { time_scale = 0 }
    url = server.url
  end)
  teardown(function() server:close() end)

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
