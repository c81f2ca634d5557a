/* The request layer: one HTTP request's lifecycle, from its arguments
 * to :result(): start on an easy handle of the transport, redirects (the
 * next hop on the same handle and slot), the clocks (total and connect are
 * libcurl's, sock_read is an op deadline; pool is the owner's), and the
 * end, which goes to the op's ready list and to the owner's `ended`.
 * libcurl's data callbacks are in receive.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "private.h"

static void av_request_xfer_done(av_easy *e, CURLcode code);
static void av_request_unwatchable(av_easy *e, int err);
static void av_request_aborted(av_easy *e);
static const av_xfer_vtable av_request_xfer = {av_request_xfer_done, av_request_unwatchable, av_request_aborted};

/* ------------------------------------------------------------ finishing */

/* req's transfer is over (or never ran): its task hears of it now, unless
 * it already has the response of a stream and is not waiting for more. */
static void av_request_never_ran(av_request *req);

static void av_request_settle(av_request *req) {
  req->phase = AV_REQ_DONE;
  if (!req->easy) av_request_never_ran(req);
  av_receive_wake(req);
}

void av_request_fail(av_request *req, const char *kind, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *msg = NULL;
  if (vasprintf(&msg, fmt, ap) < 0) msg = NULL;
  va_end(ap);
  free(req->err_message);
  req->err_message = msg;
  req->err_kind = kind;
  av_request_settle(req);
}

void av_request_cancelled(av_request *req) {
  req->phase = AV_REQ_DONE;
  req->err_kind = "cancelled";
  if (!req->easy) av_request_never_ran(req);
}

/* The file body, once nothing will read it again. */
static void av_request_close_upload(av_request *req) {
  if (req->upload) fclose(req->upload);
  req->upload = NULL;
}

static uint32_t av_us(uint64_t us) { return us > UINT32_MAX ? UINT32_MAX : (uint32_t)us; }

/* How many of the phases dns, connect, tls, sent, first_byte the final hop
 * reached: a connection means its phases were; a response, its first byte. */
static int av_request_reached(const av_request *req) {
  return req->check.status > 0 ? 5 : req->connected ? 4 : req->t_dns ? 1 : 0;
}

/* A request that ended without a transfer of its own (refused, queued and
 * then cancelled or timed out, or its start failed): its end is now. */
static void av_request_never_ran(av_request *req) {
  if (req->ended) return;
  req->ended = uv_hrtime();
  av_trace *trace = req->owner->trace ? *req->owner->trace : NULL;
  if (trace) av_trace_request(trace, req, 0, 0, 0);
}

/* The final hop's phase times, as far as it got: kept for response.timings
 * (the handle serves another transfer next). */
static void av_request_clock(av_request *req) {
  CURL *h = req->easy->h;
  curl_off_t dns = 0, connect = 0, tls = 0, sent = 0, first = 0;
  long connects = 0;
  curl_easy_getinfo(h, CURLINFO_NAMELOOKUP_TIME_T, &dns);
  curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &connect);
  curl_easy_getinfo(h, CURLINFO_APPCONNECT_TIME_T, &tls);
  curl_easy_getinfo(h, CURLINFO_PRETRANSFER_TIME_T, &sent);
  curl_easy_getinfo(h, CURLINFO_STARTTRANSFER_TIME_T, &first);
  curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &connects);
  /* each phase reached at least the one before: libcurl leaves those it
   * did not need at 0 (tls on plain HTTP, all of them on a reused
   * connection); timings() leaves out those not reached */
  req->reused = connects == 0 && req->connected;
  if (req->reused) dns = connect = tls = 0; /* none of them happened for this request */
  if (req->connected) {
    if (connect < dns) connect = dns;
    if (tls < connect) tls = connect;
    if (sent < tls) sent = tls;
    if (first < sent) first = sent;
  }
  req->t_dns = av_us((uint64_t)dns);
  req->t_connect = av_us((uint64_t)connect);
  req->t_tls = av_us((uint64_t)tls);
  req->t_sent = av_us((uint64_t)sent);
  req->t_first_byte = av_us((uint64_t)first);
  req->ended = uv_hrtime();
  if (req->paused) req->paused_ns += req->ended - req->paused_at; /* ended paused: closed or cancelled */
  av_trace *trace = req->owner->trace ? *req->owner->trace : NULL;
  if (trace) {
    curl_off_t down = 0, up = 0;
    curl_easy_getinfo(h, CURLINFO_SIZE_DOWNLOAD_T, &down);
    curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &up);
    av_trace_request(trace, req, (int64_t)down, (int64_t)up, av_request_reached(req));
  }
}

/* Give the easy handle back to the transport. */
static void av_request_detach(av_request *req) {
  av_transport *t = req->owner->transport;
  av_request_clock(req);
  av_request_close_upload(req);
  av_xfer_stop(t, req->easy);
  av_multipart_detach(req, req->easy->h);
  /* libcurl keeps a Digest nonce and realm on the handle, and would send
   * them with the next Digest request it makes, to any server */
  if (req->digest) av_easy_discard(t, req->easy);
  else av_easy_put(t, req->easy);
  req->easy = NULL;
}

/* A started request is over: its handle goes back, its owner hears of it.
 * An op already handed over (a stream) may still have a deadline. */
static void av_request_end(av_request *req) {
  av_deadline_clear(&req->op);
  av_request_detach(req);
  req->owner->ended(req);
}

static double av_seconds(long ms) { return (double)ms / 1000.0; }

void av_request_timeout(av_request *req, const char *phase, const char *what, long ms) {
  av_request_fail(req, "timeout", "%s timeout: %s %g s", phase, what, av_seconds(ms));
  req->err_phase = phase;
}

/* Which of libcurl's clocks ran out: connect while the current hop had no
 * connection yet, else total. Not CURLINFO_CONNECT_TIME_T: it is 0 on a
 * reused connection. */
static void av_request_timed_out(av_request *req) {
  bool connect_phase =
      !req->connected && req->connect_ms && (!req->hop_total_ms || req->connect_ms <= req->hop_total_ms);
  if (connect_phase)
    av_request_timeout(req, "connect", "no connection within", req->connect_ms);
  else
    av_request_timeout(req, "total", "request not done within", req->total_ms);
}

/* A socket of the transfer could not be watched (av_request_unwatchable). */
static void av_request_fail_sock(av_request *req) {
  av_request_fail(req, "protocol", "the connection's socket could not be watched: %s", uv_strerror(req->sock_error));
}

