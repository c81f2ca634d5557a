/* What libcurl hands us of a response, through the data callbacks of a
 * request's easy handle: body bytes, header lines (checked for framing as
 * they arrive), the moment the request is sent, and upload progress. The
 * callbacks only record; a callback that must stop the transfer returns 0
 * and says why in req->fault, and request.c makes the error. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "private.h"

static void av_request_touch(av_request *req) {
  if (req->sock_read_ms) req->last_read = uv_now(&req->op.loop->uv);
}

/* Keep len bytes in b unless that passes limit (0: none); false, with
 * req->fault saying why (too_large, or no memory), if not. */
static bool av_receive_keep(av_request *req, av_buf *b, const char *p, size_t len, size_t limit, int too_large) {
  if (limit && b->len + len > limit) {
    req->fault = too_large;
    return false;
  }
  if (!av_buf_append(b, p, len)) {
    req->fault = AV_FAULT_NO_MEMORY;
    return false;
  }
  return true;
}

/* A streamed response's bytes: kept until the reader takes them, up to
 * about stream_limit; past that the transfer pauses (libcurl keeps what it
 * offered and offers it again when op:read unpauses it). */
static size_t av_receive_stream(av_request *req, const char *p, size_t len) {
  av_buf *b = &req->resp_body;
  /* before the response is handed over, bytes are a redirect's body that
   * nobody reads: kept, they would fill the buffer and pause for ever */
  if (!req->stream_ready) return len;
  if (b->len - req->body_off >= req->stream_limit) {
    req->paused = true;
    req->paused_at = uv_hrtime();
    av_xfer_paused(req->owner->transport, req->easy, true);
    return CURL_WRITEFUNC_PAUSE;
  }
  if (req->body_off > 0 && req->body_off >= b->cap / 2) {
    /* what was read goes, so the buffer stays about stream_limit long */
    memmove(b->data, b->data + req->body_off, b->len - req->body_off);
    b->len -= req->body_off;
    req->body_off = 0;
  }
  if (!av_receive_keep(req, b, p, len, 0, AV_FAULT_NONE)) return 0;
  av_receive_wake(req);
  return len;
}

static size_t av_receive_body(char *p, size_t size, size_t n, void *ud) {
  av_request *req = ud;
  size_t len = size * n;
  av_request_touch(req);
  if (req->stream) return av_receive_stream(req, p, len);
  return av_receive_keep(req, &req->resp_body, p, len, req->max_body, AV_FAULT_BODY_TOO_LARGE) ? len : 0;
}

/* The HTTP status of a status line "HTTP/x yyy ...", or 0. Spaces after
 * the version are skipped, as libcurl skips them: a status it accepts and
 * we did not read would never hand a stream over. */
static int av_status_of(const char *p, size_t len) {
  const char *sp = memchr(p, ' ', len), *end = p + len;
  if (!sp) return 0;
  while (sp < end && *sp == ' ') sp++;
  if (end - sp < 3) return 0;
  int code = 0;
  for (int i = 0; i < 3; i++) {
    if (sp[i] < '0' || sp[i] > '9') return 0;
    code = code * 10 + (sp[i] - '0');
  }
  return code;
}

/* Whether a WWW-Authenticate value (after the colon) offers Digest: a
 * challenge's scheme starts the value or follows a comma. */
static bool av_offers_digest(const char *p, const char *end) {
  bool at_start = true;
  for (; p < end; p++) {
    if (*p == ',') {
      at_start = true;
    } else if (*p != ' ' && *p != '\t') {
      if (at_start && end - p >= 6 && strncasecmp(p, "digest", 6) == 0 &&
          (end - p == 6 || p[6] == ' ' || p[6] == '\t' || p[6] == '\r' || p[6] == '\n'))
        return true;
      at_start = false;
    }
  }
  return false;
}

/* A Content-Length value (after the colon): a list of decimal numbers, all
 * of them equal to each other and to any earlier Content-Length of the
 * response (RFC 9112 6.3). False, with the check's values set, if not. */
static bool av_check_length(av_response_check *c, const char *p, const char *end) {
  for (;;) {
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p == end || *p < '0' || *p > '9') break;
    curl_off_t v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
      if (v > (INT64_MAX - 9) / 10) break;
      v = v * 10 + (*p - '0');
    }
    if (p < end && *p >= '0' && *p <= '9') break; /* too long */
    if (c->has_length && v != c->length) {
      c->other_length = v;
      return false;
    }
    c->has_length = true;
    c->length = v;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    if (p == end || *p == '\r' || *p == '\n') return true;
    if (*p++ != ',') break;
  }
  c->other_length = -1; /* malformed */
  return false;
}

/* Whether req follows a redirect of this status: when it does not
 * (allow_redirects = false, or a body it cannot send again, see
 * av_request_follow), the 3xx is the response. Past max_redirects it is
 * followed, into the "too many" error. */
static bool av_receive_follows(const av_request *req, long status) {
  if (!av_request_client(req)->follow) return false;
  return !(req->pull && !av_redirect_to_get(status, req->method));
}

