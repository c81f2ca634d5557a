/* Redirects, followed here for every method rather than by libcurl
 * (which re-sends a custom method unchanged on every hop, and keeps the
 * headers of a body it dropped), with aiohttp's rules: a 303 (unless HEAD)
 * becomes a GET without body, a 301 or 302 turns only a POST into a GET,
 * anything else keeps its method and body. A body dropped takes the
 * headers that described it along (as requests does); another origin gets
 * no credentials. Each hop reuses the request's slot and easy handle; the
 * total timeout counts from the slot. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "private.h"

/* at most this many redirects, as aiohttp's and libcurl's defaults */
#define AV_MAX_REDIRECTS 10

/* Whether url names a scheme we follow: only http and https. */
static bool av_redirect_scheme_ok(const char *url) {
  return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* Whether a and b have the same origin (scheme, host, port); false when
 * either does not parse, which only costs the next hop its credentials. */
static bool av_redirect_same_origin(const char *a, const char *b) {
  static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
  CURLU *ua = curl_url(), *ub = curl_url();
  bool same = ua && ub && curl_url_set(ua, CURLUPART_URL, a, 0) == CURLUE_OK &&
              curl_url_set(ub, CURLUPART_URL, b, 0) == CURLUE_OK;
  for (size_t i = 0; same && i < sizeof parts / sizeof *parts; i++) {
    char *pa = NULL, *pb = NULL;
    same = curl_url_get(ua, parts[i], &pa, CURLU_DEFAULT_PORT) == CURLUE_OK &&
           curl_url_get(ub, parts[i], &pb, CURLU_DEFAULT_PORT) == CURLUE_OK && strcasecmp(pa, pb) == 0;
    curl_free(pa);
    curl_free(pb);
  }
  curl_url_cleanup(ua);
  curl_url_cleanup(ub);
  return same;
}

/* Whether the header line h ("Name: value", "Name;", "Name:") is name's. */
static bool av_header_is(const char *h, const char *name) {
  size_t n = strlen(name);
  return strncasecmp(h, name, n) == 0 && (h[n] == ':' || h[n] == ';');
}

static bool av_header_credential(const char *h) {
  return av_header_is(h, "Authorization") || av_header_is(h, "Cookie");
}

static bool av_header_of_body(const char *h) {
  return av_header_is(h, "Content-Type") || av_header_is(h, "Content-Length") ||
         av_header_is(h, "Content-Encoding") || av_header_is(h, "Transfer-Encoding");
}

/* Drop the headers `drop` picks from the request's headers, for this hop
 * and the rest. False when out of memory. */
static bool av_redirect_drop(av_request *req, bool (*drop)(const char *)) {
  const struct curl_slist *from = req->headers ? req->headers : req->session->headers;
  const struct curl_slist *h = from;
  while (h && !drop(h->data)) h = h->next;
  if (!h) return true; /* none to drop */
  /* never empty: the session's defaults (User-Agent ...) stay */
  struct curl_slist *kept = NULL;
  for (h = from; h; h = h->next) {
    if (drop(h->data)) continue;
    struct curl_slist *next = curl_slist_append(kept, h->data);
    if (!next) {
      curl_slist_free_all(kept);
      return false;
    }
    kept = next;
  }
  curl_slist_free_all(req->headers);
  req->headers = kept;
  return true;
}

/* The method and body of the next hop, by aiohttp's rules; false when
 * out of memory. */
static bool av_redirect_method(av_request *req, long status) {
  bool to_get = status == 303 ? strcmp(req->method, "HEAD") != 0
                              : (status == 301 || status == 302) && strcmp(req->method, "POST") == 0;
  if (!to_get) return true;
  strcpy(req->method, "GET");
  req->body = NULL;
  req->body_len = 0;
  req->has_body = false;
  return av_redirect_drop(req, av_header_of_body);
}

bool av_redirect_follow(av_request *req) {
  av_loop *lp = req->op.loop;
  CURL *h = req->easy->h;
  long status = req->status;
  char *target = NULL, *from = NULL;
  if (status != 301 && status != 302 && status != 303 && status != 307 && status != 308) return false;
  /* where FOLLOWLOCATION would go, resolved against this hop's URL */
  if (curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &target) != CURLE_OK || !target) return false;
  if (req->redirects >= AV_MAX_REDIRECTS) {
    av_request_fail(req, "protocol", "Maximum (%d) redirects followed", AV_MAX_REDIRECTS);
    return false;
  }
  if (!av_redirect_scheme_ok(target)) {
    av_request_fail(req, "protocol", "redirect to '%.200s' refused: only http and https URLs are followed", target);
    return false;
  }
  uint64_t elapsed = av_loop_now_ms(lp) - req->started;
  if (req->total_ms && elapsed >= (uint64_t)req->total_ms) {
    av_request_timed_out(req); /* connected: reported as the total timeout */
    return false;
  }
  curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &from);
  char *url = strdup(target);
  if (!url || (!(from && av_redirect_same_origin(from, url)) && !av_redirect_drop(req, av_header_credential)) ||
      !av_redirect_method(req, status)) {
    free(url);
    av_request_fail(req, "protocol", "out of memory while following a redirect");
    return false;
  }
  free(req->effective_url);
  req->effective_url = url; /* the response's URL, unless another hop follows */
  req->redirects++;

  /* The next hop: out of the multi and in again. We run after
   * curl_multi_socket_action returned, never inside a libcurl callback. */
  av_curl_remove(lp, h);
  req->resp_headers.len = 0;
  req->resp_body.len = 0;
  req->connected = req->sending = false;
  memset(&req->check, 0, sizeof req->check);
  req->sock_error = 0;
  av_deadline_clear(&req->op); /* sock_read: the next PREREQFUNCTION arms it */
  req->hop_total_ms = req->total_ms ? req->total_ms - (long)elapsed : 0;
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, req->headers ? req->headers : req->session->headers);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, req->hop_total_ms);
  av_request_set_method(req, h);
  CURLMcode rc = av_curl_add(lp, h);
  if (rc != CURLM_OK) {
    av_easy_put(lp, req->easy);
    req->easy = NULL;
    av_request_fail(req, "protocol", "cannot follow the redirect: %s", curl_multi_strerror(rc));
    av_session_release(req->session, req);
  }
  return true;
}
