/* avideo.h: the C interface for programs that embed Lua and avideo.
 *
 * avideo is a Lua module. A host opens it in its own lua_State the usual
 * way: luaL_openlibs, then require "avideo" (the installed avideo/core.so
 * is on Lua 5.4's package.cpath), or, if the host links the module itself,
 * luaL_requiref(L, "avideo.core", luaopen_avideo_core, 0) first. Each
 * lua_State gets its own avideo: nothing is shared between states but
 * libcurl's one-time global init, so states in different threads run at
 * the same time.
 *
 * Everything else below goes through the Lua API (static inline, calling
 * the Lua functions of the same names), so a host needs no link to the
 * module for them. Two ways to drive avideo from a host's event loop, both
 * for tasks started with avideo.start(fn, ...) (avideo.run stays the
 * blocking form):
 *
 * 1. A host that runs a libuv loop hands it over (like luv's luv_set_loop):
 *      avideo_set_loop(L, loop);
 *    avideo's sockets and timers then wake that loop: avideo nests its own
 *    loop in it (a poll handle on its backend fd, a timer and an idle
 *    handle, all three on the host's loop). avideo never calls Lua from a
 *    loop callback, so the host calls avideo_step(L) once per loop turn,
 *    e.g. from a uv_check_t.
 * 2. Any other loop (poll, epoll, a GUI toolkit) watches
 *    avideo_backend_fd(L) for reading, wakes up after
 *    avideo_backend_timeout(L) ms at the latest, and calls avideo_step(L).
 *
 * Shutting down: lua_close(L) closes avideo's own loop; with a handed-over
 * loop, close the Lua state first, then let the host's loop run once more
 * (uv_run(loop, UV_RUN_NOWAIT)) so libuv finishes closing avideo's three
 * handles before uv_loop_close. */
#ifndef AVIDEO_H
#define AVIDEO_H

#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#ifndef LUA_OK /* Lua 5.1 */
#define LUA_OK 0
#endif

#if defined(__GNUC__)
#define AVIDEO_API __attribute__((visibility("default")))
#else
#define AVIDEO_API
#endif

/* Registry field with the host's uv_loop_t * (a light userdata); avideo's
 * loop, created when avideo is first required, attaches to it. */
#define AVIDEO_HOST_LOOP_KEY "avideo.host_loop"

/* The C half of require "avideo" (module "avideo.core"). */
AVIDEO_API int luaopen_avideo_core(lua_State *L);

/* Protected body of avideo__call: stack is name, args...; calls
 * require("avideo")[name](args...) and returns all its results. */
static inline int avideo__callf(lua_State *L) {
  int nargs = lua_gettop(L) - 1;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "avideo");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, lua_tostring(L, 1));
  lua_replace(L, 1); /* fn, args..., module */
  lua_pop(L, 1);
  lua_call(L, nargs, LUA_MULTRET);
  return lua_gettop(L);
}

/* Call avideo.<name> with the nargs values on top of the stack, in
 * protected mode; as lua_pcall, the results or the error message replace
 * them. */
static inline int avideo__call(lua_State *L, const char *name, int nargs, int nresults) {
  lua_pushcfunction(L, avideo__callf);
  lua_pushstring(L, name);
#if LUA_VERSION_NUM >= 503
  lua_rotate(L, -nargs - 2, 2); /* function, name, args... */
#else
  lua_insert(L, -nargs - 2); /* name, args..., function */
  lua_insert(L, -nargs - 2); /* function, name, args... */
#endif
  return lua_pcall(L, nargs + 1, nresults, 0);
}

/* Hand a host's libuv loop over (NULL hands it back). Call it before or
 * after require "avideo", while no avideo task runs; the loop must outlive
 * the Lua state. Returns LUA_OK, or an error code with the message pushed. */
static inline int avideo_set_loop(lua_State *L, uv_loop_t *loop) {
  if (loop) lua_pushlightuserdata(L, loop); else lua_pushnil(L);
  lua_setfield(L, LUA_REGISTRYINDEX, AVIDEO_HOST_LOOP_KEY);
  lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED"); /* LUA_LOADED_TABLE: 5.3+ only */
  lua_getfield(L, -1, "avideo");
  int loaded = lua_type(L, -1) == LUA_TTABLE;
  lua_pop(L, 2);
  if (!loaded) return LUA_OK; /* the loop attaches when it is created */
  if (loop) lua_pushlightuserdata(L, loop); else lua_pushnil(L);
  return avideo__call(L, "use_loop", 1, 0);
}

/* Start the function below nargs arguments on top of the stack as an
 * avideo task (avideo.start); pushes the task. Returns LUA_OK, or an error
 * code with the message pushed instead. */
static inline int avideo_start(lua_State *L, int nargs) {
  return avideo__call(L, "start", nargs + 1, 1);
}

/* Run what is ready without blocking (avideo.step): 1 while started tasks
 * remain, 0 once none do, -1 on error with the message pushed. */
static inline int avideo_step(lua_State *L) {
  if (avideo__call(L, "step", 0, 1) != LUA_OK) return -1;
  int more = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return more;
}

/* The file descriptor to watch for reading (avideo.backend_fd); -1 on
 * error with the message pushed. */
static inline int avideo_backend_fd(lua_State *L) {
  if (avideo__call(L, "backend_fd", 0, 1) != LUA_OK) return -1;
  int fd = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return fd;
}

/* Milliseconds until avideo_step is due even if the descriptor stays
 * quiet (avideo.backend_timeout): 0 = now, -1 = no deadline; -2 on error
 * with the message pushed. */
static inline int avideo_backend_timeout(lua_State *L) {
  if (avideo__call(L, "backend_timeout", 0, 1) != LUA_OK) return -2;
  int ms = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return ms;
}

#endif
