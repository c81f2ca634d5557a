-- Soak: rounds of many requests in one process, mixing successes, 404s,
-- sock_read timeouts and resets. After the warm-up rounds, RSS and the
-- counts of tasks, ops, transfers, easy handles and sockets stay at their
-- baseline. AVIDEO_SOAK_N sets the requests per round (CI: 10,000; the
-- full soak: AVIDEO_SOAK_N=100000).
local N = tonumber(os.getenv("AVIDEO_SOAK_N")) or 10000
local ROUNDS = 5
local soak_rounds = require "support.soak_rounds"

describe("soak", function()
  it(("runs %d rounds of %d mixed requests and stays at its baseline"):format(ROUNDS, N), function()
    local rounds = soak_rounds("soak.lua", N, ROUNDS, 600)
    for _, r in ipairs(rounds) do
      assert.are.same({ N * 16 / 20, N * 2 / 20, N / 20, N / 20 }, { r.ok, r.http, r.timeout, r.protocol })
      assert.are.same({ 0, 0, 0, 0 }, { r.tasks, r.ops, r.transfers, r.jobs })
      assert.is_true(r.easy <= 50, "easy handles: " .. r.easy)
      assert.is_true(r.sockets <= 50 + 4, "sockets: " .. r.sockets)
    end
    -- rounds 1-2 warm up the pools, the Lua heap and the allocator; after
    -- that a leak of even 100 bytes a request would show as growth. In an
    -- ASan build RSS measures its quarantine and wanders by megabytes, so
    -- the live heap it counts (exact, every byte malloc'd and not freed)
    -- is checked instead.
    local measure = rounds[ROUNDS].heap and "heap" or "rss"
    local growth = rounds[ROUNDS][measure] - rounds[3][measure]
    assert.is_true(growth < N / 10, ("%s grew by %d KiB over %d requests"):format(measure, growth, N * (ROUNDS - 3)))
  end)
end)
