--- Let an example find avideo in this checkout, and its helpers.
-- Every example starts with
--   dofile((arg[0]:match("^.*/") or "") .. "lib/bootstrap.lua")
-- which puts, in front of package.path / package.cpath:
--   examples/lib/        the examples' helpers (talk.lua, model.lua)
--   lua/                 the module's Lua files
--   build/lib/           its C core after a build ($AVIDEO_BINARY_DIR/lib
--                        instead when that names another build directory)
-- All paths come from where this file is, never from the machine, so an
-- installed avideo is used when the checkout has none.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
-- examples/lib/ -> the checkout's root ("" when that is the working directory)
local root = here:match("^(.-)[^/]+/[^/]+/$") or (here .. "../../")
local build = os.getenv("AVIDEO_BINARY_DIR") or (root .. "build")

package.path = here .. "?.lua;" .. root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = build .. "/lib/?.so;" .. package.cpath

return { root = root, build = build }