/* A streamed request's header block ended: if it is the final response
 * (not an interim 1xx, not a redirect that will be followed), its task
 * gets the response now and reads the body as it comes. */
static void av_receive_stream_ready(av_request *req) {
  int status = req->check.status;
  if (status < 200) return;
  /* libcurl resolves the target only when the hop ends (CURLINFO_REDIRECT_URL
   * is not there yet): a Location header is what says it will be followed */
  if (av_redirect_status(status) && req->check.location && av_receive_follows(req, status))
    return; /* request.c follows it, or refuses it */
  /* a Digest challenge libcurl answers itself: its next response is the
   * one (a 401 without one is the response: libcurl will not answer it) */
  if (status == 401 && req->digest && !req->auth_retry && req->check.digest) return;
  req->status = status;
  req->stream_ready = true;
  av_receive_wake(req);
}

static size_t av_receive_header(char *p, size_t size, size_t n, void *ud) {
  av_request *req = ud;
  size_t len = size * n;
  av_response_check *c = &req->check;
  av_request_touch(req);
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0 && (!c->complete || c->status < 200)) {
    /* A new status line starts a new response (after a 1xx): keep only
     * the last one's headers and body. Once a final response's header
     * block is in, a line like it is a trailer (libcurl passes those
     * here too), never a new response. */
    req->resp_headers.len = 0;
    req->resp_body.len = 0;
    req->body_off = 0;
    memset(c, 0, sizeof *c);
    c->status = av_status_of(p, len);
  } else if (len > 0 && (p[0] == '\r' || p[0] == '\n')) {
    if (c->has_length && c->encoded && c->status >= 200) {
      /* RFC 9112 6.3: "ought to be handled as an error" (a sign of
       * smuggling or response splitting), as two lengths are */
      c->other_length = -2;
      req->fault = AV_FAULT_FRAMING;
      return 0;
    }
    c->complete = true;
    if (req->stream && !req->stream_ready) av_receive_stream_ready(req);
  } else if (!c->complete && len > 15 && strncasecmp(p, "content-length:", 15) == 0 &&
             !av_check_length(c, p + 15, p + len)) {
    req->fault = AV_FAULT_FRAMING;
    return 0;
  } else if (!c->complete && len > 18 && strncasecmp(p, "transfer-encoding:", 18) == 0) {
    c->encoded = true;
  } else if (req->stream && !c->complete && len > 17 && strncasecmp(p, "content-encoding:", 17) == 0) {
    /* a stream's body is decoded as it is read (inflate.c); a second
     * Content-Encoding line means several codings: none avideo decodes */
    c->coding = c->coding == AV_CODING_NONE ? av_coding_of(p + 17, len - 17) : AV_CODING_OTHER;
  } else if (req->stream && !c->complete && len > 9 && strncasecmp(p, "location:", 9) == 0 &&
             strspn(p + 9, " \t\r\n") < len - 9) {
    c->location = true;
  } else if (req->stream && req->digest && !c->complete && len > 17 && strncasecmp(p, "www-authenticate:", 17) == 0 &&
             av_offers_digest(p + 17, p + len)) {
    c->digest = true;
  }
  return av_receive_keep(req, &req->resp_headers, p, len, AV_MAX_HEADER_BLOCK, AV_FAULT_HEADERS_TOO_LARGE) ? len : 0;
}

static void av_request_read_clock(av_request *req) {
  av_request_touch(req);
  /* a stream handed over counts sock_read only while a reader waits (its
   * op is pending again then: op:read arms the deadline) */
  if (req->op.state == AV_OP_PENDING) av_deadline_set(&req->op, (uint64_t)req->sock_read_ms);
}

/* Connected (or reusing a connection), about to send: the connect clock
 * is done with. The sock_read clock starts now, or once the body is sent
 * (as aiohttp's, since 3.8.5: a slow reader of a large upload is no
 * silent server). */
static int av_receive_prereq(void *ud, char *ip, char *local_ip, int port, int local_port) {
  av_request *req = ud;
  /* Called again within a hop when libcurl sends the request once more
   * (it answers a Digest challenge): the status line that comes next is a
   * new response, whatever came before it. */
  if (req->connected) {
    req->auth_retry = true;
    req->check.complete = false;
  }
  req->connected = true;
  av_xfer_connection(req->easy, local_port, port);
  /* a failed socket's deadline is due now: keep it */
  if (!req->sock_read_ms || req->sock_error) return CURL_PREREQFUNC_OK;
  req->sending = (req->body_len > 0 || req->parts || req->pull) && strcmp(req->method, "HEAD") != 0;
  if (!req->sending) av_request_read_clock(req);
  return CURL_PREREQFUNC_OK;
}

/* Upload progress, asked for only while a body with a sock_read timeout
 * is on its way: the last byte sent starts the sock_read clock. */
