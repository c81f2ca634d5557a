/* Request URLs: checked with libcurl's parser before anything is queued,
 * international host names turned into their ASCII form, and the limiter
 * key "scheme://host:port" made. */
#include <idn2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "private.h"

static bool av_is_ascii(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s >= 0x80) return false;
  return true;
}

/* The ASCII (punycode) form of an international host name, as libcurl
 * makes it when the process's locale is UTF-8: IDNA2008 with TR46, non-
 * transitional, falling back to transitional for names only that allows.
 * libcurl's own conversion reads the name in the locale's charset, which
 * in a host program that never called setlocale is ASCII: it would refuse
 * every such name. NULL with why set when the name is not valid IDNA. */
static char *av_idn_to_ascii(const char *host, char *why, size_t whylen) {
  char *out = NULL;
  int rc = idn2_lookup_u8((const uint8_t *)host, (uint8_t **)&out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
  if (rc == IDN2_DISALLOWED)
    rc = idn2_lookup_u8((const uint8_t *)host, (uint8_t **)&out, IDN2_NFC_INPUT | IDN2_TRANSITIONAL);
  if (rc == IDN2_OK) return out;
  snprintf(why, whylen, "bad URL: host name is not a valid international domain name (%s)", idn2_strerror(rc));
  return NULL;
}

/* The URL in u with its international host name in ASCII form (free it
 * with curl_free), or NULL with why set. */
static char *av_url_to_ascii(CURLU *u, const char *host, char *why, size_t whylen) {
  char *ascii = av_idn_to_ascii(host, why, whylen);
  if (!ascii) return NULL;
  char *url = NULL;
  if (curl_url_set(u, CURLUPART_HOST, ascii, 0) != CURLUE_OK || curl_url_get(u, CURLUPART_URL, &url, 0) != CURLUE_OK) {
    curl_free(url);
    url = NULL;
    snprintf(why, whylen, "out of memory");
  }
  idn2_free(ascii);
  return url;
}

/* Give the URL in u the ASCII form of its international host name and
 * push the whole URL; false with why set if that cannot be done. */
static bool av_url_push_ascii(lua_State *L, CURLU *u, const char *host, char *why, size_t whylen) {
  char *url = av_url_to_ascii(u, host, why, whylen);
  if (!url) return false;
  lua_pushstring(L, url);
  curl_free(url);
  return true;
}

char *av_url_ascii(const char *url) {
  CURLU *u = curl_url();
  char *host = NULL, *out = NULL, why[200];
  if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && !av_is_ascii(host))
    out = av_url_to_ascii(u, host, why, sizeof why);
  curl_free(host);
  curl_url_cleanup(u);
  return out;
}

/* Check the URL at urlidx with libcurl's parser; push its limiter key and
 * the URL to send (itself, or its ASCII form). NULL, or why the URL is
 * refused (pushed). *rewritten tells that the URL to send is another. */
static const char *av_url_check(lua_State *L, int urlidx, bool *rewritten) {
  const char *url = lua_tostring(L, urlidx);
  char why[200];
  CURLU *u = curl_url();
  if (!u) return "out of memory";
  char *scheme = NULL, *host = NULL, *port = NULL;
  CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, 0);
  *rewritten = false;
  why[0] = '\0';
  if (uc != CURLUE_OK) {
    snprintf(why, sizeof why, "bad URL: %s", curl_url_strerror(uc));
  } else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
             (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
    snprintf(why, sizeof why, "unsupported URL scheme '%.40s' (only http and https)", scheme ? scheme : "");
  } else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
    snprintf(why, sizeof why, "bad URL: no host");
  } else if (curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK || !port) {
    snprintf(why, sizeof why, "bad URL: no port");
  } else if (!av_is_ascii(host)) {
    if (av_url_push_ascii(L, u, host, why, sizeof why)) {
      *rewritten = true;
      curl_free(host);
      host = NULL;
      curl_url_get(u, CURLUPART_HOST, &host, 0);
      if (!host) {
        lua_pop(L, 1);
        snprintf(why, sizeof why, "out of memory");
      }
    }
  }
  if (!why[0]) {
    luaL_Buffer key;
    luaL_buffinit(L, &key);
    for (char *c = scheme; *c; c++) luaL_addchar(&key, (char)(*c | 0x20));
    luaL_addstring(&key, "://");
    for (char *c = host; *c; c++) luaL_addchar(&key, (*c >= 'A' && *c <= 'Z') ? (char)(*c | 0x20) : *c);
    luaL_addchar(&key, ':');
    luaL_addstring(&key, port);
    luaL_pushresult(&key);
    if (*rewritten) lua_insert(L, -2); /* key, URL */
    else lua_pushvalue(L, urlidx);
  }
  curl_free(scheme);
  curl_free(host);
  curl_free(port);
  curl_url_cleanup(u);
  if (!why[0]) return NULL;
  lua_pushstring(L, why);
  return lua_tostring(L, -1);
}

/* A session keeps the last origin it checked ("http://host:port" as the
 * caller wrote it): URLs that start with it followed by '/', '?', '#' or
 * nothing share its key, so only the first of many requests to one origin
 * pays for a second parse (libcurl parses every URL anyway, and refuses
 * junk in the rest of it as CURLE_URL_MALFORMAT, reported as `invalid`).
 * An origin whose host had to be made ASCII is not kept: each of its URLs
 * is rewritten. */
const char *av_url_key(lua_State *L, av_url_cache *cache, int urlidx) {
  const char *url = lua_tostring(L, urlidx);
  const char *sep = strstr(url, "://");
  size_t authority = sep ? strcspn(sep + 3, "/?#") : 0;
  /* no authority ("http:///host/": libcurl takes up to three slashes):
   * the host comes after a slash, so the prefix would not tell origins
   * apart; such URLs are parsed each time and never kept */
  if (authority == 0) sep = NULL;
  size_t origin_len = sep ? (size_t)(sep + 3 - url) + authority : 0;
  if (sep && cache->origin && origin_len == cache->origin_len && memcmp(url, cache->origin, origin_len) == 0) {
    lua_pushstring(L, cache->key);
    lua_pushvalue(L, urlidx);
    return NULL;
  }
  bool rewritten;
  const char *err = av_url_check(L, lua_absindex(L, urlidx), &rewritten);
  if (err || !sep || rewritten) return err;
  char *origin = malloc(origin_len + 1);
  char *key = strdup(lua_tostring(L, -2));
  if (!origin || !key) {
    free(origin);
    free(key);
    return NULL; /* no cache this time: the key on the stack is still right */
  }
  memcpy(origin, url, origin_len);
  origin[origin_len] = '\0';
  free(cache->origin);
  free(cache->key);
  cache->origin = origin;
  cache->origin_len = origin_len;
  cache->key = key;
  return NULL;
}

void av_url_cache_free(av_url_cache *cache) {
  free(cache->origin);
  free(cache->key);
  cache->origin = cache->key = NULL;
}