/* The error of a transfer libcurl ended with code (not CURLE_OK). */
static void av_request_failed(av_request *req, CURLcode code) {
  const av_response_check *c = &req->check;
  const char *detail = req->easy->errbuf[0] ? req->easy->errbuf : curl_easy_strerror(code);
  if (req->fault == AV_FAULT_BODY_TOO_LARGE) {
    av_request_fail(req, "protocol", "response body larger than max_body_size (%zu bytes)", req->max_body);
  } else if (req->fault == AV_FAULT_HEADERS_TOO_LARGE) {
    av_request_fail(req, "protocol", "response header block larger than %d bytes", AV_MAX_HEADER_BLOCK);
  } else if (req->fault == AV_FAULT_FRAMING && c->other_length == -2) {
    av_request_fail(req, "protocol", "response has both Content-Length and Transfer-Encoding (RFC 9112 6.3)");
  } else if (req->fault == AV_FAULT_FRAMING && c->other_length < 0) {
    av_request_fail(req, "protocol", "response has a malformed Content-Length header");
  } else if (req->fault == AV_FAULT_FRAMING) {
    av_request_fail(req, "protocol", "response has conflicting Content-Length headers (%lld and %lld)",
                    (long long)c->length, (long long)c->other_length);
  } else if (req->fault == AV_FAULT_FILE && req->upload_errno == 0) {
    av_request_fail(req, "invalid", "the request body's file '%s' shrank while it was sent", req->upload_path);
  } else if (req->fault == AV_FAULT_FILE) {
    av_request_fail(req, "invalid", "could not read the request body's file '%s': %s", req->upload_path,
                    strerror(req->upload_errno));
  } else if (req->fault == AV_FAULT_NO_MEMORY) {
    av_request_fail(req, "protocol", "out of memory while reading the response");
  } else if (req->sock_error) {
    av_request_fail_sock(req);
  } else if (code == CURLE_OPERATION_TIMEDOUT) {
    av_request_timed_out(req);
  } else if (code == CURLE_OUT_OF_MEMORY && c->status && !c->complete) {
    /* libcurl's "Out of memory" for a header line over its 100 KiB limit */
    av_request_fail(req, "protocol", "response header too large: libcurl refuses a header line over 100 KiB");
  } else if (c->status >= 100 && c->status < 200 && c->complete) {
    /* httpbin's /status/100: libcurl reads what follows as HTTP/0.9 */
    av_request_fail(req, "protocol", "the server sent an interim %d response and no final one (%s)", c->status,
                    detail);
  } else {
    /* a URL libcurl refused before any redirect is the caller's */
    bool bad_url = code == CURLE_URL_MALFORMAT && req->redirects == 0;
    av_request_fail(req, bad_url ? "invalid" : av_error_kind(code), "%s", detail);
    /* the peer reset or closed the connection mid-transfer: said as data
     * (err.cause = "reset"), so a retry need not parse libcurl's words.
     * libcurl 7.88 also reports a chunked body it refuses (a bad chunk
     * size) as a receive error, which only its message tells apart (its
     * saved errno may be an earlier transfer's): sent again, the same
     * answer would come back, so that one is no reset. */
    bool refused = code == CURLE_RECV_ERROR && strstr(detail, "chunked-encoding") != NULL;
    if (((code == CURLE_RECV_ERROR || code == CURLE_SEND_ERROR) && !refused) || code == CURLE_GOT_NOTHING ||
        code == CURLE_PARTIAL_FILE)
      req->err_phase = "reset";
  }
}

/* A transfer libcurl ended with CURLE_OK can still be one we refuse:
 * libcurl 7.88 takes a status line alone, or a header block cut short by
 * the close, as a complete empty answer. */
static void av_request_answered(av_request *req) {
  if (!req->check.complete) {
    av_request_fail(req, "protocol", "the connection closed before the response's header block ended");
  } else if (req->status < 200) {
    av_request_fail(req, "protocol", "the server sent an interim %ld response and no final one", req->status);
  } else {
    req->stream_ready = req->stream; /* a stream answered at its end: read() gets all of it */
    av_request_settle(req);
  }
}

/* ------------------------------------------------------------- running */

/* A multipart body libcurl could not make: a file part that cannot be
 * read (gone since the request was made) is the caller's. */
static void av_request_body_failed(av_request *req, CURLcode code) {
  bool file = code == CURLE_READ_ERROR || code == CURLE_FILE_COULDNT_READ_FILE;
  av_request_fail(req, file ? "invalid" : "protocol", "cannot make the multipart body: %s", curl_easy_strerror(code));
}

/* Options every request sets the same way: once per easy handle. */
static void av_request_easy_defaults(av_easy *e) {
  CURL *h = e->h;
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, e->errbuf);
  /* Only http and https, on the first request and on every redirect. */
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  /* Redirects are followed here (av_request_follow), with one set of rules
   * for every method, and the headers of a dropped body dropped too. */
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  /* ... so libcurl's own count only bounds its Digest re-sends: a server
   * that calls every nonce stale had it send thousands (unbounded by
   * default), until a header limit ended them as an error */
  curl_easy_setopt(h, CURLOPT_MAXREDIRS, 2L);
  /* HTTP/2 over TLS only: libcurl 7.88 cannot reuse h2c connections. */
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  /* Decode what the server compressed; the Accept-Encoding header itself
   * comes with the session's default headers (see av_headers_defaults). */
  curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
  /* a proxy's answer to CONNECT is not the response's: libcurl keeps it */
  curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  av_receive_setup(h);
}

/* The method and body, undoing whatever the handle's last request set;
 * libcurl's code when a multipart body cannot be made. */
static CURLcode av_request_set_method(av_request *req, CURL *h) {
  bool head = strcmp(req->method, "HEAD") == 0;
  bool get = strcmp(req->method, "GET") == 0;
  bool post = strcmp(req->method, "POST") == 0;
  bool custom = !(get || head || post);
  curl_easy_setopt(h, CURLOPT_HTTPGET, 1L); /* clears POST, upload and NOBODY */
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, custom ? req->method : NULL);
  if (head) {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (req->parts) {
    /* made anew for each hop: file parts are read again from their start */
    av_multipart_detach(req, h);
    CURLcode rc = av_multipart_attach(req, h);
    if (rc != CURLE_OK) return rc;
    if (get) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "GET");
  } else if (req->pull) {
    /* no size: libcurl sends it chunked, reading through READFUNCTION */
    if (get) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "GET");
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)-1);
  } else if (req->upload) {
    /* a file: POST (or the method) with no POSTFIELDS reads it through
     * READFUNCTION, from its start on every hop */
    if (get) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "GET");
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    rewind(req->upload);
  } else if (req->has_body || post) {
    /* a GET with a body: libcurl sends a body only as a POST */
    if (get) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "GET");
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
  }
  /* upload progress only where it starts the sock_read clock */
  bool progress = req->sock_read_ms && (req->body_len > 0 || req->parts);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, progress ? 0L : 1L);
  return CURLE_OK;
}

