-- avideo.json: a strict decoder (integers exact, floats kept floats, errors
-- with their byte offset) and lua-cjson's encoder with a way to send an
-- empty array.
local avideo = require "avideo"
local cjson = require "cjson"
local json = avideo.json

local raises = require "support.raises"

-- 5.1 and LuaJIT have no integer subtype: every number is a double
-- (README, Lua versions). There the tests check values, and what a double
-- gives where 5.4 keeps an integer.
local doubles = require("avideo.compat").lua51
local INT, FLOAT = "integer", "float"
if doubles then INT, FLOAT = "number", "number" end
local function kind(v) return (not doubles and math.type(v)) or type(v) end
-- -0.0 made at run time: PUC 5.1 folds the literal -0.0 into the constant 0
local NEG_ZERO = -1 / math.huge

-- lua-cjson as avideo configures it: what encode must match byte for byte
local reference = cjson.new()
reference.encode_sparse_array(false, 2, 10)

-- same value and same subtype (integer or float; the sign of a zero)
local function same_number(a, b)
  return a == b and math.type(a) == math.type(b) and (a ~= 0 or 1 / a == 1 / b)
end

describe("avideo.json", function()
  it("decodes integer literals as integers, numbers with a fraction or exponent as floats", function()
    local v = json.decode('{"views":925068,"list":[1,2.5,-3],"nested":{"n":1e3},"big":1e300}')
    assert.are.equal(INT, kind(v.views))
    assert.are.equal(925068, v.views)
    assert.are.same({ 1, 2.5, -3 }, v.list)
    assert.are.equal(INT, kind(v.list[1]))
    assert.are.equal(FLOAT, kind(v.list[2]))
    assert.are.equal(INT, kind(v.list[3]))
    assert.are.equal(FLOAT, kind(v.nested.n))
    assert.are.equal(1000, v.nested.n)
    assert.are.equal(FLOAT, kind(v.big))
    assert.are.equal(1e300, v.big)
    assert.are.equal(INT, kind(json.decode("7")))
  end)

  it("keeps every int64 exact, and floats as written", function()
    if doubles then
      -- no int64: an integer beyond 2^53 is the nearest double, as tonumber
      -- reads it (2^53 + 1 is 2^53, 2^53 + 3 is 2^53 + 4); -0 is -0.0
      assert.is_true(same_number(2 ^ 53, json.decode("9007199254740993")))
      assert.is_true(same_number(2 ^ 53, json.decode('{"id":9007199254740993}').id))
      assert.is_true(same_number(2 ^ 53 + 4, json.decode("9007199254740995")))
      assert.is_true(same_number(2 ^ 63, json.decode("9223372036854775807")))
      assert.is_true(same_number(-2 ^ 63, json.decode("-9223372036854775808")))
      assert.is_true(same_number(NEG_ZERO, json.decode("-0")))
    else
      assert.is_true(same_number(9007199254740993, json.decode("9007199254740993")))
      assert.is_true(same_number(9007199254740993, json.decode('{"id":9007199254740993}').id))
      assert.is_true(same_number(math.maxinteger, json.decode("9223372036854775807")))
      assert.is_true(same_number(math.mininteger, json.decode("-9223372036854775808")))
      assert.is_true(same_number(0, json.decode("-0")))
    end
    -- beyond int64: a float, as tonumber gives
    assert.is_true(same_number(2 ^ 63, json.decode("9223372036854775808")))
    assert.is_true(same_number(-2 ^ 63 * 10, json.decode("-92233720368547758080")))
    assert.is_true(same_number(1.0, json.decode("1.0")))
    assert.is_true(same_number(NEG_ZERO, json.decode("-0.0")))
    assert.is_true(same_number(NEG_ZERO, json.decode("-0e5")))
    assert.is_true(same_number(0.1, json.decode("0.1")))
    assert.is_true(same_number(0.0, json.decode("1e-400"))) -- below the doubles: 0, as strtod gives
    assert.is_true(same_number(5e-324, json.decode("4.9406564584124654e-324")))
    assert.is_true(same_number(1.7976931348623157e308, json.decode("1.7976931348623157e308")))
    -- a float prints as one where Lua has floats apart from integers
    assert.are.equal(doubles and "1" or "1.0", tostring(json.decode("[1.0]")[1]))
  end)

  it("reads every number as Lua's tonumber does (correctly rounded)", function()
    math.randomseed(13)
    local function digits(n)
      local t = {}
      for i = 1, n do t[i] = string.char(48 + math.random(0, 9)) end
      return table.concat(t)
    end
    for _ = 1, 20000 do
      local s = (math.random() < 0.5 and "-" or "")
      local int = math.random() < 0.2 and "0" or (string.char(48 + math.random(1, 9)) .. digits(math.random(0, 24)))
      s = s .. int
      if math.random() < 0.6 then s = s .. "." .. digits(math.random(1, 24)) end
      if math.random() < 0.5 then
        s = s .. (math.random() < 0.5 and "e" or "E") .. ({ "", "+", "-" })[math.random(1, 3)]
          .. math.random(0, 330)
      end
      local want = tonumber(s)
      if want == math.huge or want == -math.huge then
        raises("invalid", "out of range", json.decode, s)
      else
        local got = json.decode(s)
        assert.is_true(same_number(want, got), s .. ": " .. tostring(got) .. " ~= " .. tostring(want))
      end
    end
    -- random doubles written with 15, 16 and 17 digits read back as written:
    -- a random 53-bit significand times 2^e over every exponent, subnormals
    -- included (arithmetic, not string.pack, and random draws under 2^31,
    -- as PUC 5.1's math.random takes C ints: every Lua runs it)
    local function bits(n) return math.random(0, 2 ^ n - 1) end
    for _ = 1, 20000 do
      local significand = bits(17) * 2 ^ 36 + bits(18) * 2 ^ 18 + bits(18)
      local x = (math.random() < 0.5 and -1 or 1) * significand * 2 ^ math.random(-1074, 971)
      if x ~= math.huge and x ~= -math.huge then
        for _, f in ipairs { "%.15e", "%.16e", "%.17g" } do
          local s = f:format(x)
          assert.is_true(same_number(tonumber(s), json.decode(s)), s)
        end
      end
    end
  end)

  it("refuses numbers beyond the doubles, naming them", function()
    for _, case in ipairs { { "1e400", "1e400" }, { "[0,-1e400]", "-1e400" }, { '{"x":1.5E+999}', "1.5E+999" } } do
      local e = raises("invalid", "out of range", json.decode, case[1])
      assert.is_truthy(e.message:find(case[2], 1, true), e.message)
    end
  end)

  it("decodes escapes and surrogate pairs to UTF-8, and passes UTF-8 through", function()
    assert.are.equal("\u{e9}\u{20ac}\u{1F600}\u{10FFFF}\n\t/\"\\\b\f\r\0",
      json.decode('"\\u00e9\\u20AC\\ud83d\\ude00\\uDBFF\\uDFFF\\n\\t\\/\\"\\\\\\b\\f\\r\\u0000"'))
    assert.are.equal("caf\u{e9} \u{1F600}", json.decode('"caf\u{e9} \u{1F600}"'))
    assert.are.equal("", json.decode('""'))
  end)

  it("builds tables: objects with string keys, arrays as lists, null as json.null", function()
    local v = json.decode(' {"1": "one", "a": [true, false, null, {"b": {}}], "a": [1], "": 0} ')
    assert.are.equal("one", v["1"])
    assert.is_nil(v[1])
    assert.are.same({ 1 }, v.a) -- the last of duplicate keys wins
    assert.are.equal(0, v[""])
    local list = json.decode('[true, false, null, {"b": {}}]')
    assert.are.equal(4, #list)
    assert.are.equal(json.null, list[3])
    assert.are.same({ b = {} }, list[4])
    assert.are.equal(json.null, json.decode("null"))
    assert.are.equal(false, json.decode(" false "))
  end)

  it("builds objects and arrays of any length, past the decoder's chunks of 16", function()
    for _, n in ipairs { 1, 15, 16, 17, 32, 33, 100 } do
      local members, elements = {}, {}
      for i = 1, n do
        members[i] = ('"k%d":%d'):format(i, i)
        elements[i] = ('{"i":%d,"s":"%d"}'):format(i, i)
      end
      -- a duplicate of the first key at the end: the last one still wins
      local obj = json.decode("{" .. table.concat(members, ",") .. ',"k1":"last"}')
      local list = json.decode("[" .. table.concat(elements, ",") .. "]")
      assert.are.equal("last", obj.k1)
      assert.are.equal(n, #list)
      local count = 0
      for k, v in pairs(obj) do
        count = count + 1
        if k ~= "k1" then assert.are.equal(tonumber(k:sub(2)), v) end
      end
      assert.are.equal(n, count)
      for i = 1, n do
        assert.are.same({ i = i, s = tostring(i) }, list[i])
      end
    end
    local deep = json.decode(('[{"a":'):rep(200) .. "[]" .. ("}]"):rep(200))
    for _ = 1, 200 do deep = deep[1].a end
    assert.are.same({}, deep)
  end)

  it("decodes [] as json.array(): decode then encode gives [] back", function()
    assert.are.equal("[]", json.encode(json.decode("[]")))
    assert.are.equal("{}", json.encode(json.decode("{}")))
    assert.are.equal('[[],{},[[]]]', json.encode(json.decode("[ [ ] , { } , [[]] ]")))
    assert.are.equal('{"warnings":[]}', json.encode(json.decode('{"warnings":[]}')))
  end)

  it("nests 1000 levels deep and refuses more, whatever the text's length", function()
    local ok = json.decode(("["):rep(1000) .. ("]"):rep(1000))
    for _ = 1, 999 do ok = ok[1] end
    assert.are.same({}, ok)
    raises("invalid", "at byte 1001: nested deeper than 1000", json.decode, ("["):rep(1001) .. ("]"):rep(1001))
    raises("invalid", "nested deeper than 1000", json.decode, ('{"a":'):rep(1001) .. "1" .. ("}"):rep(1001))
    raises("invalid", "nested deeper than 1000", json.decode, ("[{\"a\":"):rep(500000))
  end)

  it("refuses what RFC 8259 refuses, on one line with the byte offset", function()
    local cases = {
      { "", 1, "end of text" },
      { "   ", 4, "end of text" },
      { "01", 1, "leading zero" },
      { "-", 1, "number" },
      { "1.", 1, "number" },
      { "1.e5", 1, "number" },
      { ".5", 1, "expected a value" },
      { "1e", 1, "number" },
      { "1e+", 1, "number" },
      { "+1", 1, "expected a value" },
      { "NaN", 1, "NaN" },
      { "-Infinity", 1, "Infinity" },
      { "[1,]", 4, "expected a value" },
      { '{"a":1,}', 8, "string key" },
      { "[1 2]", 4, "',' or ']'" },
      { "{'a':1}", 2, "string key" },
      { '{"a" 1}', 6, "':'" },
      { "{1:2}", 2, "string key" },
      { '{"a":1 "b":2}', 8, "',' or '}'" },
      { "tru", 1, "true" },
      { "nul", 1, "null" },
      { "True", 1, "expected a value" },
      { '"abc', 1, "unterminated string" },
      { '"a\tb"', 3, "control character" },
      { '"a\nb"', 3, "control character" },
      { '"\\x"', 2, "escape" },
      { '"\\u12"', 2, "\\u" },
      { '"\\u12G4"', 2, "\\u" },
      { '"\\uD800"', 2, "surrogate" },
      { '"\\uDC00"', 2, "surrogate" },
      { '"\\uD800\\u0041"', 2, "surrogate" },
      { '"\\uD800\\uD800"', 2, "surrogate" },
      { "[1] x", 5, "after the value" },
      { "[1]]", 4, "after the value" },
      { "\239\187\191{}", 1, "0xEF" },
      { "{}\0", 3, "after the value" },
      { '"\255"', 2, "UTF-8" },
      { '"ab\192\128"', 4, "UTF-8" },
      { '"\237\160\128"', 2, "UTF-8" },
      { '"\244\144\128\128"', 2, "UTF-8" },
      { '"\226\130"', 2, "UTF-8" },
      { '{"a":1,"b":tru}', 12, "true" },
      { "[1,2,3,", 8, "end of text" },
    }
    for _, case in ipairs(cases) do
      local text, byte, why = case[1], case[2], case[3]
      local ok, e = pcall(json.decode, text)
      assert.is_false(ok, ("%q: decoded"):format(text))
      assert.is_true(avideo.is_error(e, "invalid"), tostring(e))
      local s = tostring(e)
      assert.is_truthy(s:find("invalid JSON at byte " .. byte .. ": ", 1, true), ("%q: %s"):format(text, s))
      assert.is_truthy(s:find(why, 1, true), ("%q: %s"):format(text, s))
      assert.is_nil(s:find("[%c]"), ("%q: not one printable line: %s"):format(text, s))
    end
    assert.are.equal("avideo.invalid error: invalid JSON at byte 1: unterminated string",
      tostring(select(2, pcall(json.decode, '"abc'))))
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

  it("writes exactly lua-cjson's compact text, but for empty json.array() tables and numbers", function()
    local deep = {}
    local t = deep
    for _ = 1, 999 do t.x = {}; t = t.x end -- 1000 levels: cjson's own limit
    local values = table.pack(
      1, -7, 0.1, 0.5, 2 ^ 40, -0.0, 1e300, 99999999999999, -99999999999999, 12345.678901234,
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
    for i = 1, 1000 do big[i] = { id = i, name = "video " .. i, tags = { "a", "b" }, score = i / 8 } end
    assert.are.equal(reference.encode(big), json.encode(big))
    -- with empty arrays inside: the same text with [] in their place
    local v = { a = json.array(), b = { json.array(), {}, json.array { 1 } }, c = "[]" }
    local expect = reference.encode { a = "\1A", b = { "\1A", {}, { 1 } }, c = "[]" }:gsub('"\\u0001A"', "[]")
    assert.are.equal(expect, json.encode(v))
  end)

  it("writes every number so that it reads back as itself (cjson's 14 digits would change it)", function()
    -- cjson: 9.007199254741e+15, 0.33333333333333; an id or a time in
    -- microseconds came back as another number
    local cases = {
      { 123456789012345, "123456789012345" }, { -1234567890123456, "-1234567890123456" },
      { 2 ^ 53, "9007199254740992" }, { 1 / 3, "0.3333333333333333" }, { 0.1 + 0.2, "0.30000000000000004" },
      { 12.345678901234567, "12.345678901234567" }, { 1e300 / 3, "3.3333333333333335e+299" },
    }
    if doubles then
      cases[#cases + 1] = { 1e15, "1000000000000000" } -- a float with no fraction is an integer's text
    else
      cases[#cases + 1] = { 1e15, "1e+15" }
      cases[#cases + 1] = { 9007199254740993, "9007199254740993" }
      cases[#cases + 1] = { -123456789012345678, "-123456789012345678" }
      cases[#cases + 1] = { math.maxinteger, "9223372036854775807" }
      cases[#cases + 1] = { math.mininteger, "-9223372036854775808" }
    end
    for _, c in ipairs(cases) do
      local v, text = c[1], c[2]
      assert.are.equal(text, json.encode(v))
      assert.are.equal('{"n":' .. text .. "}", json.encode { n = v })
      assert.are.equal("[1," .. text .. ",[]]", json.encode { 1, v, json.array() })
      local back = json.decode(json.encode(v))
      assert.are.equal(v, back)
      -- (a float with no fraction reads back as an integer, as cjson's "1" for 1.0)
      if kind(v) == INT then assert.are.equal(INT, kind(back)) end
    end
    -- as keys, in quotes as cjson writes number keys
    assert.is_true(json.decode(json.encode { [123456789012345] = true, x = 1 })["123456789012345"])
    -- the rest of a value so walked is cjson's text
    local v = { id = 123456789012345, list = { 1, "two", false, json.null, 2.5 } }
    local expect = reference.encode { id = "\1A", list = v.list }:gsub('"\\u0001A"', "123456789012345")
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
