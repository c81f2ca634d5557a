/* A client's settings: auth, proxy, cookies sent to every host, redirect
 * control. A session has one set; a request that overrides any of them
 * gets its own, merged by session.lua, which checks every value with the
 * messages users see. Here they are only read and applied to a handle:
 * once per handle and settings (av_easy.client_id), since they are the
 * same for most requests of a session. */
#include <stdlib.h>
#include <string.h>

#include "private.h"

/* A copy of the string field `name` of the table at idx, or NULL when it
 * is absent; false on OOM. */
static bool av_client_string(lua_State *L, int idx, const char *name, char **out) {
  *out = NULL;
  lua_getfield(L, idx, name);
  const char *s = lua_tostring(L, -1);
  bool ok = !s || (*out = strdup(s)) != NULL;
  lua_pop(L, 1);
  return ok;
}

bool av_client_read(lua_State *L, int idx, av_client *c, uint64_t id) {
  memset(c, 0, sizeof *c);
  c->id = id;
  c->follow = true;
  c->max_redirects = AV_MAX_REDIRECTS;
  if (lua_isnoneornil(L, idx)) return true;
  idx = lua_absindex(L, idx);
  bool ok = av_client_string(L, idx, "user", &c->user) && av_client_string(L, idx, "password", &c->password) &&
            av_client_string(L, idx, "proxy_http", &c->proxy_http) &&
            av_client_string(L, idx, "proxy_https", &c->proxy_https) &&
            av_client_string(L, idx, "no_proxy", &c->no_proxy) &&
            av_client_string(L, idx, "proxy_user", &c->proxy_user) &&
            av_client_string(L, idx, "proxy_password", &c->proxy_password) &&
            av_client_string(L, idx, "cookie", &c->cookie) &&
            av_client_string(L, idx, "seed_cookie", &c->seed_cookie);
  lua_getfield(L, idx, "header_cookie");
  c->cross_cookie = lua_isstring(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, idx, "auth");
  c->auth = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "digest") == 0 ? CURLAUTH_DIGEST : CURLAUTH_BASIC;
  lua_getfield(L, idx, "follow");
  if (!lua_isnil(L, -1)) c->follow = lua_toboolean(L, -1);
  lua_getfield(L, idx, "max_redirects");
  if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0 && lua_tointeger(L, -1) <= 1000)
    c->max_redirects = (int)lua_tointeger(L, -1);
  lua_pop(L, 3);
  if (!ok) av_client_free(c);
  return ok;
}

const av_client *av_request_client(const av_request *req) {
  return req->client ? req->client : &req->owner->client;
}

void av_client_free(av_client *c) {
  free(c->user);
  free(c->password);
  free(c->proxy_http);
  free(c->proxy_https);
  free(c->no_proxy);
  free(c->proxy_user);
  free(c->proxy_password);
  free(c->cookie);
  free(c->seed_cookie);
  memset(c, 0, sizeof *c);
}

bool av_client_set_cookie(av_client *c, const char *cookie, uint64_t id) {
  char *copy = cookie ? strdup(cookie) : NULL;
  if (cookie && !copy) return false;
  free(c->cookie);
  c->cookie = copy;
  /* the given cookies are gone: what is left is a Cookie header's, if any */
  free(c->seed_cookie);
  c->seed_cookie = NULL;
  c->id = id;
  return true;
}

bool av_client_apply(const av_client *c, av_easy *e, bool https, bool credentials) {
  bool auth = credentials && c->user;
  /* a hop's id: the settings, the scheme (which proxy), the credentials */
  uint64_t id = c->id << 2 | (uint64_t)https << 1 | (uint64_t)credentials;
  if (e->client_id == id) return auth && c->auth == CURLAUTH_DIGEST;
  CURL *h = e->h;
  curl_easy_setopt(h, CURLOPT_USERNAME, auth ? c->user : NULL);
  curl_easy_setopt(h, CURLOPT_PASSWORD, auth ? c->password : NULL);
  curl_easy_setopt(h, CURLOPT_HTTPAUTH, auth ? (long)c->auth : (long)CURLAUTH_BASIC);
  /* "" (not NULL) when there is none: libcurl then reads no environment
   * (session.lua did, once per session) */
  const char *proxy = https ? c->proxy_https : c->proxy_http;
  curl_easy_setopt(h, CURLOPT_PROXY, proxy ? proxy : "");
  curl_easy_setopt(h, CURLOPT_NOPROXY, c->no_proxy ? c->no_proxy : "");
  curl_easy_setopt(h, CURLOPT_PROXYUSERNAME, c->proxy_user);
  curl_easy_setopt(h, CURLOPT_PROXYPASSWORD, c->proxy_password);
  /* a Cookie header's cookies go where the header would: not to another
   * origin (as redirect.c drops the header itself) */
  curl_easy_setopt(h, CURLOPT_COOKIE, credentials || !c->cross_cookie ? c->cookie : c->seed_cookie);
  e->client_id = id;
  return auth && c->auth == CURLAUTH_DIGEST;
}