/* The owner's default headers for req: a request without a body needs
 * no "Expect:", and a POST without one removes the form Content-Type
 * libcurl would send (requests and aiohttp send none). */
static const struct curl_slist *av_request_default_headers(const av_request *req) {
  if (req->has_body) return req->owner->headers;
  return strcmp(req->method, "POST") == 0 ? req->owner->headers_bodyless : req->owner->headers_nobody;
}

/* The headers req sends: its own, or its owner's defaults. */
static const struct curl_slist *av_request_header_list(const av_request *req) {
  return req->headers ? req->headers : av_request_default_headers(req);
}

/* What varies between hops: URL, headers, what is left of total, method;
 * a code as av_request_set_method's. */
static CURLcode av_request_set_hop(av_request *req, CURL *h, const char *url) {
  curl_easy_setopt(h, CURLOPT_URL, url);
  /* the proxy for this hop's scheme; auth until a hop leaves the origin */
  if (av_client_apply(av_request_client(req), req->easy, strncasecmp(url, "https:", 6) == 0, !req->no_credentials))
    req->digest = true;
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, av_request_header_list(req));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, req->hop_total_ms);
  return av_request_set_method(req, h);
}

bool av_request_run(av_request *req) {
  /* it has its slot now: the wait for one (timings' queued) ends here,
   * before a handle is made and set up; the total over all hops counts
   * from here too (the clock now, not the loop's cached time) */
  req->started = uv_hrtime();
  av_transport *t = req->owner->transport;
  av_easy *e = av_easy_get(t, &av_request_xfer, req);
  if (!e) {
    av_request_fail(req, "protocol", "out of memory: cannot create a transfer");
    return false;
  }
  CURL *h = e->h;
  req->easy = e;
  req->phase = AV_REQ_RUNNING;
  if (req->upload_path && !(req->upload = fopen(req->upload_path, "rb"))) {
    int err = errno;
    req->easy = NULL;
    av_easy_put(t, e);
    av_request_fail(req, "invalid", "cannot read file '%s': %s", req->upload_path, strerror(err));
    return false;
  }
  if (e->fresh) av_request_easy_defaults(e);
  av_easy_tls(t, e, &req->owner->tls);
  av_easy_jar(e, req->owner->jar);
  av_receive_attach(h, req);
  /* a stream moves big bodies: libcurl reads as much as it may keep */
  long bufsize = req->stream ? (long)req->stream_limit : req->owner->read_bufsize;
  curl_easy_setopt(h, CURLOPT_BUFFERSIZE, bufsize < CURL_MAX_READ_SIZE ? bufsize : (long)CURL_MAX_READ_SIZE);
  /* a stream's compressed body is decoded as it is read (inflate.c) */
  curl_easy_setopt(h, CURLOPT_HTTP_CONTENT_DECODING, req->stream ? 0L : 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, req->connect_ms);
  req->hop_total_ms = req->total_ms;
  CURLcode made = av_request_set_hop(req, h, req->url);
  CURLMcode rc = made == CURLE_OK ? av_xfer_start(t, e) : CURLM_OK;
  if (made != CURLE_OK || rc != CURLM_OK) {
    av_multipart_detach(req, h);
    av_request_close_upload(req);
    req->easy = NULL;
    av_easy_put(t, e);
    if (made != CURLE_OK) av_request_body_failed(req, made);
    else av_request_fail(req, "protocol", "cannot start transfer: %s", curl_multi_strerror(rc));
    return false;
  }
  return true;
}

/* Keep the response a hop is redirected from (status, URL, raw header
 * block) for response.history: records of a size_t length before each
 * string. Only requests that are redirected pay for it. */
static bool av_request_remember(av_request *req, const char *url) {
  if (!req->history && !(req->history = calloc(1, sizeof *req->history))) return false;
  size_t ulen = url ? strlen(url) : 0, hlen = req->resp_headers.len, had = req->history->len;
  long status = req->status;
  if (av_buf_append(req->history, (const char *)&status, sizeof status) &&
      av_buf_append(req->history, (const char *)&ulen, sizeof ulen) && av_buf_append(req->history, url, ulen) &&
      av_buf_append(req->history, (const char *)&hlen, sizeof hlen) &&
      av_buf_append(req->history, req->resp_headers.data, hlen))
    return true;
  req->history->len = had; /* no half record for op:history() to read past */
  return false;
}

/* The response was a redirect (status in req->status): take the next hop
 * on the same handle and slot and return true (if it cannot start, req
 * has ended with an error), or fail req when the redirect is refused and
 * return false (req is then DONE, still attached). False, req untouched,
 * when the response names no target. */
