-- The talk's central measurement, through the module against the real
-- emulator at time-scale 1: 100 videos gathered at limit_per_host = 10 take
-- ten waves of 0.2 s; at 100 the server overloads.
local avideo = require "avideo"
local server_support = require "support.server"

local slow = os.getenv("AVIDEO_SLOW") == "1" -- valgrind: shapes only

describe("the talk's gather against avideo-server", function()
  local server, ids
  lazy_setup(function()
    server = server_support.start {}
    ids = avideo.get(server.url .. "/videos?n=100"):raise_for_status():json()
  end)
  lazy_teardown(function()
    assert.are.equal(0, server.stop().code)
  end)

  local function fetch_all(limit_per_host)
    local t0 = avideo.now()
    local videos = avideo.run(function()
      local session <close> = avideo.session { limit_per_host = limit_per_host }
      local tasks = {}
      for i, id in ipairs(ids) do
        tasks[i] = function()
          return session:get(server.url .. "/videos/" .. id):raise_for_status():json()
        end
      end
      return avideo.gather(tasks)
    end)
    return videos, avideo.now() - t0
  end

  it("limit_per_host = 10 takes within 3% of the ideal 2.0 s", function()
    local videos, wall = fetch_all(10)
    assert.are.equal(100, #videos)
    for i, v in ipairs(videos) do assert.are.equal(ids[i], v.id) end
    assert.is_true(wall >= 2.0, "faster than the server allows: " .. wall)
    if not slow then assert.is_true(wall <= 2.06, "took " .. wall .. " s") end
  end)

  it("limit_per_host = 100 shows the overload (about 10.9 s)", function()
    local videos, wall = fetch_all(100)
    assert.are.equal(100, #videos)
    assert.is_true(wall >= 9.5, "no overload seen: " .. wall)
    if not slow then assert.is_true(wall <= 12.5, "took " .. wall .. " s") end
  end)
end)
