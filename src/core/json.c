/* core.json_decoder: the JSON decoder avideo.json sets up (json_decode.c).
 * Encoding stays with lua-cjson, driven from lua/avideo/json.lua. */
#include "private.h"

void av_json_open(lua_State *L) {
  lua_pushcfunction(L, av_json_decoder);
  lua_setfield(L, -2, "json_decoder");
}
