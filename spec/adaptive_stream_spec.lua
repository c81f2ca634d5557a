-- limit_per_host = "auto" and streamed responses (issue 18): a reader
-- that takes a stream's body slowly pauses its transfer, and that pause is
-- the reader's pace, not the server's queue: the latency the adaptive limit
-- learns from leaves it out, so slow readers do not collapse the limit.
-- Against the test peer's /big: 512 KiB (eight fills of the 64 KiB stream
-- buffer) after a steady 100 ms of the server's own (on localhost a fast
-- server's sub-ms latencies are jitter to a latency-based limit).
local avideo = require "avideo"
local peer_support = require "support.peer"
local settled = require "support.settled"

local SIZE = 512 * 1024
local SERVER_MS = 100
local PAUSE = 0.04 -- the slow reader's sleep after each piece: ~0.3 s a body, 3x the server's part
local peer
local slack = os.getenv("AVIDEO_SLOW") == "1" and 2 or 1 -- valgrind: libcurl's own part is slow too

-- Stream the body; sleep `pause` after each piece read.
local function fetch(s, pause)
  local r = s:get(("%s/big?bytes=%d&ms=%d"):format(peer.url, SIZE, SERVER_MS), { stream = true })
  assert.are.equal(200, r.status)
  local got = 0
  while true do
    local piece = r:read()
    if not piece then break end
    got = got + #piece
    if pause > 0 then avideo.sleep(pause) end
  end
  assert.are.equal(SIZE, got)
end

describe("adaptive limits and slow stream readers", function()
  setup(function() peer = peer_support.start() end)
  teardown(function() if peer then peer.stop() end end)
  after_each(settled)

  it("leave the reader's pace out of the latency: the limit does not collapse", function()
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = "auto" }
      -- read at once: the best latency is the server's and the network's
      local quick = {}
      for i = 1, 8 do quick[i] = function() fetch(s, 0) end end
      avideo.gather(quick, { limit = 4 })
      local best = s:limits()[peer.url]
      -- then slow readers, more than the limit at once
      local slow, lowest = {}, math.huge
      for i = 1, 32 do
        slow[i] = function()
          fetch(s, PAUSE)
          lowest = math.min(lowest, s:limits()[peer.url].limit)
        end
      end
      local t0 = avideo.now()
      avideo.gather(slow, { limit = 16 })
      local took = avideo.now() - t0
      local seen = s:limits()[peer.url]
      print(("\nslow readers: %d streams in %.2f s; latency best %.1f ms, recent %.1f ms (the server's part %d ms, "
        .. "the reader's ~%d ms); limit %d after the quick ones, %d at the end, lowest %d"):format(#slow, took,
        seen.latency_min * 1e3, seen.latency_recent * 1e3, SERVER_MS, PAUSE * 8 * 1e3, best.limit, seen.limit,
        lowest))
      -- the reader's pace would make it ~4x the best: measured near it
      assert.is_true(seen.latency_recent < 1.5 * slack * seen.latency_min, seen.latency_recent)
      -- counting it cuts the limit at every round, down to 1 (measured);
      -- left out, it dips at most as latency jitters (4 under ASan on a
      -- busy machine) and ends above where "auto" starts
      assert.is_true(lowest >= 3, lowest)
      assert.is_true(seen.limit >= 4, seen.limit)
    end)
  end)

  it("learn nothing from a stream closed or dropped before its end", function()
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = "auto" }
      for i = 1, 4 do
        local r = s:get(("%s/big?bytes=%d&ms=%d"):format(peer.url, SIZE, SERVER_MS), { stream = true })
        assert.is_truthy(r:read()) -- a piece, then no more: not a whole answer
        if i % 2 == 0 then r:close() end
        r = nil -- luacheck: ignore (dropped: collected below)
        collectgarbage()
      end
      local row = s:limits()[peer.url]
      -- no sample: its latency, the time to a first piece, would become
      -- the best, and every whole download would then look slow
      assert.is_nil(row and row.latency_min)
    end)
  end)

  it("take a timeout spent waiting for the reader as the reader's", function()
    avideo.run(function()
      local s <close> = avideo.session { limit_per_host = { initial = 8 } }
      local r = s:get(("%s/big?bytes=%d"):format(peer.url, SIZE), { stream = true, timeout = { total = 0.3 } })
      assert.is_truthy(r:read())
      avideo.sleep(0.5) -- paused for us past the total timeout
      local ok, err = pcall(function() while r:read() do end end)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(err, "timeout"), tostring(err))
      assert.equal(8, s:limits()[peer.url].limit) -- not halved: the server was not slow
    end)
  end)
end)
