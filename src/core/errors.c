/* Error kinds: the one-word classes users catch (README.md, "Failure
 * behaviour"; lua/avideo/errors.lua has the list). */
#include <stdarg.h>

#include "private.h"

const char *av_error_kind(CURLcode code) {
  switch (code) {
  case CURLE_OK:
    return NULL;
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
    return "dns";
  case CURLE_COULDNT_CONNECT:
    return "connect";
  case CURLE_OPERATION_TIMEDOUT:
    return "timeout";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_USE_SSL_FAILED:
    return "tls";
  default:
    /* Resets, truncated bodies, bad status lines, too many redirects, and
     * redirects to refused schemes or bad URLs: user input was checked
     * before sending, so what fails here is the server's answer (even
     * libcurl's CURLE_BAD_FUNCTION_ARGUMENT: a malformed chunked trailer). */
    return "protocol";
  }
}

int av_error_arg(lua_State *L, int arg, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return luaL_argerror(L, arg, lua_tostring(L, -1));
}

int av_refuse(lua_State *L, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  lua_pushliteral(L, "invalid");
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return 3;
}