static bool av_request_follow(av_request *req) {
  CURL *h = req->easy->h;
  char *target = NULL, *from = NULL;
  char why[300];
  /* where FOLLOWLOCATION would go, resolved against this hop's URL */
  if (curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &target) != CURLE_OK || !target) return false;
  curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &from);
  if (av_redirect_refusal(from, target, req->redirects, av_request_client(req)->max_redirects, why, sizeof why)) {
    av_request_fail(req, "protocol", "%s", why);
    return false;
  }
  uint64_t now = uv_hrtime(), elapsed = (now - req->started) / 1000000;
  if (req->total_ms && elapsed >= (uint64_t)req->total_ms) {
    av_request_timed_out(req); /* connected: reported as the total timeout */
    return false;
  }
  bool to_get = av_redirect_to_get(req->status, req->method);
  /* a body the task handed over is gone: a 307 or 308 that would send it
   * again is the response (as curl does for a body it cannot rewind) */
  if (req->pull && !to_get) return false;
  /* an international host name in ASCII form, as a request's own URL
   * gets it (libcurl's conversion fails in a process without a locale) */
  char *ascii = av_url_ascii(target);
  char *url = strdup(ascii ? ascii : target);
  curl_free(ascii);
  bool other_origin = !(url && from && av_redirect_same_origin(from, url));
  if (!url || !av_redirect_headers(&req->headers, av_request_header_list(req), to_get, other_origin) ||
      !av_request_remember(req, from)) {
    free(url);
    av_request_fail(req, "protocol", "out of memory while following a redirect");
    return false;
  }
  if (to_get) {
    strcpy(req->method, "GET");
    av_request_close_upload(req);
    av_multipart_detach(req, h);
    av_multipart_free(req);
    req->body = NULL;
    req->body_len = 0;
    req->has_body = false;
    if (req->pull) {
      /* a function body ends here: the GET sends none, and what the task
       * still writes goes nowhere (av_request_write) */
      req->pull = false;
      req->pull_eof = true; /* without pull: dropped (private.h) */
      req->want_body = false;
      av_buf_free(&req->pull_buf);
      req->pull_off = 0;
    }
  }
  free(req->effective_url);
  req->effective_url = url; /* the response's URL, unless another hop follows */
  req->redirects++;
  req->t_redirect = av_us((now - req->started) / 1000); /* the next hop starts now */
  if (other_origin) req->no_credentials = true; /* and stays so, as the headers do */

  /* The next hop: out of the multi and in again. We run after
   * curl_multi_socket_action returned, never inside a libcurl callback. */
  av_transport *t = req->owner->transport;
  av_xfer_stop(t, req->easy);
  av_receive_reset(req);
  av_deadline_clear(&req->op); /* sock_read: the next PREREQFUNCTION arms it */
  req->hop_total_ms = req->total_ms ? req->total_ms - (long)elapsed : 0;
  CURLcode made = av_request_set_hop(req, h, url);
  CURLMcode rc = made == CURLE_OK ? av_xfer_start(t, req->easy) : CURLM_OK;
  if (made != CURLE_OK || rc != CURLM_OK) {
    av_multipart_detach(req, h);
    if (made != CURLE_OK) av_request_body_failed(req, made);
    else av_request_fail(req, "protocol", "cannot follow the redirect: %s", curl_multi_strerror(rc));
    av_request_clock(req); /* its end: the last hop's times are what it has */
    if (req->digest) av_easy_discard(t, req->easy);
    else av_easy_put(t, req->easy);
    req->easy = NULL;
    req->owner->ended(req);
  }
  return true;
}

/* The transport's report: libcurl finished the transfer. */
static void av_request_xfer_done(av_easy *e, CURLcode code) {
  av_request *req = e->user;
  /* libcurl answered Digest challenges as often as CURLOPT_MAXREDIRS lets
   * it (FOLLOWLOCATION is off: nothing else counts there): the last 401
   * is the response, as curl's is, its body skipped by libcurl */
  if (code == CURLE_TOO_MANY_REDIRECTS && req->digest && req->check.complete && req->check.status == 401)
    code = CURLE_OK;
  if (code == CURLE_OK) {
    curl_easy_getinfo(e->h, CURLINFO_RESPONSE_CODE, &req->status);
    if (av_redirect_status(req->status) && av_request_client(req)->follow && av_request_follow(req))
      return; /* the next hop runs */
  }
  if (req->phase == AV_REQ_DONE) {
    /* a redirect refused by av_request_follow: req already has its error */
  } else if (code == CURLE_OK) {
    av_request_answered(req);
  } else {
    av_request_failed(req, code);
  }
  av_request_end(req);
}

/* The transport's report, from inside libcurl: a socket of the transfer
 * cannot be watched. The request expires at once, outside libcurl. */
static void av_request_unwatchable(av_easy *e, int err) {
  av_request *req = e->user;
  if (req->phase != AV_REQ_RUNNING || req->sock_error) return;
  req->sock_error = err;
  av_deadline_set(&req->op, 0);
}

void av_request_stop(av_request *req) {
  av_request_cancelled(req); /* first: the trace record says so */
  av_request_detach(req);
  req->owner->ended(req);
}

/* The transport closes (the loop does) while a streamed response it
 * delivered is still being received: end it as cancelled. */
static void av_request_aborted(av_easy *e) {
  av_request *req = e->user;
  av_deadline_clear(&req->op);
  if (!req->err_kind) {
    req->err_kind = "cancelled";
    req->err_message = strdup("the loop was closed while the response was being read");
  }
  av_request_detach(req);
  req->phase = AV_REQ_DONE;
  req->owner->ended(req);
}

void av_request_expire(av_request *req) {
  if (req->phase != AV_REQ_RUNNING) return;
  if (req->sock_error) {
    av_request_fail_sock(req);
  } else {
    uint64_t now = uv_now(&req->op.loop->uv);
    uint64_t due = req->last_read + (uint64_t)req->sock_read_ms;
    if (due > now) { /* data arrived since the deadline was set */
      av_deadline_set(&req->op, due - now);
      return;
    }
    av_request_timeout(req, "sock_read", "no data for", req->sock_read_ms);
  }
  av_request_end(req);
}

/* --------------------------------------------------------- Lua interface */

/* Milliseconds for an optional timeout in seconds (nil, false or 0: none).
 * session.lua checks timeouts and max_body_size with the messages users
 * see; here they are only converted, and whatever is not a positive
 * number (NaN included) means none. */
static long av_timeout_arg(lua_State *L, int arg) {
  if (lua_type(L, arg) != LUA_TNUMBER) return 0;
  lua_Number s = lua_tonumber(L, arg);
  if (!(s > 0)) return 0;
  if (s > 1e8) s = 1e8;
  double ms = s * 1000.0;
  long whole = (long)ms; /* ceil without libm's call: this runs four times a request */
  return whole < ms ? whole + 1 : whole;
}

bool av_file_refused(lua_State *L, const char *path, struct stat *st) {
  if (access(path, R_OK) != 0) {
    lua_pushfstring(L, "cannot read file '%s': %s", path, strerror(errno));
    return true;
  }
  if (stat(path, st) != 0 || !S_ISREG(st->st_mode)) {
    lua_pushfstring(L, "cannot send '%s': not a regular file", path);
    return true;
  }
  return false;
}

/* core.file_refusal(path) -> nil | why path cannot be sent (a multipart
 * file part's check, the same as a file body's) */
int av_file_refusal(lua_State *L) {
  struct stat st;
  if (!av_file_refused(L, luaL_checkstring(L, 1), &st)) lua_pushnil(L);
  return 1;
}

static bool av_method_valid(const char *m, size_t len) {
  if (len == 0 || len >= sizeof(((av_request *)0)->method)) return false;
  for (size_t i = 0; i < len; i++)
    if (m[i] < 'A' || m[i] > 'Z') return false;
  return true;
}

