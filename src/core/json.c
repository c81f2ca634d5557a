/* core.json_integers(t): whole-number floats to integers, in place.
 * lua-cjson 2.1.0 decodes every JSON number as a float (925068.0); users
 * expect 925068, as Python's json gives int. Done in C: in Lua the walk
 * cost several microseconds per decoded object. */
#include "private.h"

#define AV_JSON_MAX_DEPTH 1000 /* lua-cjson's own default nesting limit */

static void av_json_integers_at(lua_State *L, int t, int depth) {
  if (depth > AV_JSON_MAX_DEPTH) return;
  luaL_checkstack(L, 4, "JSON value nested too deeply");
  lua_pushnil(L);
  while (lua_next(L, t)) {
    int type = lua_type(L, -1);
    if (type == LUA_TNUMBER && !lua_isinteger(L, -1)) {
      int exact = 0;
      lua_Integer i = lua_tointegerx(L, -1, &exact); /* exact: integral and in range */
      if (exact) {
        lua_pushvalue(L, -2);
        lua_pushinteger(L, i);
        lua_rawset(L, t); /* an existing key: allowed during lua_next */
      }
    } else if (type == LUA_TTABLE) {
      av_json_integers_at(L, lua_gettop(L), depth + 1);
    }
    lua_pop(L, 1);
  }
}

/* json_integers(v) -> v, with whole numbers as integers */
static int av_json_integers(lua_State *L) {
  if (lua_type(L, 1) == LUA_TTABLE) {
    av_json_integers_at(L, 1, 0);
  } else if (lua_type(L, 1) == LUA_TNUMBER && !lua_isinteger(L, 1)) {
    int exact = 0;
    lua_Integer i = lua_tointegerx(L, 1, &exact);
    if (exact) lua_pushinteger(L, i), lua_replace(L, 1);
  }
  lua_settop(L, 1);
  return 1;
}

void av_json_open(lua_State *L) {
  lua_pushcfunction(L, av_json_integers);
  lua_setfield(L, -2, "json_integers");
}
