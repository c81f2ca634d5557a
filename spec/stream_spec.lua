-- Streamed responses (stream = true) against Debian's nginx (sparse files
-- up to 1 GiB, a rate-limited location, gzip for chunked bodies) and the
-- test peer (bodies that break off, stall or are cut mid-chunk): the
-- response comes with its header block, the body through read(),
-- chunks(), save(), text() and json(), with memory bounded by a paused
-- transfer whatever the body's size. Peak memory is measured in a process
-- of its own (support/stream_rss.lua).
local avideo = require "avideo"
local nginx_support = require "support.nginx"
local peer_support = require "support.peer"
local settled = require "support.settled"

local GiB, MiB = 1024 * 1024 * 1024, 1024 * 1024
-- under valgrind (AVIDEO_SLOW) a body read in this process is 64 MiB, not
-- 1 GiB; the memory checks run their own process, never under valgrind
local READ = os.getenv("AVIDEO_SLOW") and 64 * MiB or GiB
local nginx, peer

local function collect_settled()
  collectgarbage()
  collectgarbage()
  settled()
end

local function run_rss(...)
  local dir = os.getenv("AVIDEO_SOURCE_DIR") or "."
  local args = { ... }
  for i, a in ipairs(args) do args[i] = ("%q"):format(a) end
  local pipe = assert(io.popen(("timeout 120 lua5.4 %s/spec/support/stream_rss.lua %s 2>&1")
    :format(dir, table.concat(args, " "))))
  local out = pipe:read("a")
  assert(pipe:close(), "stream_rss.lua failed: " .. out)
  local r = {}
  for k, v in out:gmatch("(%a+) (%d+)") do r[k] = tonumber(v) end
  print("  " .. out:gsub("\n$", ""))
  return r
end