av_request *av_request_new(lua_State *L, size_t size, av_loop *lp, int loopidx, const av_op_vtable *vt,
                           av_request_owner *owner, av_url_cache *cache, const char **key) {
  loopidx = lua_absindex(L, loopidx);
  luaL_checkany(L, 2);
  size_t mlen, blen = 0;
  const char *method = luaL_checklstring(L, 3, &mlen);
  size_t ulen;
  const char *url = luaL_checklstring(L, 4, &ulen);
  if (!lua_isnoneornil(L, 5)) luaL_checktype(L, 5, LUA_TTABLE);
  /* a string, a file body (avideo.file: a table with its path), or a
   * multipart body (a table of parts marked multipart: multipart.c) */
  bool table_body = lua_type(L, 6) == LUA_TTABLE, multipart = false, pull = false;
  const char *body = lua_isnoneornil(L, 6) || table_body ? NULL : luaL_checklstring(L, 6, &blen);
  const char *path = NULL;
  if (table_body) {
    lua_getfield(L, 6, "multipart");
    multipart = lua_toboolean(L, -1);
    lua_getfield(L, 6, "pull");
    pull = lua_toboolean(L, -1);
    lua_getfield(L, 6, "path");
    path = lua_tostring(L, -1);
    lua_pop(L, 3); /* the table keeps the string */
    if (!path && !multipart && !pull) return av_error_arg(L, 6, "a file body needs a path"), NULL;
  }
  long total = av_timeout_arg(L, 7);
  long connect = av_timeout_arg(L, 8);
  long sock_read = av_timeout_arg(L, 9);
  long pool = av_timeout_arg(L, 10);
  lua_Integer max_body = luaL_optinteger(L, 11, 0); /* 0 or less: no limit */
  if (max_body < 0) max_body = 0;
  bool stream = lua_toboolean(L, 12);
  if (!lua_isnoneornil(L, 13)) luaL_checktype(L, 13, LUA_TTABLE);
  if (!av_method_valid(method, mlen)) return av_refuse(L, "bad HTTP method '%s'", method), NULL;
  /* libcurl reads a C string: everything after a NUL would be dropped */
  if (strlen(url) != ulen) return av_refuse(L, "bad URL: it contains a NUL byte"), NULL;

  av_request *req = lua_newuserdatauv(L, size, AV_REQUEST_NUV);
  int idx = lua_gettop(L);
  memset(req, 0, size);
  req->created = uv_hrtime();
  av_op_init(&req->op, lp, vt);
  luaL_setmetatable(L, AV_REQUEST_MT);
  req->owner = owner;
  memcpy(req->method, method, mlen + 1);
  req->total_ms = total;
  req->connect_ms = connect;
  req->sock_read_ms = sock_read;
  req->pool_ms = pool;
  req->max_body = (size_t)max_body;
  req->stream = stream;
  req->stream_limit = (size_t)owner->read_bufsize > AV_STREAM_BUFFER ? (size_t)owner->read_bufsize : AV_STREAM_BUFFER;
  if (!lua_isnoneornil(L, 13)) {
    /* settings of its own (session.lua merged them over the session's) */
    if (!(req->client = malloc(sizeof *req->client)) ||
        !av_client_read(L, 13, req->client, av_transport_id(owner->transport)))
      return luaL_error(L, "out of memory"), NULL;
  }

  const char *err = av_url_key(L, cache, 4);
  if (err) return av_refuse(L, "%s", err), NULL;
  /* the key stays on the stack under the op, which the caller returns */
  *key = lua_tostring(L, -2);
  /* the URL string stays referenced by the op, so req->url stays valid */
  req->url = lua_tostring(L, -1);
  req->url_rewritten = !lua_rawequal(L, -1, 4);
  lua_setiuservalue(L, idx, AV_UV_URL);
  if (multipart) {
    if (!av_multipart_read(L, 6, req)) return av_refuse(L, "bad multipart body (or out of memory)"), NULL;
    req->has_body = true;
  } else if (pull) {
    req->pull = true;
    req->has_body = true;
  } else if (path) {
    /* checked now, so that a file that cannot be read fails before
     * anything is sent; opened only when the request runs, so that
     * thousands of queued uploads hold no descriptor each */
    struct stat st;
    if (av_file_refused(L, path, &st)) return av_refuse(L, "%s", lua_tostring(L, -1)), NULL;
    if (!(req->upload_path = strdup(path))) return luaL_error(L, "out of memory"), NULL;
    req->body_len = (size_t)st.st_size; /* the Content-Length: what is sent, whatever the file does */
    req->has_body = true;
  }
  long long framed = body ? (long long)blen : multipart || pull ? AV_BODY_LENGTH_LIBCURL : (long long)req->body_len;
  if (body) req->has_body = true; /* set below too: av_request_default_headers reads it */
  const struct curl_slist *defaults = av_request_default_headers(req);
  if (!lua_isnoneornil(L, 5) && lua_rawlen(L, 5) > 0 && !av_headers_build(L, 5, defaults, framed, &req->headers))
    return av_refuse(L, "%s", lua_tostring(L, -1)), NULL;
  if (body) {
    /* anchored like the URL: libcurl sends it from the Lua string */
    lua_pushvalue(L, 6);
    lua_setiuservalue(L, idx, AV_UV_BODY);
    req->body = body;
    req->body_len = blen;
    req->has_body = true;
  }
  /* the owner as user value: the request keeps it alive */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, idx, AV_UV_EXTRA);
  av_op_start(L, &req->op, idx, 2, loopidx);
  lua_pushvalue(L, idx);
  return req;
}

/* Whether req's task has its response (or its error) to look at. */
static bool av_request_delivered(const av_request *req) {
  return req->op.state == AV_OP_IDLE && (req->phase == AV_REQ_DONE || req->stream_ready);
}

/* The finished, successful, buffered request op at arg 1. */
static av_request *av_request_answered_arg(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  if (!av_request_delivered(req)) luaL_error(L, "request has not finished");
  if (req->stream) luaL_error(L, "a streamed response's body is read with read()");
  if (req->err_kind) luaL_error(L, "request failed: it has no body");
  return req;
}

/* Push the response body, made a Lua string on first use: kept as user
 * value AV_UV_BODY (the request body's, unused once the transfer is over),
 * and the C buffer freed early, not at GC. */
static void av_request_push_body(lua_State *L, av_request *req) {
  if (req->body_made) {
    lua_getiuservalue(L, 1, AV_UV_BODY);
    return;
  }
  lua_pushlstring(L, req->resp_body.data ? req->resp_body.data : "", req->resp_body.len);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, AV_UV_BODY);
  req->body_made = true;
  req->body = NULL; /* the slot holds the response body now */
  av_buf_free(&req->resp_body);
}

