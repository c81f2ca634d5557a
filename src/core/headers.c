/* Request headers: validation of the user's, the defaults every session
 * sends, and merging a request's own over its session's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
  /* a value is visible characters, spaces and tabs (RFC 9110 5.5, as
   * h11 checks it): any other control character is refused too */
  for (size_t i = 0; i < vlen; i++) {
    unsigned char c = (unsigned char)value[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      const char *shown = av_push_printable(L, name, nlen);
      if (c == '\r' || c == '\n' || c == '\0')
        lua_pushfstring(L, "header '%s' value contains CR, LF or NUL", shown);
      else
        lua_pushfstring(L, "header '%s' value contains a control character (byte %d)", shown, (int)c);
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
  if (body_len == AV_BODY_LENGTH_LIBCURL) {
    lua_pushliteral(L, "header 'Content-Length' is not allowed with files: libcurl frames a multipart body itself");
    return false;
  }
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

/* Pair i of the flat list {name1, value1, ...} at idx, checked and left
 * on the stack (two values: the caller pops them once it has copied the
 * strings); false with only an error message pushed on bad input.
 * body_len: as for av_headers_append. */
static bool av_header_pair(lua_State *L, int idx, lua_Integer i, long long body_len, const char **name,
                           size_t *nlen, const char **value, size_t *vlen) {
  lua_rawgeti(L, idx, i);
  lua_rawgeti(L, idx, i + 1);
  *name = lua_tolstring(L, -2, nlen);
  *value = lua_tolstring(L, -1, vlen);
  if (!*name || !*value) {
    lua_pop(L, 2);
    lua_pushliteral(L, "header names and values must be strings");
    return false;
  }
  bool ok = av_header_valid(L, *name, *nlen, *value, *vlen) &&
            av_header_framing_ok(L, *name, *nlen, *value, *vlen, body_len);
  if (!ok) {
    lua_remove(L, -2);
    lua_remove(L, -2);
  }
  return ok;
}

/* The bytes of "Name: value" (or "Name;" for an empty value: libcurl sends
 * that as an empty header, while "Name:" would remove it), NUL included. */
static size_t av_header_line_size(size_t nlen, size_t vlen) { return nlen + (vlen ? 2 + vlen : 1) + 1; }

static char *av_header_line_write(char *p, const char *name, size_t nlen, const char *value, size_t vlen) {
  memcpy(p, name, nlen);
  p += nlen;
  if (vlen == 0) {
    *p++ = ';';
  } else {
    *p++ = ':';
    *p++ = ' ';
    memcpy(p, value, vlen);
    p += vlen;
  }
  *p++ = '\0';
  return p;
}

bool av_headers_append(lua_State *L, int idx, struct curl_slist **list, long long body_len) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  for (lua_Integer i = 1; i + 1 <= n; i += 2) {
    const char *name, *value;
    size_t nlen, vlen;
    if (!av_header_pair(L, idx, i, body_len, &name, &nlen, &value, &vlen)) return false;
    char *line = malloc(av_header_line_size(nlen, vlen));
    if (line) av_header_line_write(line, name, nlen, value, vlen);
    lua_pop(L, 2);
    struct curl_slist *l = line ? curl_slist_append(*list, line) : NULL;
    free(line);
    if (!l) {
      lua_pushliteral(L, "out of memory");
      return false;
    }
    *list = l;
  }
  return true;
}

/* A request's header list is one malloc'd block: its nodes, then the text
 * of its own lines. Inherited defaults are nodes that point at the
 * session's strings, which outlive the request (it keeps its session). So
 * a request with headers costs one allocation, not two per line. */
bool av_headers_build(lua_State *L, int idx, const struct curl_slist *defaults, long long body_len,
                      struct curl_slist **out) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx) / 2;
  size_t text = 0, ndefaults = 0;
  for (lua_Integer i = 0; i < n; i++) {
    const char *name, *value;
    size_t nlen, vlen;
    if (!av_header_pair(L, idx, 2 * i + 1, body_len, &name, &nlen, &value, &vlen)) return false;
    text += av_header_line_size(nlen, vlen);
    lua_pop(L, 2);
  }
  for (const struct curl_slist *d = defaults; d; d = d->next) ndefaults++;
  size_t nodes = (size_t)n + ndefaults;
  struct curl_slist *block = malloc(nodes * sizeof *block + text);
  if (!block) {
    lua_pushliteral(L, "out of memory");
    return false;
  }
  char *p = (char *)(block + nodes);
  size_t used = 0;
  for (lua_Integer i = 0; i < n; i++) {
    const char *name, *value;
    size_t nlen, vlen;
    av_header_pair(L, idx, 2 * i + 1, body_len, &name, &nlen, &value, &vlen); /* checked above */
    block[used].data = p;
    block[used].next = &block[used + 1]; /* av_slist_has walks the own lines */
    p = av_header_line_write(p, name, nlen, value, vlen);
    lua_pop(L, 2);
    used++;
  }
  /* the defaults whose names the request's own lines lack; only those are
   * searched: defaults that share a name (a session may send X-A twice)
   * must all be inherited */
  size_t own = used;
  for (const struct curl_slist *d = defaults; d; d = d->next) {
    if (own && av_slist_has(block, own, d->data, strcspn(d->data, ":;"))) continue;
    block[used++].data = d->data;
  }
  for (size_t i = 0; i < used; i++) block[i].next = i + 1 < used ? &block[i + 1] : NULL;
  *out = used ? block : NULL;
  if (!used) free(block);
  return true;
}

struct curl_slist *av_headers_filter(const struct curl_slist *from, bool (*drop)(const char *line, const void *ud),
                                     const void *ud) {
  size_t nodes = 0, text = 0;
  for (const struct curl_slist *h = from; h; h = h->next) {
    if (drop(h->data, ud)) continue;
    nodes++;
    text += strlen(h->data) + 1;
  }
  struct curl_slist *block = malloc(nodes * sizeof *block + text);
  if (!block) return NULL;
  char *p = (char *)(block + nodes);
  size_t i = 0;
  for (const struct curl_slist *h = from; h; h = h->next) {
    if (drop(h->data, ud)) continue;
    size_t len = strlen(h->data) + 1;
    memcpy(p, h->data, len);
    block[i].data = p;
    block[i].next = i + 1 < nodes ? &block[i + 1] : NULL;
    p += len;
    i++;
  }
  return block;
}

void av_headers_free(struct curl_slist *block) { free(block); }

bool av_headers_bodyless(const struct curl_slist *defaults, bool post, struct curl_slist **out) {
  struct curl_slist *copy = NULL;
  for (const struct curl_slist *d = defaults; d; d = d->next) {
    /* our "Expect:" only matters for a body; each line libcurl checks
     * and writes on every request (callgrind: ~1,000 instructions) */
    if (strcmp(d->data, "Expect:") == 0) continue;
    struct curl_slist *next = curl_slist_append(copy, d->data);
    if (!next) {
      curl_slist_free_all(copy);
      return false;
    }
    copy = next;
  }
  if (post && !av_slist_has(copy, SIZE_MAX, "Content-Type", 12)) {
    /* "Name:" removes the header libcurl would add */
    struct curl_slist *next = curl_slist_append(copy, "Content-Type:");
    if (!next) {
      curl_slist_free_all(copy);
      return false;
    }
    copy = next;
  }
  *out = copy;
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
