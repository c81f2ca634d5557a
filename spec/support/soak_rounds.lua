--- rounds(script, n, rounds, seconds): run spec/support/<script> n rounds
-- as its own process (so its RSS is avideo's alone), echo what it prints,
-- and return its "round R key V ..." lines as a list of {key = V} tables.
-- Fails the spec if the process fails or prints fewer rounds.
local assert = require "luassert"

return function(script, n, rounds, seconds)
  local dir = os.getenv("AVIDEO_SOURCE_DIR") or "."
  local pipe = assert(io.popen(("timeout %d lua5.4 %s/spec/support/%s %d %d 2>&1"):format(seconds, dir, script, n, rounds)))
  local seen = {}
  for line in pipe:lines() do
    print("  " .. line)
    local r = {}
    for k, v in line:gmatch("(%a+) (%d+)") do r[k] = tonumber(v) end
    if r.round then seen[r.round] = r end
  end
  assert.is_true(pipe:close(), "the soak process failed")
  assert.are.equal(rounds, #seen)
  return seen
end
