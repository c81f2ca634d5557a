/* Redirect rules, followed for every method by the request (libcurl's
 * FOLLOWLOCATION is off: it re-sends a custom method unchanged on every
 * hop, and keeps the headers of a body it dropped), with aiohttp's rules:
 * a 303 (unless HEAD) becomes a GET without body, a 301 or 302 turns only
 * a POST into a GET, anything else keeps its method and body. A body
 * dropped takes the headers that described it along (as requests does);
 * another origin gets no credentials. Pure functions: request.c applies
 * them to the next hop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "private.h"

bool av_redirect_status(long status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

const char *av_redirect_refusal(const char *from, const char *target, int redirects, int max, char *why,
                                size_t whylen) {
  if (redirects >= max) {
    snprintf(why, whylen, "too many redirects (max_redirects = %d): the last URL, '%.200s', redirects to '%.200s'",
             max, from ? from : "?", target);
    return why;
  }
  if (strncasecmp(target, "http://", 7) != 0 && strncasecmp(target, "https://", 8) != 0) {
    snprintf(why, whylen, "redirect to '%.200s' refused: only http and https URLs are followed", target);
    return why;
  }
  return NULL;
}

bool av_redirect_to_get(long status, const char *method) {
  return status == 303 ? strcmp(method, "HEAD") != 0
                       : (status == 301 || status == 302) && strcmp(method, "POST") == 0;
}

/* False when either does not parse, which only costs the next hop its
 * credentials. */
bool av_redirect_same_origin(const char *a, const char *b) {
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

/* What a hop drops: the body's headers, credentials, or both. */
typedef struct av_drop {
  bool body, credentials;
} av_drop;

static bool av_header_dropped(const char *h, const void *ud) {
  const av_drop *d = ud;
  return (d->credentials && (av_header_is(h, "Authorization") || av_header_is(h, "Proxy-Authorization") ||
                             av_header_is(h, "Cookie"))) ||
         (d->body && (av_header_is(h, "Content-Type") || av_header_is(h, "Content-Length") ||
                      av_header_is(h, "Content-Encoding") || av_header_is(h, "Transfer-Encoding")));
}

bool av_redirect_headers(struct curl_slist **own, const struct curl_slist *defaults, bool body, bool credentials) {
  const av_drop drop = {body, credentials};
  const struct curl_slist *from = *own ? *own : defaults;
  const struct curl_slist *h = from;
  while (h && !av_header_dropped(h->data, &drop)) h = h->next;
  if (!h) return true; /* none to drop */
  /* never empty: the session's defaults (User-Agent ...) stay */
  struct curl_slist *kept = av_headers_filter(from, av_header_dropped, &drop);
  if (!kept) return false;
  av_headers_free(*own);
  *own = kept;
  return true;
}
