-- Soak: rounds of many requests in one process, mixing successes, 404s,
-- sock_read timeouts and resets. After the warm-up rounds, RSS and the
-- counts of tasks, ops, transfers, easy handles and sockets stay at their
-- baseline. AVIDEO_SOAK_N sets the requests per round (CI: 10,000; the
-- full soak: AVIDEO_SOAK_N=100000).
local N = tonumber(os.getenv("AVIDEO_SOAK_N")) or 10000
local ROUNDS = 5

describe("soak", function()
  it(("runs %d rounds of %d mixed requests and stays at its baseline"):format(ROUNDS, N), function()
    local dir = os.getenv("AVIDEO_SOURCE_DIR") or "."
    -- Under ASan, freed memory waits in a quarantine of 256 MiB by default,
    -- which takes more rounds than we run to fill: RSS would measure ASan.
    -- A 32 MiB quarantine fills in the warm-up and still catches reuse.
    local asan = os.getenv("ASAN_OPTIONS")
    local env = asan and ("ASAN_OPTIONS='%s:quarantine_size_mb=32' "):format(asan) or ""
    local pipe = assert(io.popen(("%stimeout 600 lua5.4 %s/spec/support/soak.lua %d %d 2>&1"):format(env, dir, N, ROUNDS)))
    local rounds = {}
    for line in pipe:lines() do
      print("  " .. line)
      local r = {}
      for k, v in line:gmatch("(%a+) (%d+)") do r[k] = tonumber(v) end
      if r.round then rounds[r.round] = r end
    end
    assert.is_true(pipe:close(), "the soak process failed")
    assert.are.equal(ROUNDS, #rounds)
    for _, r in ipairs(rounds) do
      assert.are.same({ N * 16 / 20, N * 2 / 20, N / 20, N / 20 }, { r.ok, r.http, r.timeout, r.protocol })
      assert.are.same({ 0, 0, 0, 0 }, { r.tasks, r.ops, r.transfers, r.jobs })
      assert.is_true(r.easy <= 50, "easy handles: " .. r.easy)
      assert.is_true(r.sockets <= 50 + 4, "sockets: " .. r.sockets)
    end
    -- rounds 1-2 warm up the pools, the Lua heap and the allocator; after
    -- that a leak of even 100 bytes a request would show as growth. ASan's
    -- allocator wanders by about a MiB with its quarantine; it rounds a
    -- 100-byte block up to 128 with its redzone, so 1.5 times the bound
    -- still catches a leak of 100 bytes a request.
    local growth = rounds[ROUNDS].rss - rounds[3].rss
    local bound = (asan and 1.5 or 1) * N / 10
    assert.is_true(growth < bound, ("RSS grew by %d KiB over %d requests"):format(growth, N * (ROUNDS - 3)))
  end)
end)
