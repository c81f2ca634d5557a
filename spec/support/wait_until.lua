--- wait_until(cond, what [, limit]): inside a task, yield a millisecond at
-- a time until cond() holds; fails naming `what` after `limit` seconds
-- (default 5).
local assert = require "luassert"
local avideo = require "avideo"

return function(cond, what, limit)
  local t0 = avideo.now()
  while not cond() do
    assert.is_true(avideo.now() - t0 < (limit or 5), "timed out waiting for " .. what)
    avideo.sleep(0.001)
  end
end