describe("streamed responses", function()
  setup(function()
    nginx = nginx_support.start { files = { ["1g.bin"] = GiB, ["read.bin"] = READ, ["20m.bin"] = 20 * MiB,
                                            ["10m.bin"] = 10 * MiB, ["small.bin"] = 100000 } }
    peer = peer_support.start()
  end)
  teardown(function()
    if nginx then nginx.stop() end
    if peer then peer.stop() end
  end)
  after_each(collect_settled)

  it("come with their header block, before the body (here at 1 MiB/s)", function()
    local t0 = avideo.now()
    local r = avideo.get(nginx.url .. "/slow/10m.bin", { stream = true })
    assert.is_true(avideo.now() - t0 < 1)
    assert.are.equal(200, r.status)
    assert.is_true(r.ok)
    assert.are.equal(tostring(10 * MiB), r.headers["content-length"])
    assert.are.equal(nginx.url .. "/slow/10m.bin", r.url)
    assert.are.equal(r, r:raise_for_status())
    local piece = r:read(1000)
    assert.is_true(#piece > 0 and #piece <= 1000)
    r:close()
  end)

  it("read a 1 GiB body in pieces of at most n bytes, in a task and blocking", function()
    local r = avideo.get(nginx.url .. "/files/read.bin", { stream = true })
    local total, largest = 0, 0
    for chunk in r:chunks(65536) do
      total = total + #chunk
      if #chunk > largest then largest = #chunk end
    end
    assert.are.equal(READ, total)
    assert.are.equal(65536, largest)
    assert.is_nil(r:read()) -- the end stays the end
    avideo.run(function()
      local s <close> = avideo.session()
      local r2 = s:get(nginx.url .. "/files/20m.bin", { stream = true })
      local n = 0
      while true do
        local chunk = r2:read()
        if not chunk then break end
        n = n + #chunk
      end
      assert.are.equal(20 * MiB, n)
    end)
  end)

  it("read what is left with text() and json(), within max_body_size", function()
    local r = avideo.get(nginx.url .. "/files/small.bin", { stream = true })
    local head = r:read(100)
    assert.are.equal(100, #head)
    assert.are.equal(100000 - 100, #r:text())
    assert.are.equal(r:text(), r:text())
    -- a chunked, gzip-encoded body, decoded as it comes
    local z = avideo.get(nginx.url .. "/gzip/small.bin", { stream = true })
    assert.are.equal("gzip", z.headers["content-encoding"])
    assert.are.equal(("\0"):rep(100000), z:text())
    local big = avideo.get(nginx.url .. "/files/20m.bin", { stream = true, max_body_size = MiB })
    local ok, err = pcall(big.text, big)
    assert.is_false(ok)
    assert.is_true(avideo.is_error(err, "protocol"))
    assert.matches("max_body_size", err.message)
    local j = avideo.get(peer.url .. "/gzip", { stream = true })
    assert.is_true(j:json().compressed)
  end)

  it("save to a file through a .part file, and leave nothing behind on failure", function()
    local dir = assert(io.popen("mktemp -d"):read("l"))
    local path = dir .. "/out.bin"
    local r = avideo.get(nginx.url .. "/files/20m.bin", { stream = true })
    assert.are.equal(20 * MiB, r:save(path))
    local f = assert(io.open(path, "rb"))
    assert.are.equal(20 * MiB, f:seek("end"))
    f:close()
    assert.is_nil(io.open(path .. ".part"))
    -- a body that breaks off: the error is raised, no file is left
    local broken = avideo.get(peer.url .. "/reset-mid", { stream = true })
    local ok, err = pcall(broken.save, broken, dir .. "/broken.bin")
    assert.is_false(ok)
    assert.is_true(avideo.is_error(err, "protocol"))
    assert.is_nil(io.open(dir .. "/broken.bin"))
    assert.is_nil(io.open(dir .. "/broken.bin.part"))
    -- a directory that does not exist: a clear error, the response unread
    local r2 = avideo.get(nginx.url .. "/files/small.bin", { stream = true })
    ok, err = pcall(r2.save, r2, dir .. "/no/such/dir/out.bin")
    assert.is_false(ok)
    assert.is_true(avideo.is_error(err, "invalid"))
    assert.matches("no/such/dir/out.bin", err.message)
    r2:close()
    -- a buffered response saves too
    assert.are.equal(100000, avideo.get(nginx.url .. "/files/small.bin"):save(dir .. "/b.bin"))
    -- a device or a FIFO is written to as it is: no .part renamed over it
    -- (as root that would replace /dev/null with a file)
    local r3 = avideo.get(nginx.url .. "/files/20m.bin", { stream = true })
    assert.are.equal(20 * MiB, r3:save("/dev/null"))
    assert.is_true(os.execute("test -c /dev/null"))
    assert.is_nil(io.open("/dev/null.part"))
    assert.is_true(os.execute("mkfifo " .. dir .. "/fifo"))
    local reader = assert(io.popen("wc -c < " .. dir .. "/fifo"))
    assert.are.equal(100000, avideo.get(nginx.url .. "/files/small.bin"):save(dir .. "/fifo"))
    assert.are.equal(100000, tonumber(reader:read("a")))
    reader:close()
    assert.is_nil(io.open(dir .. "/fifo.part"))
    os.execute("rm -rf " .. dir)
  end)

  it("raise mid-body errors from read: a reset, a short body, a cut chunk, a stall", function()
    local function body_error(path, opts)
      local r = avideo.get(peer.url .. path, opts or { stream = true })
      assert.are.equal(200, r.status)
      local ok, err = pcall(function()
        for _ in r:chunks() do end
      end)
      assert.is_false(ok, path .. " read to its end")
      assert.is_true(avideo.is_error(err), tostring(err))
      return err
    end
    assert.are.equal("protocol", body_error("/reset-mid").kind)
    assert.are.equal("protocol", body_error("/short").kind)
    assert.are.equal("protocol", body_error("/chunked-cut").kind)
    local t0, c0 = avideo.now(), os.clock()
    local err = body_error("/stall", { stream = true, timeout = { sock_read = 0.3 } })
    assert.are.equal("timeout", err.kind)
    assert.are.equal("sock_read", err.phase)
    assert.is_true(avideo.now() - t0 < 3)
    -- the blocking read slept in the loop: it did not poll it 0.3 s long
    assert.is_true(os.clock() - c0 < 0.15, ("the wait took %.2f s of CPU"):format(os.clock() - c0))
  end)

  it("end when an error comes inside a blocking read's wait (an interrupt): the next read says cancelled", function()
    -- headers at once, then no byte: the read waits
    local r = avideo.get(peer.url .. "/stall", { stream = true, timeout = { sock_read = 5 } })
    -- lua.c's SIGINT handler raises "interrupted!" from a hook: here, as
    -- the wait is about to drive the loop
    debug.sethook(function()
      if debug.getinfo(2, "n").name == "step" then
        debug.sethook()
        error("interrupted!")
      end
    end, "c")
    local ok, err = pcall(r.read, r)
    debug.sethook()
    assert.is_false(ok)
    assert.matches("interrupted!", tostring(err))
    ok, err = pcall(r.read, r)
    assert.is_false(ok)
    assert.is_true(avideo.is_error(err, "cancelled"), tostring(err))
    r:close()
  end)

  it("pause the transfer while the reader lags: sock_read does not fire then", function()
    avideo.run(function()
      local s <close> = avideo.session { timeout = { sock_read = 0.3 } }
      local r = s:get(nginx.url .. "/files/1g.bin", { stream = true })
      assert.is_truthy(r:read(10))
      avideo.sleep(0.8) -- the buffer fills and the transfer pauses
      local n = 0
      for _ = 1, 100 do n = n + #r:read() end
      assert.is_true(n > 0)
      r:close()
    end)
  end)

  it("give their slot back when closed, dropped or raised for status", function()
    avideo.run(function()
      local s <close> = avideo.session { limit = 1 }
      do
        local r <close> = s:get(nginx.url .. "/files/1g.bin", { stream = true })
        assert.is_truthy(r:read(1))
        assert.are.same({ in_flight = 1, queued = 0, hosts = 1 }, s:stats())
      end
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
      -- dropped unread: collected, it ends its transfer and frees its slot
      -- (once the scheduler's last turn no longer holds its op)
      s:get(nginx.url .. "/files/1g.bin", { stream = true })
      avideo.sleep(0.01)
      collectgarbage()
      collectgarbage()
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
      -- the one slot is free for the next
      assert.are.equal(100000, #s:get(nginx.url .. "/files/small.bin", { stream = true }):text())
      local ok, err = pcall(s.get, s, peer.url .. "/status/404", { stream = true, raise_for_status = true })
      assert.is_false(ok)
      assert.is_true(avideo.is_error(err, "http"))
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
    end)
  end)

  it("close from another task when the reader's next bytes came in the same turn", function()
    avideo.run(function()
      local s <close> = avideo.session { limit = 1 }
      local r = s:get(peer.url .. "/drip", { stream = true }) -- a byte every 50 ms
      assert.are.equal("x", r:read())
      local closed = false
      local reader = avideo.spawn(function()
        while true do
          local ok, piece = pcall(r.read, r)
          if not ok then return piece end
          if closed then return "read " .. tostring(piece) .. " after the close" end
        end
      end)
      avideo.spawn(function()
        avideo.sleep(0.01)
        r:close()
        closed = true
      end)
      avideo.sleep(0) -- the reader waits for its next byte, the closer for its time
      -- busy: the closer's time comes and bytes arrive meanwhile, so one
      -- turn of the loop hands both over: whichever runs first, the
      -- reader must not read on past the close
      local t0 = os.clock()
      while os.clock() - t0 < 0.2 do end
      local e = reader:wait()
      assert.is_true(closed)
      assert.is_true(avideo.is_error(e, "invalid"), tostring(e))
      assert.matches("closed", e.message)
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
    end)
  end)

  it("give their slot back when their task is cancelled as the header block comes", function()
    -- A stream's op can be handed over in the very turn its task is
    -- cancelled (a gather's other item failed first): the task never gets
    -- the op, and cancelling the op must end the transfer, or the slot
    -- waits for the collector. The op is taken from a response here, to
    -- stand for that task's, which cannot be reached at the right moment.
    avideo.run(function()
      local s <close> = avideo.session { limit = 1 }
      local r = s:get(nginx.url .. "/files/1g.bin", { stream = true })
      assert.are.same({ in_flight = 1, queued = 0, hosts = 1 }, s:stats())
      assert.is_true(r._op:cancel())
      assert.are.same({ in_flight = 0, queued = 0, hosts = 0 }, s:stats())
      assert.are.equal(100000, #s:get(nginx.url .. "/files/small.bin", { stream = true }):text())
    end)
  end)

  it("refuse to save a body already read to its end, leaving the file as it was", function()
    local path = os.tmpname()
    local r = avideo.get(nginx.url .. "/files/small.bin", { stream = true })
    assert.are.equal(100000, r:save(path))
    for _, again in ipairs { function() return r:save(path) end, function() return r:save(path .. ".b") end } do
      local ok, err = pcall(again)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(err, "invalid"), tostring(err))
      assert.matches("already read to its end", err.message, 1, true)
    end
    local f = assert(io.open(path, "rb"))
    assert.are.equal(100000, #f:read("a"))
    f:close()
    assert.is_nil(io.open(path .. ".b")) -- nothing made either
    -- read to its end by chunks too
    r = avideo.get(nginx.url .. "/files/small.bin", { stream = true })
    for _ in r:chunks() do end
    assert.is_false(pcall(r.save, r, path))
    f = assert(io.open(path, "rb"))
    assert.are.equal(100000, #f:read("a"))
    f:close()
    os.remove(path)
  end)

  it("follow redirects to the final response before handing it over", function()
    local r = avideo.get(peer.url .. "/redirect?to=" .. nginx.url .. "/files/small.bin", { stream = true })
    assert.are.equal(200, r.status)
    assert.are.equal(nginx.url .. "/files/small.bin", r.url)
    assert.are.equal(100000, #r:text())
  end)

  it("end as cancelled when the loop is closed under them (a host shutting down)", function()
    local dir = os.getenv("AVIDEO_SOURCE_DIR") or "."
    local pipe = assert(io.popen(("timeout 60 lua5.4 %s/spec/support/stream_abort.lua %s 2>&1")
      :format(dir, nginx.url .. "/files/1g.bin")))
    local out = pipe:read("a")
    assert(pipe:close(), out)
    assert.matches("first 100\ntransfers 1\nerror cancelled\nbuffered %d+\ndone\n$", out)
  end)

  it("keep a trailer that looks like a status line a trailer, buffered or streamed", function()
    assert.are.equal(("a"):rep(1000), avideo.get(peer.url .. "/status-trailer"):text())
    local r = avideo.get(peer.url .. "/status-trailer", { stream = true })
    assert.are.equal(("a"):rep(1000), r:text())
  end)

  it("drop the body of a redirect they follow, however large", function()
    local r = avideo.get(peer.url .. "/redirect-big", { stream = true, timeout = 5 })
    assert.are.equal(200, r.status)
    assert.are.equal("xxxxxxxxxx", r:text())
  end)

  it("do not time out on sock_read while nobody reads them", function()
    avideo.run(function()
      local s <close> = avideo.session { timeout = { sock_read = 0.2 } }
      local r = s:get(nginx.url .. "/files/20m.bin", { stream = true })
      avideo.sleep(0.6) -- held, unread: the transfer pauses, no clock runs
      local n = 0
      for chunk in r:chunks() do n = n + #chunk end
      assert.are.equal(20 * MiB, n)
    end)
  end)

  it("refuse bad input with a clear error", function()
    local function invalid(fn, pattern)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(err, "invalid"), tostring(err))
      assert.matches(pattern, err.message)
    end
    local r = avideo.get(nginx.url .. "/files/small.bin", { stream = true })
    invalid(function() r:read(-1) end, "whole number > 0")
    invalid(function() r:read("x") end, "whole number > 0")
    invalid(function() r:read(1.5) end, "whole number > 0")
    invalid(function() r:chunks(0) end, "whole number > 0")
    r:close()
    invalid(function() r:read() end, "closed")
    invalid(function() avideo.get(nginx.url .. "/files/small.bin"):read() end, "streamed responses")
    invalid(function() avideo.get(nginx.url .. "/files/small.bin", { stream = "yes" }) end, "stream")
  end)

  it("decode a gzip body as it is read, in the same memory: 512 MiB of zeros from half a MiB", function()
    -- libcurl decoded a whole read (64 KiB in, 64 MiB out) at once, and a
    -- paused stream kept the rest and copied it again at every pause: this
    -- body failed as "Out of memory" at 78 MB, and gentler ones ran slowly
    local dir = assert(io.popen("mktemp -d"):read("l"))
    local saved = run_rss("save", peer.url .. "/gzip-bomb?mib=512", dir .. "/zeros.bin")
    os.execute("rm -rf " .. dir)
    assert.are.equal(512 * MiB, saved.bytes)
    assert.is_true(saved.peak < 40 * 1024, "512 MiB decoded peaked at " .. saved.peak .. " KiB")
    avideo.run(function()
      local r <close> = avideo.get(peer.url .. "/gzip-bomb?mib=64", { stream = true })
      assert.are.equal("gzip", r.headers["content-encoding"])
      local n = 0
      for chunk in r:chunks(65536) do
        assert.is_true(#chunk <= 65536)
        n = n + #chunk
      end
      assert.are.equal(64 * MiB, n)
      local doc <close> = avideo.get(peer.url .. "/gzip", { stream = true })
      assert.is_true(doc:json().compressed)
      local bad <close> = avideo.get(peer.url .. "/bad-gzip", { stream = true })
      local ok, e = pcall(bad.text, bad)
      assert.is_false(ok)
      assert.is_true(avideo.is_error(e, "protocol"), tostring(e))
      assert.matches("compressed body is broken", e.message, 1, true)
      local cut <close> = avideo.get(peer.url .. "/gzip-cut", { stream = true })
      ok, e = pcall(cut.text, cut)
      assert.is_false(ok)
      assert.matches("compressed body was cut short", tostring(e), 1, true)
      -- deflate, zlib-wrapped or raw; a coding avideo does not decode is an error
      for _, q in ipairs { "", "?raw=1" } do
        local d <close> = avideo.get(peer.url .. "/deflate" .. q, { stream = true })
        assert.are.same({ deflated = true }, d:json())
      end
      local br <close> = avideo.get(peer.url .. "/deflate?coding=br", { stream = true })
      ok, e = pcall(br.text, br)
      assert.is_false(ok)
      assert.matches("Content%-Encoding avideo does not decode", tostring(e))
      -- two gzip members: both; bytes after the end: an error, not dropped
      local two <close> = avideo.get(peer.url .. "/gzip-members", { stream = true })
      assert.are.equal(("a"):rep(70000) .. ("b"):rep(70000), two:text())
      local junk <close> = avideo.get(peer.url .. "/gzip-members?junk=1", { stream = true })
      ok, e = pcall(junk.text, junk)
      assert.is_false(ok)
      assert.matches("data after the end of the compressed body", tostring(e), 1, true)
      -- a transfer cut short: what came is read decoded, then the error
      local short <close> = avideo.get(peer.url .. "/gzip-members?short=1", { stream = true })
      local got, err = {}, nil
      while true do
        local okr, piece = pcall(short.read, short)
        if not okr then err = piece break end
        if piece == nil then break end
        got[#got + 1] = piece
      end
      assert.are.equal(("a"):rep(70000), table.concat(got))
      assert.is_true(avideo.is_error(err, "protocol"), tostring(err))
      -- a HEAD's answer that names br has no body to decode either
      local head_br <close> = avideo.head(peer.url .. "/deflate?coding=br", { stream = true })
      assert.are.equal("", head_br:text())
      -- a HEAD's answer says gzip and has no body: empty, not cut short
      local head <close> = avideo.head(peer.url .. "/gzip", { stream = true })
      assert.are.equal("gzip", head.headers["content-encoding"])
      assert.are.equal("", head:text())
    end)
    collect_settled()
  end)

  it("keep memory bounded: 1 GiB saved, 100 downloads at once, 1 GiB uploaded, a slow reader", function()
    local dir = assert(io.popen("mktemp -d"):read("l"))
    local saved = run_rss("save", nginx.url .. "/files/1g.bin", dir .. "/1g.bin")
    os.execute("rm -rf " .. dir)
    assert.are.equal(GiB, saved.bytes)
    assert.is_true(saved.peak < 40 * 1024, "1 GiB saved peaked at " .. saved.peak .. " KiB")
    local many = run_rss("many", nginx.url .. "/files/20m.bin", "100")
    assert.are.equal(100 * 20 * MiB, many.bytes)
    assert.is_true(many.peak < 100 * 1024, "100 x 20 MiB peaked at " .. many.peak .. " KiB")
    local upload = run_rss("upload", nginx.url .. "/discard", nginx.dir .. "/files/1g.bin")
    assert.are.equal(204, upload.status)
    assert.is_true(upload.peak < 40 * 1024, "a 1 GiB avideo.file upload peaked at " .. upload.peak .. " KiB")
    local slow = run_rss("slow", nginx.url .. "/files/1g.bin", "3")
    assert.is_true(slow.bytes > 0)
    assert.is_true(slow.last - slow.first < 2048, ("a slow reader grew from %d to %d KiB"):format(slow.first, slow.last))
  end)
end)
