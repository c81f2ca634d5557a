/* luaopen_avideo_core: the C half of `require "avideo"`. It owns no global
 * state; each Lua state gets its own metatables and loops. */
#include "private.h"

static uv_once_t av_curl_once = UV_ONCE_INIT;
static CURLcode av_curl_global_rc;

#if defined(__SANITIZE_ADDRESS__)
/* The sanitizer runtime's count of live heap bytes (its public interface,
 * sanitizer/allocator_interface.h, declared here: gcc does not ship it). */
size_t __sanitizer_get_current_allocated_bytes(void);

/* core.allocated_bytes() -> bytes malloc'd and not yet freed, in ASan builds
 * only: there RSS measures ASan's quarantine, and the soak spec measures
 * the live heap instead. */
static int av_allocated_bytes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)__sanitizer_get_current_allocated_bytes());
  return 1;
}
#endif

/* libcurl's one process-wide init, done once whichever state comes first. */
static void av_curl_global_init(void) { av_curl_global_rc = curl_global_init(CURL_GLOBAL_ALL); }

__attribute__((visibility("default"))) int luaopen_avideo_core(lua_State *L) {
  uv_once(&av_curl_once, av_curl_global_init);
  if (av_curl_global_rc != CURLE_OK)
    return luaL_error(L, "avideo: libcurl init failed: %s", curl_easy_strerror(av_curl_global_rc));
  lua_newtable(L);
  av_loop_open(L);
  av_timer_open(L);
  av_request_open(L);
  av_session_open(L);
  av_work_open(L);
  av_json_open(L);
  lua_pushcfunction(L, av_file_refusal);
  lua_setfield(L, -2, "file_refusal");
  lua_pushliteral(L, AVIDEO_VERSION);
  lua_setfield(L, -2, "_VERSION");
  /* curl_version_info, not curl_version: the latter initialises libldap,
   * which leaks memory that valgrind rightly reports */
  lua_pushstring(L, curl_version_info(CURLVERSION_NOW)->version);
  lua_setfield(L, -2, "curl_version");
#if defined(__SANITIZE_ADDRESS__)
  lua_pushcfunction(L, av_allocated_bytes);
  lua_setfield(L, -2, "allocated_bytes");
#endif
  return 1;
}
