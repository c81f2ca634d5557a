-- avideo.json: lua-cjson with whole numbers as integers and a way to send
-- an empty array.
local avideo = require "avideo"
local json = avideo.json

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
    -- the very strings the encoder uses as placeholders
    for n = 1, 3 do
      local tricky = "\0avideo-empty-array-" .. n .. "\0"
      local out = json.encode { a = json.array(), s = tricky, [tricky] = 1 }
      local back = json.decode(out)
      assert.are.same({}, back.a)
      assert.are.equal(tricky, back.s)
      assert.are.equal(1, back[tricky])
      assert.matches('"a":%[%]', out)
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
