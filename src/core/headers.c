/* Request headers: validation of the user's, the defaults every session
 * sends, and merging a request's own over its session's. */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "private.h"

/* Whether the first n entries of list have a header called name (any
 * case), as "Name: v", the empty "Name;" or the removing "Name:". */
static bool av_slist_has(const struct curl_slist *list, size_t n, const char *name, size_t nlen) {
  for (const struct curl_slist *p = list; p && n > 0; p = p->next, n--)
    if (strncasecmp(p->data, name, nlen) == 0 && (p->data[nlen] == ':' || p->data[nlen] == ';')) return true;
  return false;
}

/* Push s with control characters escaped, so an error stays one line. */
static const char *av_push_printable(lua_State *L, const char *s, size_t len) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < len && i < 200; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c == 0x7f) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\x%02X", c);
      luaL_addstring(&b, esc);
    } else {
      luaL_addchar(&b, (char)c);
    }
  }
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

/* Whether "Name: value" may go to libcurl; false with an error message pushed.
 * Names must be RFC 9110 tokens; CR, LF and NUL are refused anywhere, so a
 * header can never smuggle another header or request. */
static bool av_header_valid(lua_State *L, const char *name, size_t nlen, const char *value, size_t vlen) {
  static const char tchar[] = "!#$%&'*+-.^_`|~";
  if (nlen == 0) {
    lua_pushliteral(L, "header name is empty");
    return false;
  }
  for (size_t i = 0; i < nlen; i++) {
    unsigned char c = (unsigned char)name[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c && strchr(tchar, c)))) {
      const char *shown = av_push_printable(L, name, nlen);
      lua_pushfstring(L, "header name '%s' has a character not allowed in a header name", shown);
      lua_remove(L, -2);
      return false;
    }
  }
  for (size_t i = 0; i < vlen; i++) {
    if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0') {
      const char *shown = av_push_printable(L, name, nlen);
      lua_pushfstring(L, "header '%s' value contains CR, LF or NUL", shown);
      lua_remove(L, -2);
      return false;
    }
  }
  return true;
}

/* Whether a framing header may go out as given; false with a message
 * pushed if not. Content-Length and Transfer-Encoding say where the body
 * ends, and libcurl writes them from the body: a wrong one would make the
 * server read the next request as part of this one. So a request may
 * repeat the Content-Length its body has, and nothing else; a session's
 * defaults (body_len < 0) may have neither. */
static bool av_header_framing_ok(lua_State *L, const char *name, size_t nlen, const char *value, size_t vlen,
                                 long long body_len) {
  static const char te[] = "Transfer-Encoding", cl[] = "Content-Length";
  if (nlen == sizeof te - 1 && strncasecmp(name, te, nlen) == 0) {
    lua_pushliteral(L, "header 'Transfer-Encoding' is not allowed: avideo frames the body itself");
    return false;
  }
  if (nlen != sizeof cl - 1 || strncasecmp(name, cl, nlen) != 0) return true;
  if (body_len < 0) {
    lua_pushliteral(L, "header 'Content-Length' is not allowed in a session's headers: it comes from each body");
    return false;
  }
  char want[24];
  int n = snprintf(want, sizeof want, "%lld", body_len);
  if ((size_t)n == vlen && memcmp(want, value, vlen) == 0) return true;
  const char *shown = av_push_printable(L, value, vlen);
  lua_pushfstring(L, "header 'Content-Length: %s' does not match the body's %s bytes", shown, want);
  lua_remove(L, -2);
  return false;
}

/* Append the flat list {name1, value1, ...} at idx to *list. False with an
 * error message pushed on bad input. body_len: the request body's size,
 * or -1 for a session's defaults (see av_header_framing_ok). */
bool av_headers_append(lua_State *L, int idx, struct curl_slist **list, long long body_len) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  luaL_Buffer b;
  for (lua_Integer i = 1; i + 1 <= n; i += 2) {
    lua_rawgeti(L, idx, i);
    lua_rawgeti(L, idx, i + 1);
    size_t nlen, vlen;
    const char *name = lua_tolstring(L, -2, &nlen);
    const char *value = lua_tolstring(L, -1, &vlen);
    if (!name || !value) {
      lua_pop(L, 2);
      lua_pushliteral(L, "header names and values must be strings");
      return false;
    }
    if (!av_header_valid(L, name, nlen, value, vlen) ||
        !av_header_framing_ok(L, name, nlen, value, vlen, body_len)) {
      lua_remove(L, -2);
      lua_remove(L, -2);
      return false;
    }
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, name, nlen);
    /* libcurl sends "Name;" as an empty header; "Name:" would remove it */
    if (vlen == 0) {
      luaL_addchar(&b, ';');
    } else {
      luaL_addstring(&b, ": ");
      luaL_addlstring(&b, value, vlen);
    }
    luaL_pushresult(&b);
    struct curl_slist *l = curl_slist_append(*list, lua_tostring(L, -1));
    lua_pop(L, 1);
    if (!l) {
      lua_pop(L, 2);
      lua_pushliteral(L, "out of memory");
      return false;
    }
    *list = l;
    lua_pop(L, 2);
  }
  return true;
}

/* Append to *list the entries of defaults whose names *list lacks. Only the
 * request's own entries are searched: defaults that share a name (a
 * session may send X-A twice) must all be inherited. */
bool av_headers_inherit(struct curl_slist **list, const struct curl_slist *defaults) {
  size_t own = 0;
  for (const struct curl_slist *p = *list; p; p = p->next) own++;
  for (const struct curl_slist *d = defaults; d; d = d->next) {
    if (av_slist_has(*list, own, d->data, strcspn(d->data, ":;"))) continue;
    struct curl_slist *l = curl_slist_append(*list, d->data);
    if (!l) return false;
    *list = l;
  }
  return true;
}

bool av_headers_defaults(struct curl_slist **list) {
  /* Written into the list rather than set with CURLOPT_USERAGENT and
   * CURLOPT_ACCEPT_ENCODING's own header: libcurl formats those two anew
   * (aprintf) on every request, and a custom header line costs less
   * (callgrind: 6,000 fewer instructions per GET). The user's own
   * (session or request headers of the same name) win. Accept-Encoding is
   * aiohttp's and requests' (libcurl decodes whatever the server sends);
   * "Expect:" removes the header: like them, never wait for 100-continue. */
  bool zlib = (curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_LIBZ) != 0;
  const char *defaults[] = {"User-Agent: avideo/" AVIDEO_VERSION, zlib ? "Accept-Encoding: gzip, deflate" : NULL,
                            "Expect:"};
  for (size_t i = 0; i < sizeof defaults / sizeof *defaults; i++) {
    if (!defaults[i] || av_slist_has(*list, SIZE_MAX, defaults[i], strcspn(defaults[i], ":;"))) continue;
    struct curl_slist *l = curl_slist_append(*list, defaults[i]);
    if (!l) return false;
    *list = l;
  }
  return true;
}
