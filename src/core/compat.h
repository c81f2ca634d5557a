/* compat.h: the Lua 5.4 C API calls the core uses, on Lua 5.3, 5.1 and
 * LuaJIT 2.1 (which has the 5.1 API plus a few 5.2 calls). On 5.4 this
 * header defines nothing: every call below is the 5.4 one.
 *
 * Included by private.h after lua.h and lauxlib.h. Each emulation is a
 * static inline function named avc_* and the 5.4 name is a macro for it,
 * so a prototype an older header already has (LuaJIT's luaL_setfuncs...)
 * never clashes with ours. */
#ifndef AVIDEO_COMPAT_H
#define AVIDEO_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM < 504

/* Several user values per userdata: 5.3 and 5.1 have one (5.1: the
 * userdata's environment table), so the n values are slots of a table
 * kept there. A userdata made with no user values gets no table. */
#if LUA_VERSION_NUM >= 502
#define avc_getuv(L, idx) lua_getuservalue(L, idx)
#define avc_setuv(L, idx) lua_setuservalue(L, idx)
#else
#define avc_getuv(L, idx) lua_getfenv(L, idx)
#define avc_setuv(L, idx) lua_setfenv(L, idx)
#endif

static inline void *avc_newuserdatauv(lua_State *L, size_t size, int nuv) {
  void *p = lua_newuserdata(L, size);
  if (nuv > 0) {
    lua_createtable(L, nuv, 0);
    avc_setuv(L, -2);
  }
  return p;
}
#define lua_newuserdatauv avc_newuserdatauv

static inline int avc_getiuservalue(lua_State *L, int idx, int n) {
  avc_getuv(L, idx);
  if (lua_type(L, -1) != LUA_TTABLE) { /* no slots: as 5.4, push nil, say none */
    lua_pop(L, 1);
    lua_pushnil(L);
    return LUA_TNONE;
  }
  lua_rawgeti(L, -1, n);
  lua_remove(L, -2);
  return lua_type(L, -1);
}
#define lua_getiuservalue avc_getiuservalue

/* Pops the value; 0 (value dropped) when the userdata has no slots. */
static inline int avc_setiuservalue(lua_State *L, int idx, int n) {
  avc_getuv(L, idx);
  if (lua_type(L, -1) != LUA_TTABLE) {
    lua_pop(L, 2);
    return 0;
  }
  lua_insert(L, -2); /* slots, value */
  lua_rawseti(L, -2, n);
  lua_pop(L, 1);
  return 1;
}
#define lua_setiuservalue avc_setiuservalue

#endif /* < 5.4 */

#if LUA_VERSION_NUM < 502 /* PUC 5.1 and LuaJIT */

#include <locale.h>
#include <stdint.h>

#ifndef LUA_LOADED_TABLE
#define LUA_LOADED_TABLE "_LOADED"
#endif
/* Whole numbers are doubles here: exact below 2^53 (2^53 + 1 already reads
 * as 2^53), so that is the limit of what counts as an integer (and of
 * integer-valued arguments). */
#define AVC_EXACT 9007199254740992.0
#define LUA_MAXINTEGER ((lua_Integer)9007199254740991LL)
#define lua_rawlen(L, i) lua_objlen(L, i)
#define lua_pushglobaltable(L) lua_pushvalue(L, LUA_GLOBALSINDEX)
#define lua_getlocaledecpoint() (localeconv()->decimal_point[0])

/* 5.3's getters return the type pushed; 5.1's return nothing. The macro
 * names itself inside: the preprocessor does not expand it again. */
#define lua_getfield(L, i, k) (lua_getfield(L, i, k), lua_type(L, -1))
#define lua_rawget(L, i) (lua_rawget(L, i), lua_type(L, -1))
#define lua_rawgeti(L, i, n) (lua_rawgeti(L, i, n), lua_type(L, -1))

static inline int avc_absindex(lua_State *L, int idx) {
  return (idx > 0 || idx <= LUA_REGISTRYINDEX) ? idx : lua_gettop(L) + idx + 1;
}
#define lua_absindex avc_absindex

/* A number with an exact integer value, below 2^53 in magnitude. */
static inline int avc_isinteger(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  lua_Number n = lua_tonumber(L, idx);
  return n > -AVC_EXACT && n < AVC_EXACT && (lua_Number)(int64_t)n == n; /* in range first: no UB */
}
#define lua_isinteger avc_isinteger

/* 5.3's meaning (LuaJIT's own accepts any number): *isnum only for a
 * number, or numeric string, with an exact integer value. */
static inline lua_Integer avc_tointegerx(lua_State *L, int idx, int *isnum) {
  int ok = 0;
  lua_Integer i = 0;
  if (lua_isnumber(L, idx)) {
    lua_Number n = lua_tonumber(L, idx);
    if (n > -AVC_EXACT && n < AVC_EXACT && (lua_Number)(int64_t)n == n) {
      i = (lua_Integer)n;
      ok = 1;
    }
  }
  if (isnum) *isnum = ok;
  return i;
}
#define lua_tointegerx avc_tointegerx

