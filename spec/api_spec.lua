-- Every call of the API against the real avideo-server: the verbs with
-- params, json and data, blocking and inside tasks, on a session and on
-- the module's default session; responses; gather over the emulator's
-- endpoints of different speeds. (The exact bytes each call puts on the
-- wire are checked against a recording peer in session_spec.lua.)
local avideo = require "avideo"
local support = require "support.server"
local settled = require "support.settled"

local raises = require "support.raises"

describe("the API against avideo-server", function()
  local server, ids

  setup(function()
    server = support.start { time_scale = 0.1 } -- video 20 ms, transcript 10 ms, list and PATCH 5 ms
    ids = avideo.get(server.url .. "/videos", { params = { n = 5 } }):raise_for_status():json()
  end)
  teardown(function() assert(support.stop_clean(server)) end)
  after_each(settled)

  it("gets outside any task, blocking, like requests", function()
    local r = avideo.get(server.url .. "/videos", { params = { n = 3 } })
    assert.are.equal(200, r.status)
    assert.are.equal("OK", r.reason)
    assert.is_true(r.ok)
    assert.are.equal(server.url .. "/videos?n=3", r.url)
    assert.are.equal("application/json", r.headers["Content-Type"])
    assert.are.equal(r.headers["content-type"], r.headers["CONTENT-TYPE"])
    assert.are.equal(r, r:raise_for_status())
    assert.are.same({ ids[1], ids[2], ids[3] }, r:json())
    assert.are.equal(('["%s","%s","%s"]'):format(ids[1], ids[2], ids[3]), r:text())
  end)

  it("reads a body as text and as JSON, in either order, as often as asked", function()
    -- json() decodes the body where the core holds it; text() makes it a
    -- string once; either may come first
    local want = ('["%s","%s","%s"]'):format(ids[1], ids[2], ids[3])
    local r = avideo.get(server.url .. "/videos", { params = { n = 3 } })
    local first = r:json()
    assert.are.same({ ids[1], ids[2], ids[3] }, first)
    assert.are_not.equal(first, r:json()) -- a new table each time
    assert.are.equal(want, r:text())
    assert.are.equal(r:text(), r:text())
    assert.are.same(first, r:json())
    local r2 = avideo.get(server.url .. "/videos", { params = { n = 3 } })
    assert.are.equal(want, r2:text())
    assert.are.same(first, r2:json())
  end)

  it("gets, PATCHes and reads back inside a task, through base_url", function()
    avideo.run(function()
      local s <close> = avideo.session { base_url = server.url }
      local video = s:get("/videos/" .. ids[1]):raise_for_status():json()
      assert.are.equal(ids[1], video.id)
      assert.is_true(math.type(video.views) == "integer")
      -- the talk's PATCH of an empty warnings list, and one with data
      assert.are.equal("success", s:patch("/videos/" .. ids[1], { json = { warnings = avideo.json.array() } })
        :raise_for_status():json())
      assert.are.equal(200, s:request("PATCH", "videos/" .. ids[1], {
        data = '{"rating":4,"warnings":["NASA"]}', headers = { ["Content-Type"] = "application/json" } }).status)
      local after = s:get("/videos/" .. ids[1]):json()
      assert.are.same({ "NASA" }, after.warnings)
      assert.are.equal(4, after.rating)
      assert.are.equal(video.title, after.title)
      assert.are.equal("success", s:patch("/videos/" .. ids[1], { json = { warnings = avideo.json.array() } }):json())
      assert.is_truthy(s:get("/videos/" .. ids[1]):text():find('"warnings":[]', 1, true))
    end)
  end)

  it("gets the server's refusals as responses, and raises them on raise_for_status", function()
    for _, verb in ipairs { "post", "put", "delete" } do
      local r = avideo[verb](server.url .. "/videos/" .. ids[2], { json = { a = 1 } })
      assert.are.equal(405, r.status)
      assert.are.equal("Method Not Allowed", r.reason)
      assert.is_false(r.ok)
      assert.are.equal("GET, PATCH", r.headers.allow)
      assert.are.same({ detail = "Method Not Allowed" }, r:json())
      local e = raises("http", nil, r.raise_for_status, r)
      assert.are.equal(405, e.status)
      assert.are.equal(verb:upper(), e.method)
      assert.are.equal(server.url .. "/videos/" .. ids[2], e.url)
      assert.matches("405 Method Not Allowed", tostring(e))
    end
    local head = avideo.head(server.url .. "/videos/" .. ids[2])
    assert.are.equal(405, head.status)
    assert.are.equal("", head:text())
    local missing = avideo.get(server.url .. "/videos/nosuchvideo")
    assert.are.equal(404, missing.status)
    assert.are.same({ detail = "Video not found" }, missing:json())
    local bad = avideo.get(server.url .. "/videos/", { params = { n = "a b" } })
    assert.are.equal(422, bad.status)
    assert.are.equal("a b", bad:json().detail[1].input)
    assert.are.equal(422, avideo.patch(server.url .. "/videos/" .. ids[2], { json = { 1, 2 } }).status)
  end)

  it("raises for status on a session that asks, unless a request says otherwise", function()
    avideo.run(function()
      local s <close> = avideo.session { base_url = server.url, raise_for_status = true }
      assert.are.equal(200, s:get("/videos/" .. ids[3]).status)
      local e = raises("http", nil, s.get, s, "/videos/nosuchvideo")
      assert.are.equal(404, e.status)
      assert.are.equal(404, e.response.status)
      assert.are.equal(404, s:get("/videos/nosuchvideo", { raise_for_status = false }).status)
    end)
    local plain <close> = avideo.session { base_url = server.url }
    assert.are.equal(404, plain:get("/videos/nosuchvideo").status)
    raises("http", nil, plain.get, plain, "/videos/nosuchvideo", { raise_for_status = true })
  end)

  it("gathers endpoints of different speeds in the order given", function()
    local got = avideo.run(function()
      local s <close> = avideo.session { base_url = server.url }
      return avideo.gather(
        function() return s:get("/videos/" .. ids[4]):json().id end,                -- 20 ms
        function() return #s:get("/videos", { params = { n = 2 } }):json() end,     -- 5 ms
        function() return type(s:get("/videos/" .. ids[4] .. "/transcript"):json()) end, -- 10 ms
        function() avideo.sleep(0.03) return "slept" end,                          -- 30 ms
        function() return s:get("/videos/nosuchvideo").status end)                  -- 20 ms
    end)
    assert.are.same({ ids[4], 2, "string", "slept", 404 }, got)
    -- tasks, and return_exceptions with the server's 404 raised
    local mixed = avideo.run(function()
      local s <close> = avideo.session { base_url = server.url, raise_for_status = true }
      local t = avideo.spawn(function() return s:get("/videos/" .. ids[5]):json().id end)
      return avideo.gather({ function() return s:get("/videos/nosuchvideo") end, t }, { return_exceptions = true })
    end)
    assert.is_true(avideo.is_error(mixed[1], "http"))
    assert.are.equal(404, mixed[1].status)
    assert.are.equal(ids[5], mixed[2])
  end)
end)
