/* Fault injection for the specs, built for the tests only: avideo.core has
 * no hook of its own.
 *
 * A spec loads this library with package.loadlib(path, "*") before it
 * requires avideo: it is then in the global symbol scope, which the dynamic
 * linker searches before avideo.core's own libuv and libcurl, so the core
 * calls the functions below instead of theirs. Each passes its call on to
 * the real one unless armed: arm(name, n) makes the nth next call of name
 * fail as if out of memory. The same library is then opened again as the
 * Lua module that arms it (package.loadlib(path, "luaopen_faultshim")). */
#include <dlfcn.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <uv.h>

#include "compat.h" /* built for each Lua the specs run under */

enum { AV_FAULT_POLL_START, AV_FAULT_POLL_INIT, AV_FAULT_MULTI_ADD, AV_FAULT_N };

static const char *const av_fault_names[AV_FAULT_N] = {"uv_poll_start", "uv_poll_init_socket",
                                                       "curl_multi_add_handle"};
static int av_fault_countdown[AV_FAULT_N]; /* 0 = not armed */
static long av_fault_calls[AV_FAULT_N];    /* calls seen: proof the shim is in the path */

/* Whether this call of fault f is the one to fail. */
static int av_fault_hit(int f) {
  av_fault_calls[f]++;
  return av_fault_countdown[f] > 0 && --av_fault_countdown[f] == 0;
}

/* The real function: by then avideo.core has loaded its library. */
static void *av_fault_real(const char *lib, const char *name) {
  void *h = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
  return h ? dlsym(h, name) : NULL;
}

int uv_poll_start(uv_poll_t *h, int events, uv_poll_cb cb) {
  static int (*real)(uv_poll_t *, int, uv_poll_cb);
  if (!real) *(void **)&real = av_fault_real("libuv.so.1", "uv_poll_start");
  if (av_fault_hit(AV_FAULT_POLL_START)) return UV_ENOMEM;
  return real(h, events, cb);
}

int uv_poll_init_socket(uv_loop_t *loop, uv_poll_t *h, uv_os_sock_t fd) {
  static int (*real)(uv_loop_t *, uv_poll_t *, uv_os_sock_t);
  if (!real) *(void **)&real = av_fault_real("libuv.so.1", "uv_poll_init_socket");
  if (av_fault_hit(AV_FAULT_POLL_INIT)) return UV_ENOMEM;
  return real(loop, h, fd);
}

CURLMcode curl_multi_add_handle(CURLM *multi, CURL *easy) {
  static CURLMcode (*real)(CURLM *, CURL *);
  if (!real) *(void **)&real = av_fault_real("libcurl.so.4", "curl_multi_add_handle");
  if (av_fault_hit(AV_FAULT_MULTI_ADD)) return CURLM_OUT_OF_MEMORY;
  return real(multi, easy);
}

static int av_fault_check(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  for (int f = 0; f < AV_FAULT_N; f++)
    if (strcmp(name, av_fault_names[f]) == 0) return f;
  return luaL_argerror(L, 1, "no such fault");
}

/* arm(name, n): the nth next call of name fails; n = 0 disarms. */
static int av_fault_arm(lua_State *L) {
  int f = av_fault_check(L);
  av_fault_countdown[f] = (int)luaL_checkinteger(L, 2);
  return 0;
}

/* calls(name) -> calls of name seen so far */
static int av_fault_calls_of(lua_State *L) {
  lua_pushinteger(L, av_fault_calls[av_fault_check(L)]);
  return 1;
}

int luaopen_faultshim(lua_State *L) {
  static const luaL_Reg fns[] = {{"arm", av_fault_arm}, {"calls", av_fault_calls_of}, {NULL, NULL}};
  luaL_newlib(L, fns);
  return 1;
}