static int av_receive_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                               curl_off_t ulnow) {
  av_request *req = ud;
  /* a multipart body's length is libcurl's: ultotal, once it knows it */
  curl_off_t total = req->parts ? ultotal : (curl_off_t)req->body_len;
  if (req->sending && total > 0 && ulnow >= total) {
    req->sending = false;
    if (!req->sock_error) av_request_read_clock(req);
  }
  return 0;
}

/* A file body (avideo.file), read from disk as libcurl sends it. */
/* A body the task hands over (data = function): what op:write gave; when
 * that is sent, the transfer pauses and the task is woken for more. */
static size_t av_receive_pull(av_request *req, char *buf, size_t max) {
  av_buf *b = &req->pull_buf;
  size_t have = b->len - req->pull_off;
  if (have > 0) {
    size_t n = have < max ? have : max;
    memcpy(buf, b->data + req->pull_off, n);
    req->pull_off += n;
    if (req->pull_off == b->len) req->pull_off = b->len = 0;
    return n;
  }
  if (req->pull_eof) {
    if (req->sending) { /* all sent: the sock_read clock starts */
      req->sending = false;
      av_request_read_clock(req);
    }
    return 0;
  }
  req->want_body = true;
  if (req->op.state == AV_OP_PENDING) av_op_finish(&req->op);
  return CURL_READFUNC_PAUSE;
}

static size_t av_receive_upload(char *buf, size_t size, size_t n, void *ud) {
  av_request *req = ud;
  if (req->pull) return av_receive_pull(req, buf, size * n);
  if (!req->upload) return CURL_READFUNC_ABORT;
  /* never past the Content-Length sent: a file that grew would put its
   * extra bytes on the connection as the start of another request */
  off_t at = ftello(req->upload);
  size_t left = at >= 0 && (size_t)at < req->body_len ? req->body_len - (size_t)at : 0;
  if (left == 0) return 0;
  size_t got = fread(buf, 1, size * n < left ? size * n : left, req->upload);
  if (got == 0) {
    /* an error, or a file that shrank: the body cannot be what was announced */
    req->upload_errno = ferror(req->upload) ? errno : 0;
    req->fault = AV_FAULT_FILE;
    return CURL_READFUNC_ABORT;
  }
  return got;
}

/* libcurl sends a file body again (a reused connection that had died):
 * back to where it asks. */
static int av_receive_upload_seek(void *ud, curl_off_t offset, int origin) {
  av_request *req = ud;
  if (!req->upload) return CURL_SEEKFUNC_CANTSEEK;
  return fseeko(req->upload, (off_t)offset, origin) == 0 ? CURL_SEEKFUNC_OK : CURL_SEEKFUNC_FAIL;
}

void av_receive_setup(CURL *h) {
  curl_easy_setopt(h, CURLOPT_READFUNCTION, av_receive_upload);
  curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, av_receive_upload_seek);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, av_receive_body);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, av_receive_header);
  curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, av_receive_prereq);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, av_receive_progress);
}

void av_receive_attach(CURL *h, av_request *req) {
  curl_easy_setopt(h, CURLOPT_WRITEDATA, req);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, req);
  curl_easy_setopt(h, CURLOPT_PREREQDATA, req);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, req);
  curl_easy_setopt(h, CURLOPT_READDATA, req);
  curl_easy_setopt(h, CURLOPT_SEEKDATA, req);
}

void av_receive_wake(av_request *req) {
  if (req->op.state == AV_OP_PENDING && (!req->stream || req->stream_ready || req->phase == AV_REQ_DONE))
    av_op_finish(&req->op);
}

void av_receive_reset(av_request *req) {
  req->resp_headers.len = 0;
  req->resp_body.len = 0;
  req->body_off = 0;
  req->connected = req->sending = req->auth_retry = false;
  memset(&req->check, 0, sizeof req->check);
  req->sock_error = 0;
  req->fault = AV_FAULT_NONE;
}

double av_request_retry_after(const av_request *req) {
  const char *p = req->resp_headers.data, *end = p ? p + req->resp_headers.len : p;
  static const char name[] = "retry-after:";
  for (; p && p < end; ) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol ? eol + 1 : end;
    size_t len = (size_t)(next - p);
    if (len > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
      char value[64];
      const char *v = p + sizeof name - 1;
      while (v < next && (*v == ' ' || *v == '\t')) v++;
      size_t n = (size_t)(next - v);
      while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ' || v[n - 1] == '\t')) n--;
      if (n == 0 || n >= sizeof value) return -1;
      memcpy(value, v, n);
      value[n] = '\0';
      if (strspn(value, "0123456789") == n) {
        /* seconds; leading zeros are legal ("0005"): the value, not the digits, is capped */
        const char *d = value;
        while (*d == '0' && d[1]) d++;
        return strlen(d) > 9 ? 1e9 : strtod(d, NULL);
      }
      time_t at = curl_getdate(value, NULL);
      if (at == -1) return -1;
      time_t now = time(NULL);
      return at > now ? (double)(at - now) : 0;
    }
    p = next;
  }
  return -1;
}