/* req:result([lazy]) -> status, body, effective_url [, max_body of a stream]
 *                      | nil, kind, message, phase
 * phase: a timeout's clock, or "reset" (the peer reset or closed the
 * connection); else nil.
 * lazy: the body stays in C (nil in its place) for :body() or :json(); a
 * stream's always does (read() takes it), and a failure after its header
 * block is read()'s to report. */
static int av_request_result(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  bool lazy = lua_toboolean(L, 2) || req->stream;
  if (!av_request_delivered(req)) return luaL_error(L, "request has not finished");
  if (req->err_kind && !req->stream_ready) {
    lua_pushnil(L);
    lua_pushstring(L, req->err_kind);
    lua_pushstring(L, req->err_message ? req->err_message : req->err_kind);
    if (req->err_phase) lua_pushstring(L, req->err_phase); else lua_pushnil(L);
    return 4;
  }
  lua_pushinteger(L, req->status);
  if (lazy) lua_pushnil(L); else av_request_push_body(L, req);
  if (req->effective_url) lua_pushstring(L, req->effective_url);
  else if (req->url_rewritten) lua_pushstring(L, req->url);
  else lua_pushnil(L);
  if (!req->stream) return 3;
  lua_pushinteger(L, (lua_Integer)req->max_body); /* a stream's text() checks it */
  return 4;
}

/* req:body() -> the response body */
static int av_request_body(lua_State *L) {
  av_request_push_body(L, av_request_answered_arg(L));
  return 1;
}

/* req:json(null, arrays) -> value | nil, message, byte
 * The body decoded (json_decode.c) where it is: a body that is only ever
 * decoded never becomes a Lua string. */
