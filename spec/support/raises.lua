--- raises(kind, pattern, f, ...): call f(...), which must fail with an
-- avideo error of that kind whose tostring matches pattern (nil: any);
-- returns the error for further checks.
local assert = require "luassert"
local avideo = require "avideo"

return function(kind, pattern, f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  assert.is_true(avideo.is_error(e, kind), "expected a " .. kind .. " error, got " .. tostring(e))
  if pattern then assert.matches(pattern, tostring(e)) end
  return e
end