/* Rotate the elements between idx and the top n places towards the top. */
static inline void avc_rotate(lua_State *L, int idx, int n) {
  idx = avc_absindex(L, idx);
  int size = lua_gettop(L) - idx + 1;
  if (size <= 0) return;
  n = ((n % size) + size) % size;
  for (int i = 0; i < n; i++) lua_insert(L, idx); /* top to idx: one place */
}
#define lua_rotate avc_rotate

static inline int avc_rawgetp(lua_State *L, int idx, const void *p) {
  idx = avc_absindex(L, idx);
  lua_pushlightuserdata(L, (void *)p);
  lua_rawget(L, idx);
  return lua_type(L, -1);
}
#define lua_rawgetp avc_rawgetp

static inline void avc_rawsetp(lua_State *L, int idx, const void *p) {
  idx = avc_absindex(L, idx);
  lua_pushlightuserdata(L, (void *)p);
  lua_insert(L, -2);
  lua_rawset(L, idx);
}
#define lua_rawsetp avc_rawsetp

static inline void avc_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  luaL_checkstack(L, nup, "too many upvalues");
  for (; l->name; l++) {
    for (int i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
#define luaL_setfuncs avc_setfuncs
#undef luaL_newlib
#define luaL_newlib(L, l) (lua_createtable(L, 0, sizeof(l) / sizeof((l)[0]) - 1), avc_setfuncs(L, l, 0))

static inline void avc_setmetatable(lua_State *L, const char *tname) {
  luaL_getmetatable(L, tname);
  lua_setmetatable(L, -2);
}
#define luaL_setmetatable avc_setmetatable

static inline int avc_getsubtable(lua_State *L, int idx, const char *fname) {
  if (lua_getfield(L, idx, fname) == LUA_TTABLE) return 1;
  lua_pop(L, 1);
  idx = avc_absindex(L, idx);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, idx, fname);
  return 0;
}
#define luaL_getsubtable avc_getsubtable

/* As tostring(): __tostring, else the value by type. */
static inline const char *avc_tolstring(lua_State *L, int idx, size_t *len) {
  if (!luaL_callmeta(L, idx, "__tostring")) {
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
    case LUA_TSTRING:
      lua_pushvalue(L, idx);
      break;
    case LUA_TBOOLEAN:
      lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
      break;
    case LUA_TNIL:
      lua_pushliteral(L, "nil");
      break;
    default:
      lua_pushfstring(L, "%s: %p", luaL_typename(L, idx), lua_topointer(L, idx));
      break;
    }
  }
  return lua_tolstring(L, -1, len);
}
#define luaL_tolstring avc_tolstring

/* The traceback of L1 from level on, with msg first: debug.traceback's. */
static inline void avc_traceback(lua_State *L, lua_State *L1, const char *msg, int level) {
  (void)L1; /* the core only asks for its own state's */
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_remove(L, -2);
  lua_pushstring(L, msg ? msg : ""); /* a nil message: no traceback at all on 5.1 */
  lua_pushinteger(L, level + 1);      /* + the traceback function's own level */
  if (lua_pcall(L, 2, 1, 0) != 0 || lua_type(L, -1) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushstring(L, msg ? msg : "");
  } else if (!msg) { /* "\nstack traceback:...": drop the empty message's line */
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    lua_pushlstring(L, s + 1, len - 1);
    lua_remove(L, -2);
  }
}
#define luaL_traceback avc_traceback

/* mode "b" only: refuse source text, as 5.2's loader does. */
static inline int avc_loadbufferx(lua_State *L, const char *buf, size_t len, const char *name, const char *mode) {
  if (mode && mode[0] == 'b' && mode[1] == '\0' && (len == 0 || buf[0] != LUA_SIGNATURE[0])) {
    lua_pushfstring(L, "attempt to load a text chunk (mode is '%s')", mode);
    return LUA_ERRSYNTAX;
  }
  return luaL_loadbuffer(L, buf, len, name);
}
#define luaL_loadbufferx avc_loadbufferx

#endif /* < 5.2 */

#if LUA_VERSION_NUM < 503
/* t[n] onto the stack (5.3's lua_geti), with metamethods as 5.1's gettable. */
static inline int avc_geti(lua_State *L, int idx, lua_Integer n) {
  idx = lua_absindex(L, idx);
  lua_pushinteger(L, n);
  lua_gettable(L, idx);
  return lua_type(L, -1);
}
#define lua_geti avc_geti
#endif

/* The FILE of an io library file at idx (a luaL_checkudata error if it is
 * not one), or NULL when it is closed. 5.2+: a luaL_Stream; 5.1 a FILE *
 * in the userdata; LuaJIT the same (its IOFileUD starts with the FILE *). */
#include <stdio.h>
#if LUA_VERSION_NUM >= 502
static inline FILE *avc_checkfile(lua_State *L, int idx) {
  luaL_Stream *s = luaL_checkudata(L, idx, LUA_FILEHANDLE);
  return s->closef ? s->f : NULL;
}
#else
#include <lualib.h>
static inline FILE *avc_checkfile(lua_State *L, int idx) {
  return *(FILE **)luaL_checkudata(L, idx, LUA_FILEHANDLE);
}
#endif

#endif
