-- avideo.json: lua-cjson with whole numbers as integers and a way to send
-- an empty array.
local avideo = require "avideo"
local cjson = require "cjson"
local json = avideo.json

local raises = require "support.raises"

-- lua-cjson as avideo configures it: what encode must match byte for byte
local reference = cjson.new()
reference.encode_sparse_array(false, 2, 10)

describe("avideo.json", function()
  it("decodes whole numbers as integers, others as floats", function()
    local v = json.decode('{"views":925068,"list":[1,2.5,-3],"nested":{"n":1e3},"big":1e300}')
    assert.are.equal("integer", math.type(v.views))
    assert.are.equal(925068, v.views)
    assert.are.equal("integer", math.type(v.list[1]))
    assert.are.equal("float", math.type(v.list[2]))
    assert.are.equal("integer", math.type(v.list[3]))
    assert.are.equal("integer", math.type(v.nested.n))
    assert.are.equal("float", math.type(v.big))
    assert.are.equal("integer", math.type(json.decode("7")))
  end)

  it("encodes json.array() as [] even when empty, and json.null as null", function()
    assert.are.equal('{"warnings":[]}', json.encode { warnings = json.array() })
    assert.are.equal('[[],{"a":[]}]', json.encode { json.array(), { a = json.array() } })
    assert.are.equal('{"w":["NASA"]}', json.encode { w = json.array { "NASA" } })
    assert.are.equal('{}', json.encode {})
    assert.are.equal('[null]', json.encode { json.null })
  end)

  it("never turns user strings into arrays", function()
    -- the strings the encoder once used as placeholders, alone and inside
    -- others (a quote before one made `"\[]` of the text)
    for n = 1, 3 do
      local old = "\0avideo-empty-array-" .. n .. "\0"
      for _, tricky in ipairs { old, '"' .. old, old .. '"', '"' .. old .. '"', "x" .. old .. "y" } do
        local out = json.encode { a = json.array(), s = tricky, [tricky] = 1, l = { tricky, json.array() } }
        local back = json.decode(out)
        assert.are.same({}, back.a)
        assert.are.equal(tricky, back.s)
        assert.are.equal(1, back[tricky])
        assert.are.same({ tricky, {} }, back.l)
        assert.matches('"a":%[%]', out)
      end
    end
  end)

  it("writes exactly lua-cjson's compact text, but for empty json.array() tables", function()
    local deep = {}
    local t = deep
    for _ = 1, 999 do t.x = {}; t = t.x end -- 1000 levels: cjson's own limit
    local values = table.pack(
      1, -7, 0.1, 1 / 3, 2 ^ 53, -0.0, 1e300, math.maxinteger, math.mininteger, 123456789012345,
      "", "plain", "a/b \"q\" \\ \0\1\31\127 caf\195\169 \n\r\t\b\f", true, false, json.null, nil,
      {}, { 1, 2, 3 }, { 1, nil, 3 }, { [10] = 1 }, { [1] = "a", [2] = "b", x = 1 }, { [1.5] = 1, [-1] = 2, [0] = 3 },
      { a = { b = { c = { 1, { d = false } } } }, e = json.null, f = "g" },
      json.array { "NASA", "ESA" }, json.array { x = 1 }, { list = json.array { 1 }, other = {} },
      setmetatable({ 1, 2 }, { __pairs = function() error("pairs must not be used") end }),
      deep
    )
    for i = 1, values.n do
      local v = values[i]
      assert.are.equal(reference.encode(v), json.encode(v), "value #" .. i)
    end
    local big = {}
    for i = 1, 1000 do big[i] = { id = i, name = "video " .. i, tags = { "a", "b" }, score = i / 7 } end
    assert.are.equal(reference.encode(big), json.encode(big))
    -- with empty arrays inside: the same text with [] in their place
    local v = { a = json.array(), b = { json.array(), {}, json.array { 1 } }, c = "[]" }
    local expect = reference.encode { a = "\1A", b = { "\1A", {}, { 1 } }, c = "[]" }:gsub('"\\u0001A"', "[]")
    assert.are.equal(expect, json.encode(v))
  end)

  it("refuses cycles, sparse arrays, bad keys, deep nesting and values JSON has not", function()
    local cycle = { inner = { json.array() } }
    cycle.inner[2] = cycle
    local deep = {}
    local t = deep
    for _ = 1, 1000 do t[1] = {}; t = t[1] end -- 1001 levels
    local cases = {
      { cycle, "contains itself" },
      { { [20] = 1 }, "sparse array" },
      { { [true] = 1 }, "key" },
      { { [{}] = 1 }, "key" },
      { deep, "nest" },
      { { f = print }, "function" },
      { { x = 0 / 0 }, "NaN" },
      { { [math.huge] = 1 }, "Inf" },
      { { json.array(), io.stdout }, "userdata" },
    }
    for i, case in ipairs(cases) do
      local e = raises("invalid", case[2], json.encode, case[1])
      assert.matches("^value cannot be encoded as JSON: ", e.message)
      assert.is_nil(tostring(e):find("[\r\n]"), "case " .. i)
      assert.is_nil(e.message:find("json.lua", 1, true), "case " .. i)
    end
  end)


  it("raises invalid errors for what it cannot encode or decode", function()
    for _, bad in ipairs { { f = print }, { x = 0 / 0 } } do
      local ok, e = pcall(json.encode, bad)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(e, "invalid"))
    end
    local ok, e = pcall(json.decode, "{\"a\":")
    assert.is_false(ok)
    assert.is_true(avideo.is_error(e, "invalid"))
    assert.is_nil(e.message:find("json.lua", 1, true))
  end)
end)
