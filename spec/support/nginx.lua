--- Start and stop Debian's nginx (nginx-light) for the streaming specs.
-- start{ files = { name = bytes, ... } } makes each file sparse (truncate:
-- a 1 GiB file costs no disk) in a directory of its own and serves it as
--   /files/<name>    as is (Content-Length, sendfile),
--   /slow/<name>     at 1 MiB/s (limit_rate),
--   /gzip/<name>     gzip-compressed, so chunked and decoded by libcurl;
--   /discard         any request body read and dropped, then 204;
--   anything else    proxied to the Host it names: a forward proxy for
--                    plain HTTP (no CONNECT), which adds the request
--                    headers X-Via-Proxy and X-Proxy-Auth (the
--                    Proxy-Authorization it got) and the response header
--                    X-Proxied-By;
-- and returns { url, dir, stop() }. nginx runs in the foreground, one
-- process, and dies with the Lua process that started it (setpriv's
-- parent-death signal), so a killed spec leaves none behind.
local server_support = require "support.server"

local M = {}

local function free_port()
  local socket = require "socket"
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function config(dir, port)
  local text = ([[
worker_processes 1;
daemon off;
master_process off;
pid %s/nginx.pid;
error_log %s/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %s/tmp;
  proxy_temp_path %s/tmp;
  fastcgi_temp_path %s/tmp;
  uwsgi_temp_path %s/tmp;
  scgi_temp_path %s/tmp;
  keepalive_requests 100000;
  default_type application/octet-stream;
  sendfile on;
  server {
    listen 127.0.0.1:%d;
    location /files/ { alias %s/files/; }
    location /slow/ { alias %s/files/; limit_rate 1m; }
    location /gzip/ { alias %s/files/; gzip on; gzip_types *; gzip_min_length 0; }
    location /discard { client_max_body_size 0; return 204; }
    # a forward proxy for any other path (absolute-form requests: curl -x);
    # upstream and client can tell a request went through it
    location / {
      proxy_pass http://$http_host;
      proxy_set_header X-Via-Proxy avideo-spec;
      proxy_set_header X-Proxy-Auth $http_proxy_authorization;
      add_header X-Proxied-By nginx always;
    }
  }
}
]]):gsub("%%s", dir):gsub("%%d", tostring(port))
  return text
end

function M.start(opts)
  local dir = assert(io.popen("mktemp -d"):read("*l"))
  assert(os.execute("mkdir -p " .. dir .. "/files " .. dir .. "/tmp"))
  for name, bytes in pairs(opts and opts.files or {}) do
    assert(os.execute(("truncate -s %d %s/files/%s"):format(bytes, dir, name)))
  end
  for _ = 1, 5 do
    local port = free_port()
    local f = assert(io.open(dir .. "/nginx.conf", "w"))
    f:write(config(dir, port))
    f:close()
    -- without the sanitizer a spec may run under (LD_PRELOAD): it is not
    -- nginx's to carry
    local pipe = assert(io.popen(("echo $$; exec env -u LD_PRELOAD setpriv --pdeathsig KILL /usr/sbin/nginx -p %s -c %s/nginx.conf 2>>%s/error.log")
      :format(dir, dir, dir)))
    local pid = tonumber(pipe:read("*l"))
    -- ready when it answers; gone when the port was taken meanwhile
    local url = "http://127.0.0.1:" .. port
    local socket = require "socket"
    for _ = 1, 100 do
      local probe = socket.connect("127.0.0.1", port)
      if probe then
        probe:close()
        local server = { url = url, dir = dir, pid = pid }
        function server.stop()
          if server.stopped then return end
          server.stopped = true
          os.execute("kill -TERM " .. pid .. " 2>/dev/null")
          server_support.reap(pid, 10)
          pipe:close()
          os.execute("rm -rf " .. dir)
        end
        return server
      end
      if server_support.exited(pid) then break end
      socket.sleep(0.05)
    end
    os.execute("kill -KILL " .. pid .. " 2>/dev/null")
    pipe:close()
  end
  local log = io.open(dir .. "/error.log")
  error("nginx did not start: " .. (log and log:read("*a") or "no log"), 2)
end

return M