static int av_request_json(lua_State *L) {
  av_request *req = av_request_answered_arg(L);
  luaL_checkany(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  if (req->body_made) {
    size_t len;
    lua_getiuservalue(L, 1, AV_UV_BODY);
    const char *text = lua_tolstring(L, 4, &len);
    return av_json_decode_text(L, text, len, 2, 3);
  }
  return av_json_decode_text(L, req->resp_body.data ? req->resp_body.data : "", req->resp_body.len, 2, 3);
}

/* req:headers() -> the raw header block of the final response. Most
 * callers never look, so it becomes a Lua string only when asked. */
static int av_request_headers(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  lua_pushlstring(L, req->resp_headers.data ? req->resp_headers.data : "", req->resp_headers.len);
  return 1;
}

/* req:history() -> { {status, url, raw header block}, ... }: the
 * responses redirected from, oldest first (empty when none). */
static int av_request_history(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  lua_createtable(L, req->redirects, 0);
  const char *p = req->history ? req->history->data : NULL, *end = p ? p + req->history->len : NULL;
  for (int i = 1; p && p < end; i++) {
    long status;
    size_t n;
    memcpy(&status, p, sizeof status);
    p += sizeof status;
    lua_createtable(L, 3, 0);
    lua_pushinteger(L, status);
    lua_rawseti(L, -2, 1);
    for (int f = 2; f <= 3; f++) {
      memcpy(&n, p, sizeof n);
      p += sizeof n;
      lua_pushlstring(L, n ? p : "", n);
      lua_rawseti(L, -2, f);
      p += n;
    }
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static lua_Number av_secs(uint64_t ns) { return (lua_Number)ns / 1e9; }

/* req:timings() -> { queued, dns, connect, tls, sent, first_byte, total,
 * redirect } (seconds), elapsed (from the call to the end of the
 * transfer), reused; nothing until the transfer has ended.
 * Phases count from the slot, as libcurl's count from a transfer's start:
 * redirect is the hops before the final one, and each phase of the final
 * hop is added to it, so each is at least the one before. */
static int av_request_timings(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  if (!req->ended) return 0; /* nothing known yet: all nil */
  lua_createtable(L, 0, 8);
  bool ran = req->started != 0;
  lua_pushnumber(L, av_secs((ran ? req->started : req->ended) - req->created));
  lua_setfield(L, -2, "queued");
  lua_Number redirect = (lua_Number)req->t_redirect / 1e6;
  static const char *const names[] = {"dns", "connect", "tls", "sent", "first_byte"};
  const uint32_t t[] = {req->t_dns, req->t_connect, req->t_tls, req->t_sent, req->t_first_byte};
  int reached = av_request_reached(req);
  for (int i = 0; i < reached; i++) {
    lua_pushnumber(L, redirect + (lua_Number)t[i] / 1e6);
    lua_setfield(L, -2, names[i]);
  }
  lua_pushnumber(L, ran ? av_secs(req->ended - req->started) : 0);
  lua_setfield(L, -2, "total");
  lua_pushnumber(L, redirect);
  lua_setfield(L, -2, "redirect");
  lua_pushnumber(L, av_secs(req->ended - req->created));
  lua_pushboolean(L, req->reused);
  return 3;
}

/* req:method() -> the HTTP method */
static int av_request_method(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  lua_pushstring(L, req->method);
  return 1;
}

/* Let a paused transfer go on: called outside libcurl's callbacks, with
 * the reader caught up. libcurl may hand over what it held at once. */
static void av_request_unpause(av_request *req) {
  if (!req->paused || !req->easy || req->resp_body.len - req->body_off >= req->stream_limit) return;
  req->paused = false;
  req->paused_ns += uv_hrtime() - req->paused_at;
  av_xfer_paused(req->owner->transport, req->easy, false);
  req->last_read = av_loop_now_ms(req->op.loop); /* sock_read counts from now, not from the pause */
  curl_easy_pause(req->easy->h, CURLPAUSE_CONT);
}

/* A stream whose body cannot be read on: its transfer ends (its slot
 * frees) and every read from now on raises the error. */
static void av_stream_broken(av_request *req, const char *fmt, const char *what) {
  if (req->phase == AV_REQ_RUNNING && req->easy) {
    av_deadline_clear(&req->op);
    av_request_detach(req);
    req->owner->ended(req);
  }
  req->phase = AV_REQ_DONE;
  free(req->err_message);
  if (asprintf(&req->err_message, fmt, what) < 0) req->err_message = NULL;
  req->err_kind = "protocol";
  req->err_phase = NULL;
  av_buf_free(&req->resp_body);
  req->body_off = 0;
}

/* A stream's next decoded bytes, at most want (0: a buffer's worth), from
 * its compressed bytes: *out and *made (0: none now), valid until the next
 * call; false when the body is broken (the stream then says why). The
 * decoder is made at the first read, for a gzip or deflate body. */
static bool av_stream_inflate(av_request *req, size_t want, const char **out, size_t *made) {
  *made = 0;
  int coding = req->check.coding;
  av_buf *b = &req->resp_body;
  if (coding == AV_CODING_OTHER) {
    /* (a HEAD's or a 204's answer that names one has no body to decode) */
    if (b->len == req->body_off) return true;
    av_stream_broken(req, "%s", "the streamed response has a Content-Encoding avideo does not decode "
                                "(it asks for gzip, deflate)");
    return false;
  }
  if (!req->inflate && !(req->inflate = av_inflate_new(coding, AV_STREAM_BUFFER))) {
    av_stream_broken(req, "%s", "out of memory");
    return false;
  }
  for (int round = 0; round < 2; round++) {
    const char *in = b->data ? b->data + req->body_off : NULL, *why;
    size_t in_len = b->len - req->body_off;
    int rc = av_inflate_run(req->inflate, &in, &in_len, want, out, made, &why);
    req->body_off = b->len - in_len;
    if (req->body_off == b->len) req->body_off = b->len = 0;
    if (rc == AV_INFLATE_ERROR) {
      av_stream_broken(req, "the response's compressed body is broken: %s", why);
      return false;
    }
    if (rc == AV_INFLATE_END && in_len == 0) av_request_unpause(req); /* (what follows the end was checked) */
    /* all taken and nothing made yet: the room it freed may bring more at once */
    if (*made > 0 || rc == AV_INFLATE_END || round > 0 || req->phase == AV_REQ_DONE) break;
    av_request_unpause(req);
    if (b->len == req->body_off) break;
  }
  /* (no body at all, as a HEAD's or a 204's with the header: empty) */
  if (req->phase == AV_REQ_DONE && *made == 0 && b->len == req->body_off && !req->err_kind &&
      av_inflate_fed(req->inflate) && !av_inflate_ended(req->inflate)) {
    av_stream_broken(req, "%s", "the response's compressed body was cut short");
    return false;
  }
  return true;
}

static int av_stream_wait(lua_State *L, av_request *req);

/* req:read(n, token) -> bytes | nil (the end) | nil, kind, message, phase
 *                     | false (nothing yet: the op is pending for token)
 * A streamed response's next bytes, at most n (n <= 0: all there are).
 * Each byte taken makes room: a transfer we paused goes on. */
static int av_request_read(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  lua_Integer n = luaL_optinteger(L, 2, 0);
  if (!req->stream || !req->stream_ready || req->op.state != AV_OP_IDLE)
    return luaL_error(L, "not a streamed response ready to read");
  if (req->closed) return av_refuse(L, "the response is closed");
  av_buf *b = &req->resp_body;
  size_t have = b->len - req->body_off;
  if (have == 0 && req->phase != AV_REQ_DONE) {
    /* caught up: a paused transfer may hand over what it held at once */
    av_request_unpause(req);
    have = b->len - req->body_off;
  }
  if (req->check.coding != AV_CODING_NONE) {
    /* compressed bytes wait in the buffer, an error after them too */
    const char *out;
    size_t made;
    if (av_stream_inflate(req, n > 0 ? (size_t)n : 0, &out, &made) && made > 0) {
      lua_pushlstring(L, out, made);
      av_request_unpause(req);
      return 1;
    }
    return av_stream_wait(L, req);
  }
  if (have > 0) {
    size_t take = n > 0 && (size_t)n < have ? (size_t)n : have;
    lua_pushlstring(L, b->data + req->body_off, take);
    req->body_off += take;
    if (req->body_off == b->len) req->body_off = b->len = 0;
    av_request_unpause(req);
    return 1;
  }
  return av_stream_wait(L, req);
}

/* A stream with nothing to read now: nil at its end, nil, kind, message,
 * phase for its error, or false while the op (at 1, token at 3) waits for
 * more. */
static int av_stream_wait(lua_State *L, av_request *req) {
  av_buf *b = &req->resp_body;
  if (req->phase == AV_REQ_DONE) {
    av_buf_free(b);
    if (!req->err_kind) {
      lua_pushnil(L);
      return 1;
    }
    lua_pushnil(L);
    lua_pushstring(L, req->err_kind);
    lua_pushstring(L, req->err_message ? req->err_message : req->err_kind);
    if (req->err_phase) lua_pushstring(L, req->err_phase); else lua_pushnil(L);
    return 4;
  }
  /* Nothing yet: the op waits again, for the next bytes or the end, with
   * the reader's task as its token; sock_read is how long it may wait. */
  luaL_checkany(L, 3);
  lua_getiuservalue(L, 1, AV_UV_LOOP);
  av_op_start(L, &req->op, 1, 3, -1);
  lua_pop(L, 1);
  if (req->sock_read_ms) {
    uint64_t now = av_loop_now_ms(req->op.loop), due = req->last_read + (uint64_t)req->sock_read_ms;
    av_deadline_set(&req->op, due > now ? due - now : 0);
  }
  lua_pushboolean(L, 0);
  return 1;
}

/* req:save_into(file, token) -> bytes written | false (nothing yet: wait
 * for the op, as read) | nil (the end) | nil, kind, message, phase (the
 * transfer failed) | nil, nil, message (the file could not be written).
 * response:save's way: what has come goes from the request's buffer
 * straight to the file, never a Lua string, so a big download allocates
 * nothing per piece (Lua strings of 64 KiB, freed by the GC in batches,
 * made glibc give the heap's top back and fault it in again, over and
 * over: a fifth of the CPU of a download). A buffered response writes its
 * whole body at each call (the caller stops after one). */
static int av_request_save_into(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  FILE *file = avc_checkfile(L, 2);
  if (!file) return luaL_error(L, "attempt to use a closed file");
  const char *data;
  size_t len;
  if (!req->stream) {
    if (!av_request_delivered(req) || req->err_kind) return luaL_error(L, "not a response to save");
    if (req->body_made) {
      lua_getiuservalue(L, 1, AV_UV_BODY);
      data = lua_tolstring(L, -1, &len);
    } else {
      data = req->resp_body.data ? req->resp_body.data : "";
      len = req->resp_body.len;
    }
  } else {
    if (!req->stream_ready || req->op.state != AV_OP_IDLE)
      return luaL_error(L, "not a streamed response ready to read");
    if (req->closed) return av_refuse(L, "the response is closed");
    av_buf *b = &req->resp_body;
    if (b->len == req->body_off && req->phase != AV_REQ_DONE) av_request_unpause(req);
    if (req->check.coding != AV_CODING_NONE) {
      /* decoded a buffer's worth at a time, as read(): the end and errors too */
      if (!av_stream_inflate(req, 0, &data, &len) || len == 0) return av_stream_wait(L, req);
      if (fwrite(data, 1, len, file) != len) {
        lua_pushnil(L);
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 3;
      }
      av_request_unpause(req);
      lua_pushinteger(L, (lua_Integer)len);
      return 1;
    }
    len = b->len - req->body_off;
    if (len == 0) {
      /* as req:read(nil, token): the end, the error, or the wait */
      lua_pushnil(L);
      lua_replace(L, 2);
      return av_request_read(L);
    }
    data = b->data + req->body_off;
    req->body_off = b->len = 0;
  }
  if (len > 0 && fwrite(data, 1, len, file) != len) {
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 3;
  }
  if (req->stream) av_request_unpause(req);
  lua_pushinteger(L, (lua_Integer)len);
  return 1;
}

/* req:close(): end a streamed response early. The transfer stops, its slot
 * frees, and a task waiting in read() wakes to find the response closed. */
static int av_request_close(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  /* a stream handed over, or a request whose task stops handing over its
   * body (its function raised) */
  if (!(req->stream && req->stream_ready) && !req->pull) return 0;
  if (req->closed || req->op.state == AV_OP_READY) return 0;
  req->closed = true;
  if (req->phase == AV_REQ_RUNNING && req->easy) {
    av_deadline_clear(&req->op);
    av_request_detach(req);
    req->phase = AV_REQ_DONE;
    req->owner->ended(req);
    if (req->op.state == AV_OP_PENDING) av_op_finish(&req->op);
  }
  if (req->stream) {
    av_buf_free(&req->resp_body);
    req->body_off = 0;
    av_inflate_free(req->inflate);
    req->inflate = NULL;
  }
  return 0;
}

/* req:wants_body() -> whether the transfer waits for the next piece of a
 * body the task hands over (data = function) */
static int av_request_wants_body(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  lua_pushboolean(L, req->pull && req->want_body && req->phase == AV_REQ_RUNNING && !req->closed);
  return 1;
}

/* req:write(piece | nil, token) -> true (the op is pending for token) | false
 * The next piece of the body (nil: the end); the transfer goes on, and the
 * op is ready again when it wants more or the response is in. False when
 * the transfer is over already (the server answered early). */
static int av_request_write(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  size_t len = 0;
  const char *piece = lua_isnil(L, 2) ? NULL : luaL_checklstring(L, 2, &len);
  luaL_checkany(L, 3);
  bool dropped = !req->pull && req->pull_eof && req->op.state == AV_OP_IDLE;
  if (!dropped && (!req->pull || req->op.state != AV_OP_IDLE || req->pull_eof))
    return luaL_error(L, "this request takes no body piece now");
  if (req->phase != AV_REQ_RUNNING || !req->easy || req->closed) {
    lua_pushboolean(L, 0);
    return 1;
  }
  /* dropped: redirected to a GET while the task made this piece, which
   * goes nowhere; the task only waits for the response */
  if (!dropped) {
    if (piece && !av_buf_append(&req->pull_buf, piece, len)) return luaL_error(L, "out of memory");
    if (!piece) req->pull_eof = true;
    req->want_body = false;
  }
  lua_getiuservalue(L, 1, AV_UV_LOOP);
  av_op_start(L, &req->op, 1, 3, -1);
  lua_pop(L, 1);
  if (!dropped) curl_easy_pause(req->easy->h, CURLPAUSE_CONT); /* may send it at once */
  lua_pushboolean(L, 1);
  return 1;
}

static int av_request_op_cancel(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  bool cancelled = av_op_cancel(L, 1);
  /* Handed over, or ready, but its task not resumed yet: a stream's
   * header block or a body function's call for a piece came in the turn
   * its task was cancelled. The task never gets the op, so nobody would
   * close it: the transfer and its slot would wait for the collector. */
  bool handed = (req->stream && req->stream_ready) || req->pull;
  if (req->op.state == AV_OP_IDLE && req->phase == AV_REQ_RUNNING && handed) {
    av_request_close(L);
    cancelled = true;
  }
  lua_pushboolean(L, cancelled);
  return 1;
}

static int av_request_gc(lua_State *L) {
  av_request *req = luaL_checkudata(L, 1, AV_REQUEST_MT);
  /* A pending request is anchored by its loop, so it is collected only
   * after the loop closed (which cancelled it) or together with the loop. */
  if (req->op.loop && req->op.state == AV_OP_PENDING && !req->op.loop->closed) {
    av_deadline_clear(&req->op);
    req->op.vt->cancel(&req->op);
  } else if (req->op.loop && req->phase == AV_REQ_RUNNING && req->easy && !req->op.loop->closed) {
    /* a streamed response dropped unread: its transfer ends, its slot
     * frees (closed: an adaptive limit takes no sample from it) */
    req->closed = true;
    av_deadline_clear(&req->op);
    av_request_detach(req);
    req->phase = AV_REQ_DONE;
    req->owner->ended(req);
  }
  av_request_close_upload(req);
  av_buf_free(&req->pull_buf);
  free(req->upload_path);
  req->upload_path = NULL;
  av_multipart_free(req);
  av_headers_free(req->headers);
  free(req->effective_url);
  free(req->err_message);
  av_buf_free(&req->resp_body);
  av_inflate_free(req->inflate);
  req->inflate = NULL;
  av_buf_free(&req->resp_headers);
  if (req->history) av_buf_free(req->history);
  free(req->history);
  req->history = NULL;
  if (req->client) av_client_free(req->client);
  free(req->client);
  req->client = NULL;
  req->headers = NULL;
  req->effective_url = req->err_message = NULL;
  return 0;
}

void av_request_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"result", av_request_result}, {"body", av_request_body}, {"json", av_request_json},
      {"read", av_request_read}, {"save_into", av_request_save_into}, {"close", av_request_close},
      {"wants_body", av_request_wants_body}, {"write", av_request_write},
      {"headers", av_request_headers}, {"method", av_request_method}, {"history", av_request_history},
      {"timings", av_request_timings}, {"cancel", av_request_op_cancel},
      {NULL, NULL}};
  luaL_newmetatable(L, AV_REQUEST_MT);
  luaL_newlib(L, methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, av_request_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
}
