-- avideo-server: every row of the contract (docs/server.md, "What it
-- serves"), the key order, and the generated data. Talks HTTP to the real
-- binary on port 0.
local support = require "support.server"
local client = require "support.server_client"
local json = client.json

local function assert_clean_exit(server)
  assert(support.stop_clean(server))
end

-- Top-level keys of a compact JSON object, in the order they appear.
local function key_order(body)
  local keys = {}
  for key in body:gmatch('[{,]"([%w_]+)":') do keys[#keys + 1] = key end
  return keys
end

-- Number of sentences ("Capital words." separated by one space) text is
-- made of; fails on anything else.
local function sentences(text)
  local n = 0
  local rest = (text .. " "):gsub("(.-%.) ", function(sentence)
    assert(sentence:match("^%u%l*[%a ]*%a%.$") and not sentence:find("  "), sentence)
    n = n + 1
    return ""
  end)
  assert(rest == "", text)
  return n
end

local VIDEO_KEYS = { "id", "title", "description", "upload_date", "views", "warnings" }

describe("avideo-server data #server", function()
  after_each(support.stop_scoped)

  local server, ids

  setup(function()
    server = support.start { time_scale = 0 }
    ids = client.get_json(server.url .. "/videos/?n=1000")
  end)
  teardown(function() assert_clean_exit(server) end)

  it("has 1000 unique lowercase word ids", function()
    assert.are.equal(1000, #ids)
    local seen = {}
    for _, id in ipairs(ids) do
      assert.is_truthy(id:match("^[a-z]+$"), id)
      assert.is_nil(seen[id], "duplicate id " .. id)
      seen[id] = true
    end
  end)

  it("lists the first N ids in store order", function()
    local first100 = client.get_json(server.url .. "/videos/")
    assert.are.equal(100, #first100)
    assert.are.same({ table.unpack(ids, 1, 100) }, first100)
    assert.are.same({ table.unpack(ids, 1, 5) }, client.get_json(server.url .. "/videos/?n=5"))
    assert.are.same({ table.unpack(ids, 1, 7) }, client.get_json(server.url .. "/videos/?n=%2B7"))
    assert.are.same({ table.unpack(ids, 1, 3) }, client.get_json(server.url .. "/videos/?n=%203%20"))
  end)

  it("serves /videos?n=N as /videos/?n=N", function()
    local r = client.get(server.url .. "/videos?n=5")
    assert.are.equal(200, r.status)
    assert.are.same({ table.unpack(ids, 1, 5) }, json.decode(r.body))
    assert.are.same(client.get_json(server.url .. "/videos"), client.get_json(server.url .. "/videos/"))
  end)

  it("gives [] for n=0, everything past the end, and Python's slice for n<0", function()
    local r = client.get(server.url .. "/videos/?n=0")
    assert.are.equal(200, r.status)
    assert.are.equal("[]", r.body)
    assert.are.equal(1000, #client.get_json(server.url .. "/videos/?n=5000"))
    assert.are.equal(1000, #client.get_json(server.url .. "/videos/?n=99999999999999999999999"))
    local but_last = client.get_json(server.url .. "/videos/?n=-1")
    assert.are.same({ table.unpack(ids, 1, 999) }, but_last)
    assert.are.equal("[]", client.get(server.url .. "/videos/?n=-0").body)
    assert.are.equal("[]", client.get(server.url .. "/videos/?n=-5000").body)
  end)

  it("answers compact JSON with content-type application/json", function()
    for _, path in ipairs { "/videos/?n=2", "/videos/" .. ids[1], "/videos/" .. ids[1] .. "/transcript",
                            "/videos/nope", "/nope" } do
      local r = client.get(server.url .. path)
      assert.are.equal("application/json", r.headers["content-type"], path)
      assert.is_nil(r.body:find("[\n]"), path)
      assert.is_nil(r.body:find('": ', 1, true), path)
      assert.is_nil(r.body:find('", "', 1, true), path)
    end
  end)

  it("has videos with the contract's keys, in order, and sane values", function()
    local urls = {}
    for i = 1, 1000 do urls[i] = server.url .. "/videos/" .. ids[i] end
    local bodies = client.get_many(urls)
    assert.are.equal(1000, #bodies)
    for i, body in ipairs(bodies) do
      assert.are.same(VIDEO_KEYS, key_order(body))
      local v = json.decode(body)
      assert.are.equal(ids[i], v.id)
      assert.are.equal(1, sentences(v.title))
      assert.is_true(sentences(v.description) >= 2, v.description)
      local y, m, d = v.upload_date:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
      y, m, d = tonumber(y), tonumber(m), tonumber(d)
      assert.is_true(y >= 2020 and y <= 2029 and m >= 1 and m <= 12 and d >= 1 and d <= 31, v.upload_date)
      assert.are.equal(v.upload_date, os.date("!%Y-%m-%d", os.time { year = y, month = m, day = d, hour = 12 }))
      assert.is_truthy(body:find('"views":' .. math.tointeger(v.views) .. ',', 1, true)) -- an integer
      assert.is_true(v.views >= 0 and v.views <= 1000000)
      assert.is_truthy(body:find('"warnings":[]', 1, true))
    end
  end)

  it("has five-paragraph transcripts, a deterministic few mentioning NASA", function()
    local urls = {}
    for i = 1, 1000 do urls[i] = server.url .. "/videos/" .. ids[i] .. "/transcript" end
    local bodies = client.get_many(urls)
    assert.are.equal(1000, #bodies)
    local nasa, nasa_first100 = 0, 0
    for i, body in ipairs(bodies) do
      local text = json.decode(body)
      assert.are.equal("string", type(text))
      local paragraphs = {}
      for p in (text .. "\n\n"):gmatch("(.-)\n\n") do paragraphs[#paragraphs + 1] = p end
      assert.are.equal(5, #paragraphs)
      for _, p in ipairs(paragraphs) do assert.is_true(sentences(p) >= 2, p) end
      if text:lower():find("nasa", 1, true) then
        assert.is_truthy(text:find("NASA", 1, true))
        nasa = nasa + 1
        if i <= 100 then nasa_first100 = nasa_first100 + 1 end
      end
    end
    assert.are.equal(25, nasa) -- one per block of 40 videos
    assert.is_true(nasa_first100 >= 2 and nasa_first100 <= 3)
  end)

  it("is the same on every run for a seed, and differs with the seed", function()
    local again = support.start_scoped { time_scale = 0 }
    local other = support.start_scoped { time_scale = 0, seed = 1 }
    local paths = { "/videos/?n=1000", "/videos/" .. ids[1], "/videos/" .. ids[500] .. "/transcript" }
    for _, path in ipairs(paths) do
      assert.are.equal(client.get(server.url .. path).body, client.get(again.url .. path).body)
    end
    assert.are_not.equal(client.get(server.url .. paths[1]).body, client.get(other.url .. paths[1]).body)
    assert_clean_exit(again)
    assert_clean_exit(other)
  end)

  it("keeps ids unique and word-like past the vocabulary (--videos)", function()
    local big = support.start_scoped { time_scale = 0, videos = 5000 }
    local many = client.get_json(big.url .. "/videos/?n=5000")
    assert.are.equal(5000, #many)
    local seen = {}
    for _, id in ipairs(many) do
      assert.is_truthy(id:match("^[a-z]+$"), id)
      assert.is_nil(seen[id])
      seen[id] = true
    end
    assert.are.equal(200, client.get(big.url .. "/videos/" .. many[5000]).status)
    assert_clean_exit(big)
    local none = support.start_scoped { time_scale = 0, videos = 0 }
    assert.are.equal("[]", client.get(none.url .. "/videos/").body)
    assert.are.equal(404, client.get(none.url .. "/videos/student").status)
    assert_clean_exit(none)
  end)
end)

describe("avideo-server contract at time scale 1 #server", function()
  after_each(support.stop_scoped)

  local server, id, other

  setup(function()
    server = support.start {}
    local ids = client.get_json(server.url .. "/videos/?n=2")
    id, other = ids[1], ids[2]
  end)
  teardown(function() assert_clean_exit(server) end)

  -- The measured time includes curl's connect: allow a little over.
  local function assert_delay(expected, r)
    assert.is_true(r.time >= expected and r.time < expected + 0.1,
                   ("took %.3f s, expected %.3f s"):format(r.time, expected))
  end

  it("lists after 50 ms, and refuses a non-integer n at once with 422", function()
    assert_delay(0.05, client.get(server.url .. "/videos/?n=3"))
    for _, n in ipairs { "abc", "", "1.5", "0x10", "1e3", "5%00", "%FF", "--1" } do
      local r = client.get(server.url .. "/videos/?n=" .. n)
      assert.are.equal(422, r.status, n)
      assert.is_true(r.time < 0.04, n)
      local detail = json.decode(r.body).detail
      assert.are.equal("int_parsing", detail[1].type)
      assert.are.same({ "query", "n" }, detail[1].loc)
    end
    assert.are.equal(422, client.get(server.url .. "/videos/?n").status)
  end)

  -- GET path: 200 after delay, or 404 for an unknown id after the same.
  local function assert_answer(path, delay, status)
    local r = client.get(server.url .. path)
    assert.are.equal(status, r.status)
    assert.are.equal("application/json", r.headers["content-type"])
    assert_delay(delay, r)
    if status == 404 then assert.are.equal('{"detail":"Video not found"}', r.body) end
    return r
  end

  it("answers GET /videos/{id} after 0.2 s, and an unknown id with 404 after the same", function()
    assert.are.same(VIDEO_KEYS, key_order(assert_answer("/videos/" .. id, 0.2, 200).body))
    assert_answer("/videos/nosuchvideo", 0.2, 404)
  end)

  it("answers the transcript after 0.1 s as a JSON string, 404 for an unknown id", function()
    local r = assert_answer("/videos/" .. id .. "/transcript", 0.1, 200)
    assert.are.equal("string", type(json.decode(r.body)))
    assert_answer("/videos/nosuchvideo/transcript", 0.1, 404)
  end)

  it("merges a PATCH after 50 ms, keeping key order, visible to later GETs", function()
    local r = client.request("PATCH", server.url .. "/videos/" .. id,
                             { body = '{"warnings":["NASA"],"rating":4,"tags":[]}' })
    assert.are.equal(200, r.status)
    assert.are.equal('"success"', r.body)
    assert_delay(0.05, r)
    local body = client.get(server.url .. "/videos/" .. id).body
    assert.are.same({ "id", "title", "description", "upload_date", "views", "warnings", "rating", "tags" },
                    key_order(body))
    local v = json.decode(body)
    assert.are.same({ "NASA" }, v.warnings)
    assert.are.equal(4, v.rating)
    -- overwrite an existing key and add one more: positions stay
    r = client.request("PATCH", server.url .. "/videos/" .. id, { body = '{"title":"New title.","late":null}' })
    assert.are.equal(200, r.status)
    body = client.get(server.url .. "/videos/" .. id).body
    assert.are.same({ "id", "title", "description", "upload_date", "views", "warnings", "rating", "tags", "late" },
                    key_order(body))
    assert.is_truthy(body:find('"title":"New title."', 1, true))
    assert.is_truthy(body:find('"late":null}', 1, true))
    -- the other videos are untouched
    assert.are.same(VIDEO_KEYS, key_order(client.get(server.url .. "/videos/" .. other).body))
  end)

  it("answers PATCH of an unknown id with 404 after 50 ms", function()
    local r = client.request("PATCH", server.url .. "/videos/nosuchvideo", { body = '{"a":1}' })
    assert.are.equal(404, r.status)
    assert.are.equal('{"detail":"Video not found"}', r.body)
    assert_delay(0.05, r)
  end)

  it("refuses a PATCH body that is not a JSON object with 422 at once, changing nothing", function()
    local before = client.get(server.url .. "/videos/" .. other).body
    for _, body in ipairs { "[1,2]", '"x"', "3", "null", "{bad", "", "{}{}", '{"a":1' } do
      local r = client.request("PATCH", server.url .. "/videos/" .. other, { body = body })
      assert.are.equal(422, r.status, body)
      assert.is_true(r.time < 0.04, body)
      assert.are.equal("application/json", r.headers["content-type"])
      assert.are.equal("table", type(json.decode(r.body).detail), body)
    end
    assert.are.equal(before, client.get(server.url .. "/videos/" .. other).body)
  end)

  it("answers unknown paths with 404 and other methods with 405, in JSON, at once", function()
    for _, path in ipairs { "/", "/video", "/videosx", "/videos/" .. id .. "/", "/videos//transcript",
                            "/videos/" .. id .. "/transcript/", "/videos/" .. id .. "/other", "/videos/a/b/c" } do
      local r = client.get(server.url .. path)
      assert.are.equal(404, r.status, path)
      assert.are.equal('{"detail":"Not Found"}', r.body, path)
      assert.is_true(r.time < 0.04, path)
    end
    local cases = {
      { "POST", "/videos/", "GET" }, { "PATCH", "/videos", "GET" }, { "DELETE", "/videos/" .. id, "GET, PATCH" },
      { "PUT", "/videos/" .. id, "GET, PATCH" }, { "POST", "/videos/" .. id .. "/transcript", "GET" },
      { "PATCH", "/videos/" .. id .. "/transcript", "GET" }, { "OPTIONS", "/videos/", "GET" },
      { "BREW", "/videos/" .. id, "GET, PATCH" },
    }
    for _, case in ipairs(cases) do
      local r = client.request(case[1], server.url .. case[2])
      assert.are.equal(405, r.status, case[1] .. " " .. case[2])
      assert.are.equal(case[3], r.headers["allow"])
      assert.are.equal('{"detail":"Method Not Allowed"}', r.body)
    end
    local head = client.request("HEAD", server.url .. "/videos/" .. id)
    assert.are.equal(405, head.status)
  end)

  it("counts connections and requests in flight at /stats, from its own side", function()
    local fresh = support.start_scoped { time_scale = 0.5 }
    local first = client.get_json(fresh.url .. "/stats")
    -- this request is the first on the first connection, and in flight
    assert.are.same({ connections = 1, open_connections = 1, requests = 1, in_flight = 1, max_in_flight = 1 },
                    first)
    -- six requests at once, each on its own connection, each 0.1 s or more
    local urls = {}
    for i = 1, 6 do urls[i] = fresh.url .. "/videos/" .. id end
    for _, r in ipairs(client.parallel(urls)) do assert.are.equal(200, r.status) end
    local after = client.get_json(fresh.url .. "/stats")
    assert.are.equal(8, after.connections)
    assert.are.equal(8, after.requests)
    assert.are.equal(1, after.in_flight)
    assert.are.equal(6, after.max_in_flight)
    assert.is_true(after.open_connections >= 1 and after.open_connections <= 8)
    assert.are.equal(405, client.request("POST", fresh.url .. "/stats").status)
    -- a request that is refused before its body counts and ends too
    local refused = client.request("PATCH", fresh.url .. "/videos/" .. id,
                                   { headers = { "Content-Length: 99999999" }, body = "{}" })
    assert.are.equal(413, refused.status)
    local last = client.get_json(fresh.url .. "/stats")
    assert.are.equal(11, last.requests)
    assert.are.equal(1, last.in_flight)
  end)

  it("keeps connections alive across requests", function()
    local sock = client.connect(server)
    for _, path in ipairs { "/videos/" .. id, "/videos/?n=1", "/nope", "/videos/" .. id .. "/transcript" } do
      assert(sock:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
      local status, headers = client.read_response(sock)
      assert.is_truthy(status, path)
      assert.is_not.equal("close", (headers.connection or ""):lower())
    end
    sock:close()
  end)
end)
