--- video_id(): an id every avideo-server has (the store is the same for
-- its default seed), read from a server started and stopped for it, so the
-- specs' own servers count only their own requests.
local assert = require "luassert"
local support = require "support.server"
local client = require "support.server_client"

return function()
  local server = support.start { time_scale = 0 }
  local id = client.get_json(server.url .. "/videos/?n=1")[1]
  assert(support.stop_clean(server))
  return id
end
