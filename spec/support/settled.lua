--- Leak check for specs: nothing of avideo's is left alive — no task, no
-- op owned by the loop, no transfer inside libcurl, no worker job.
local assert = require "luassert"
local avideo = require "avideo"

return function()
  local s = avideo.stats()
  assert.are.same({ tasks = 0, ops = 0, transfers = 0, jobs = 0 },
    { tasks = s.tasks, ops = s.ops, transfers = s.transfers, jobs = s.jobs })
end
