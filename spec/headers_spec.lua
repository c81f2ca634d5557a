-- Repeated headers (issue 16): a response header that came more than once
-- reads joined with ", " and headers:getall(name) lists each value; a
-- request header given as a list goes out as one line per value, from a
-- session's headers and a request's own. Responses come from a real
-- httpbin under gunicorn (/response-headers repeats what its query
-- repeats); the test peer shows the request's header lines as they came.
local avideo = require "avideo"
local httpbin_support = require "support.httpbin"
local peer_support = require "support.peer"
local settled = require "support.settled"

-- Every request is bounded: a hung server fails the spec, not the run.
local TIMEOUT = 10

-- Every value of header `name` the peer received, in order.
local function lines_of(echo, name)
  local seen = {}
  for _, kv in ipairs(echo.header_list) do
    if kv[1] == name then seen[#seen + 1] = kv[2] end
  end
  return seen
end

local function refused(f, mention)
  local ok, e = pcall(f)
  assert.is_false(ok, "no error")
  assert.is_true(avideo.is_error(e, "invalid"), "not an invalid error: " .. tostring(e))
  assert.is_truthy(tostring(e):find(mention, 1, true), "message does not mention " .. mention .. ": " .. tostring(e))
  return e
end

describe("repeated headers", function()
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

  describe("in a response", function()
    it("read joined by indexing, and each in order by getall, in any case", function()
      local r = avideo.get(httpbin.url .. "/response-headers?X-A=1&X-A=2&x-a=3&X-B=only", { timeout = TIMEOUT })
      assert.are.equal(200, r.status)
      assert.are.equal("1, 2, 3", r.headers["x-a"])
      assert.are.equal("1, 2, 3", r.headers["X-A"])
      assert.are.same({ "1", "2", "3" }, r.headers:getall("X-A"))
      assert.are.same({ "1", "2", "3" }, r.headers:getall("x-a"))
      assert.are.same({ "only" }, r.headers:getall("x-b"))
      assert.are.same({}, r.headers:getall("x-none"))
      -- a new list each call: the caller may change it
      local list = r.headers:getall("x-a")
      list[1] = "changed"
      assert.are.same({ "1", "2", "3" }, r.headers:getall("x-a"))
      assert.are.equal("1, 2, 3", r.headers["x-a"])
    end)

    it("keeps each Set-Cookie, commas inside values included", function()
      local q = "Set-Cookie=a%3D1%3B%20Expires%3DWed%2C%2021%20Oct%202037%2007%3A28%3A00%20GMT&Set-Cookie=b%3D2"
      local r = avideo.get(httpbin.url .. "/response-headers?" .. q, { timeout = TIMEOUT })
      assert.are.same({ "a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT", "b=2" }, r.headers:getall("set-cookie"))
      assert.are.equal("a=1; Expires=Wed, 21 Oct 2037 07:28:00 GMT, b=2", r.headers["set-cookie"])
    end)

    it("keeps headers:getall the method when a header is called getall; that one is read through it", function()
      local r = avideo.get(httpbin.url .. "/response-headers?getall=x&GetAll=y&X-A=1", { timeout = TIMEOUT })
      assert.are.equal("function", type(r.headers.getall))
      assert.are.same({ "x", "y" }, r.headers:getall("getall"))
      assert.are.same({ "x", "y" }, r.headers:getall("GETALL"))
      assert.is_nil(r.headers.GETALL)
      assert.are.same({ "1" }, r.headers:getall("x-a"))
      -- pairs shows headers only, each once
      local names = {}
      for k, v in pairs(r.headers) do
        assert.are.equal("string", type(v))
        names[k] = (names[k] or 0) + 1
      end
      assert.are.equal(1, names["x-a"])
      assert.is_nil(names.getall)
    end)

    it("works on a streamed response's headers too", function()
      local r = avideo.get(httpbin.url .. "/response-headers?X-A=1&X-A=2", { stream = true, timeout = TIMEOUT })
      assert.are.same({ "1", "2" }, r.headers:getall("x-a"))
      r:close()
    end)

    it("refuses a getall name that is not a string, and a call that is not a method call", function()
      local r = avideo.get(httpbin.url .. "/response-headers?X-A=1", { timeout = TIMEOUT })
      refused(function() r.headers:getall(1) end, "name")
      refused(function() r.headers.getall("x-a") end, "headers:getall")
    end)
  end)

  describe("in a request, given as a list", function()
    it("goes out one line per value, in order, from a request's headers", function()
      local e = avideo.get(peer.url .. "/echo", { headers = { ["X-A"] = { "1", "2", 3 } }, timeout = TIMEOUT }):json()
      assert.are.same({ "1", "2", "3" }, lines_of(e, "x-a"))
    end)

    it("goes out one line per value from a session's headers, and a request's list replaces them", function()
      avideo.run(function()
        local s <close> = avideo.session { headers = { ["X-A"] = { "s1", "s2" }, ["X-B"] = "b" }, timeout = TIMEOUT }
        local e = s:get(peer.url .. "/echo"):json()
        assert.are.same({ "s1", "s2" }, lines_of(e, "x-a"))
        assert.are.same({ "b" }, lines_of(e, "x-b"))
        e = s:get(peer.url .. "/echo", { headers = { ["x-a"] = { "r1", "r2" } } }):json()
        assert.are.same({ "r1", "r2" }, lines_of(e, "x-a"))
        assert.are.same({ "b" }, lines_of(e, "x-b"))
        e = s:get(peer.url .. "/echo", { headers = { ["X-A"] = "one" } }):json()
        assert.are.same({ "one" }, lines_of(e, "x-a"))
      end)
    end)

    it("reaches httpbin as the repeated header it is", function()
      local seen = avideo.get(httpbin.url .. "/headers", { headers = { ["X-A"] = { "1", "2" } }, timeout = TIMEOUT })
        :raise_for_status():json()
      -- gunicorn joins a repeated request header with a comma
      assert.matches("^1, ?2$", seen.headers["X-A"])
    end)

    it("is refused when empty, not a list, or holding anything but strings and numbers, naming the header", function()
      for _, where in ipairs { "session", "request" } do
        local function try(v)
          if where == "session" then
            return function() avideo.session { headers = { ["X-Bad"] = v } } end
          end
          return function() avideo.get(peer.url .. "/echo", { headers = { ["X-Bad"] = v } }) end
        end
        refused(try({}), "X-Bad")
        refused(try({}), "empty list")
        refused(try({ "1", true }), "X-Bad")
        refused(try({ "1", true }), "#2")
        refused(try({ "1", { "2" } }), "X-Bad")
        refused(try({ a = "1" }), "not a list")
        refused(try({ "1", nil, "3" }), "X-Bad")
        refused(try({ "1", x = "2" }), "not a list")
        refused(try({ "ok\r\nX-Evil: 1" }), "X-Bad")
      end
    end)
  end)
end)
