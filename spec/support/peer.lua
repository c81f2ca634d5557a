--- Start and stop spec/support/peer.py, the recording and misbehaving HTTP
-- peer of the module specs. `start()` -> { url, url2, port, stop() }, where
-- url2 reaches the same peer as another host (127.0.0.2), and blackhole is
-- a URL whose connect never completes, tls an https origin whose
-- certificate is self-signed and tls_cert that certificate's file;
-- small_buffer reaches the same peer through a listener whose connections
-- have a small receive buffer (uploads go at the pace the peer reads);
-- connect_proxy is a proxy that speaks only CONNECT (https through an http
-- proxy), whose requests /connect-seen lists.
local server_support = require "support.server"

local M = {}

function M.start()
  local dir = (os.getenv("AVIDEO_SOURCE_DIR") or ".") .. "/spec/support/"
  -- stderr to a file: aiohttp logs the peer's own misbehaviour there, and a
  -- pipe nobody drains would block it
  local log = os.tmpname()
  local pipe = assert(io.popen("echo $$; exec /usr/bin/python3 " .. dir .. "peer.py 2>" .. log, "r"))
  local pid = tonumber(pipe:read("*l"))
  local line = pipe:read("*l")
  local port = (line or ""):match("^peer listening on http://127%.0%.0%.1:(%d+)$")
  if not port then
    pipe:close()
    local f = io.open(log)
    local why = f and f:read("*a") or ""
    if f then f:close() end
    os.remove(log)
    error("test peer did not start: " .. tostring(line) .. " " .. why, 2)
  end
  local hole = (pipe:read("*l") or ""):match("^blackhole (%d+)$")
  local tls, cert = (pipe:read("*l") or ""):match("^tls (%d+) (.+)$")
  local small = (pipe:read("*l") or ""):match("^small%-buffer (%d+)$")
  local connect = (pipe:read("*l") or ""):match("^connect%-proxy (%d+)$")
  local peer = { pid = pid, port = tonumber(port), blackhole = "http://127.0.0.1:" .. tostring(hole) .. "/",
                 tls = "https://127.0.0.1:" .. tostring(tls), tls_cert = cert,
                 small_buffer = "http://127.0.0.1:" .. tostring(small),
                 connect_proxy = "http://127.0.0.1:" .. tostring(connect),
                 url = "http://127.0.0.1:" .. port, url2 = "http://127.0.0.2:" .. port }
  function peer.stop()
    if peer.stopped then return end
    peer.stopped = true
    os.execute("kill -TERM " .. pid .. " 2>/dev/null")
    server_support.reap(pid, 10) -- bounded: a peer that ignores SIGTERM is killed
    pipe:close()
    os.remove(log)
  end
  -- a spec that failed before stop() must not leave the peer running, nor
  -- wait on its pipe forever when the pipe is collected
  setmetatable(peer, { __gc = function(p)
    if not p.stopped then os.execute("kill -KILL " .. pid .. " 2>/dev/null") end
  end })
  return peer
end

return M
