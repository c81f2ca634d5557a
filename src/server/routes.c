/* The API: match a request to an endpoint, check its input at once (422,
 * 413, 404, 405 never wait), then answer through the endpoint's gate. */
#include <ctype.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* Bodies past the limit are read and dropped up to this much, so that the
 * client gets its 413; past this the connection is cut. */
#define AV_BODY_DISCARD_LIMIT (16 * AV_BODY_LIMIT)
#define AV_LIST_DEFAULT 100

/* ============================== ANSWERS ============================== */

/* Answer a call whose delay is over (or had none). */
static enum MHD_Result av_routes_answer(struct av_server *server,
                                        struct MHD_Connection *conn,
                                        const struct av_call *call)
{
  struct av_replies *replies = &server->replies;
  struct av_store *store = &server->store;

  if (call->route == AV_ROUTE_LIST)
    return av_reply_json(conn, MHD_HTTP_OK, av_store_ids(store, call->n));
  if (call->video < 0)
    return av_reply_queue(conn, MHD_HTTP_NOT_FOUND, replies->video_not_found);

  size_t video = (size_t)call->video;
  if (call->route == AV_ROUTE_VIDEO)
    return av_reply_queue(conn, MHD_HTTP_OK,
                          av_reply_video(replies, store, video));
  if (call->route == AV_ROUTE_PATCH) {
    if (!av_store_patch(store, video, call->patch))
      return MHD_NO;
    av_reply_forget(replies, video);
    return av_reply_queue(conn, MHD_HTTP_OK, replies->success);
  }
  struct av_buf text = { 0 };
  json_t *transcript = av_store_transcript(store, video, &text)
                         ? json_stringn(text.data, text.len)
                         : NULL;
  av_buf_free(&text);
  return transcript ? av_reply_json(conn, MHD_HTTP_OK, transcript) : MHD_NO;
}

/* The handler's per-request pointer after the first call of a request
 * that needs no state (yet): only its address matters. */
static const char av_routes_headers_seen;
#define AV_ROUTES_SEEN ((void *)&av_routes_headers_seen)

static struct av_request *av_routes_request(void **con_cls)
{
  return *con_cls == AV_ROUTES_SEEN ? NULL : *con_cls;
}

/* Answer now if the gate lets the call through without a delay, else park
 * the request (made now unless a body already made one). */
static enum MHD_Result av_routes_start(struct av_server *server,
                                       struct MHD_Connection *conn,
                                       struct av_gate *gate,
                                       const struct av_call *call,
                                       void **con_cls)
{
  struct av_request *req = av_routes_request(con_cls);
  if (av_gate_pass(gate)) {
    if (req)
      req->state = AV_REQUEST_DONE;
    return av_routes_answer(server, conn, call);
  }
  if (req == NULL) {
    req = av_request_new(server, conn);
    if (req == NULL)
      return MHD_NO;
    *con_cls = req;
  }
  if (&req->call != call)
    req->call = *call;
  av_buf_free(&req->body); /* a GET's body is never needed */
  av_request_defer(req, gate);
  return MHD_YES;
}

/* =============================== INPUT =============================== */

/* ?n=: an integer, with Python's slice meaning for ids[:n]. On failure
 * returns the 422 body. */
static json_t *av_routes_count(struct MHD_Connection *conn, size_t count,
                               size_t *n)
{
  const char *value = NULL;
  size_t len = 0;
  *n = count < AV_LIST_DEFAULT ? count : AV_LIST_DEFAULT;
  if (MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, "n", 1,
                                    &value, &len) != MHD_YES)
    return NULL;
  if (value == NULL) /* "?n" with no '=' */
    value = "";

  size_t i = 0, end = len, digits = 0, number = 0;
  bool negative = false;
  while (i < end && isspace((unsigned char)value[i]))
    i++;
  while (end > i && isspace((unsigned char)value[end - 1]))
    end--;
  if (i < end && (value[i] == '+' || value[i] == '-'))
    negative = value[i++] == '-';
  for (; i < end && isdigit((unsigned char)value[i]); i++, digits++) {
    unsigned digit = (unsigned)(value[i] - '0');
    number = number > (SIZE_MAX - digit) / 10 ? SIZE_MAX : number * 10 + digit;
  }
  if (digits == 0 || i != end)
    return av_reply_invalid(
      "int_parsing", "query", json_string("n"),
      "Input should be a valid integer, unable to parse string as an integer",
      json_stringn(value, len), NULL);

  if (!negative)
    *n = number < count ? number : count;
  else /* ids[:-k] is all but the last k (and ids[:-0] is empty) */
    *n = number == 0 || number >= count ? 0 : count - number;
  return NULL;
}

/* Keep a chunk of a body, or count and drop it once past the limit. */
static enum MHD_Result av_routes_body(struct av_server *server,
                                      struct MHD_Connection *conn,
                                      const char *data, size_t size,
                                      void **con_cls)
{
  struct av_request *req = av_routes_request(con_cls);
  if (req == NULL) {
    req = av_request_new(server, conn);
    if (req == NULL)
      return MHD_NO;
    req->state = AV_REQUEST_BODY;
    *con_cls = req;
  }
  req->body_seen += size;
  if (req->body_seen > AV_BODY_LIMIT) {
    av_buf_free(&req->body);
    return req->body_seen > AV_BODY_DISCARD_LIMIT ? MHD_NO : MHD_YES;
  }
  return av_buf_add(&req->body, data, size) ? MHD_YES : MHD_NO;
}

/* PATCH /videos/{id}: the body must be a JSON object. */
static enum MHD_Result av_routes_patch(struct av_server *server,
                                       struct MHD_Connection *conn,
                                       const struct av_call *call,
                                       void **con_cls)
{
  struct av_request *req = av_routes_request(con_cls);
  json_error_t error;

  if (req == NULL || req->body.len == 0)
    return av_reply_json(conn, MHD_HTTP_UNPROCESSABLE_CONTENT,
                         av_reply_invalid("missing", "body", NULL,
                                          "Field required", NULL, NULL));
  json_t *body = json_loadb(req->body.data, req->body.len,
                            JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
  av_buf_free(&req->body);
  if (body == NULL)
    return av_reply_json(
      conn, MHD_HTTP_UNPROCESSABLE_CONTENT,
      av_reply_invalid("json_invalid", "body",
                       json_integer((json_int_t)error.position),
                       "JSON decode error", json_object(),
                       json_pack("{s:s}", "error", error.text)));
  if (!json_is_object(body))
    return av_reply_json(conn, MHD_HTTP_UNPROCESSABLE_CONTENT,
                         av_reply_invalid("dict_type", "body", NULL,
                                          "Input should be a valid dictionary",
                                          body, NULL));
  req->call = *call;
  req->call.patch = body;
  return av_routes_start(server, conn, &server->gates.patch, &req->call,
                         con_cls);
}

/* A handler call for a request resumed after its delay. */
static enum MHD_Result av_routes_resume(struct av_server *server,
                                        struct av_request *req)
{
  switch (req->state) {
  case AV_REQUEST_READY:
    req->state = AV_REQUEST_DONE;
    return av_routes_answer(server, req->conn, &req->call);
  case AV_REQUEST_GONE:
    return MHD_NO; /* MHD closes the connection */
  default:
    return MHD_YES;
  }
}

/* ============================== ROUTING ============================== */

/* GET /stats; with ?reset=1 the most in flight then counts from now on. */
static enum MHD_Result av_routes_stats(struct av_server *server,
                                       struct MHD_Connection *conn)
{
  json_t *stats = av_stats_json(&server->stats);
  const char *reset =
    MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "reset");
  if (reset && strcmp(reset, "1") == 0)
    av_stats_reset_max(&server->stats);
  return av_reply_json(conn, MHD_HTTP_OK, stats);
}

/* One ?name=N of POST /capacity into *out (unchanged when absent); a 400
 * body when it is not a whole number from 1 to AV_CAPACITY_MAX. */
/* The query argument `name` of a POST /capacity, if given, into *out.
 * False when it is given but bad, with a one-line reason in why. */
static bool av_routes_capacity_arg(struct MHD_Connection *conn,
                                   const char *name, unsigned *out,
                                   bool *given, char *why, size_t why_size)
{
  const char *value = NULL;
  size_t len = 0;
  if (MHD_lookup_connection_value_n(conn, MHD_GET_ARGUMENT_KIND, name,
                                    strlen(name), &value, &len) != MHD_YES)
    return true;
  size_t i = 0;
  unsigned long long n = 0;
  /* leading zeros are fine; past the maximum the value only grows */
  for (; value && i < len && isdigit((unsigned char)value[i]); i++)
    if (n <= AV_CAPACITY_MAX)
      n = n * 10 + (unsigned)(value[i] - '0');
  if (i > 0 && i == len && n >= 1 && n <= AV_CAPACITY_MAX) {
    *out = (unsigned)n;
    *given = true;
    return true;
  }
  /* the value shown as printable ASCII: JSON strings must be UTF-8 */
  char shown[41];
  size_t k = 0;
  for (; value && k < len && k < sizeof shown - 1; k++)
    shown[k] = value[k] >= 0x20 && value[k] < 0x7f ? value[k] : '?';
  shown[k] = '\0';
  snprintf(why, why_size, "%s must be a whole number from 1 to %d, got '%s%s'",
           name, AV_CAPACITY_MAX, shown, value && len > k ? "..." : "");
  return false;
}

/* GET /capacity: the slots of videos and transcripts. POST
 * /capacity?video=N&transcript=M changes either or both first (all or
 * nothing), so a test changes the capacity mid-run. */
static enum MHD_Result av_routes_capacity(struct av_server *server,
                                          struct MHD_Connection *conn,
                                          bool post)
{
  struct av_gate *video = &server->gates.video;
  struct av_gate *transcript = &server->gates.transcript;
  unsigned v = video->capacity, t = transcript->capacity;
  bool given = false;
  if (post) {
    char why[200];
    bool ok = av_routes_capacity_arg(conn, "video", &v, &given, why, sizeof why) &&
              av_routes_capacity_arg(conn, "transcript", &t, &given, why, sizeof why);
    if (ok && !given) {
      snprintf(why, sizeof why, "give video=N and/or transcript=N, each 1 to %d", AV_CAPACITY_MAX);
      ok = false;
    }
    if (!ok)
      return av_reply_json(conn, MHD_HTTP_BAD_REQUEST, json_pack("{s:s}", "detail", why));
    av_request_set_capacity(video, v);
    av_request_set_capacity(transcript, t);
  }
  return av_reply_json(conn, MHD_HTTP_OK,
                       json_pack("{s:I,s:I}", "video", (json_int_t)v,
                                 "transcript", (json_int_t)t));
}

/* --rate-limit: 0 when the client may go on, else its Retry-After. */
static unsigned av_routes_rate(struct av_server *server,
                               struct MHD_Connection *conn)
{
  if (server->rate.n == 0)
    return 0;
  const union MHD_ConnectionInfo *info =
    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (info == NULL || info->client_addr == NULL)
    return 0;
  const struct sockaddr *addr = info->client_addr;
  /* The address without the port: one client, however many connections. */
  if (addr->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const void *)addr;
    return av_rate_take(&server->rate, &in->sin_addr, sizeof in->sin_addr,
                        uv_hrtime());
  }
  if (addr->sa_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const void *)addr;
    return av_rate_take(&server->rate, &in6->sin6_addr,
                        sizeof in6->sin6_addr, uv_hrtime());
  }
  return av_rate_take(&server->rate, "", 0, uv_hrtime());
}

/* Match the path: /videos[/], /videos/{id}, /videos/{id}/transcript.
 * For the last two, *video is the id's store position or -1. */
static enum av_route av_routes_match(const struct av_store *store,
                                     const char *url, long *video)
{
  char id[256];
  *video = -1;
  if (strncmp(url, "/videos", 7) != 0)
    return AV_ROUTE_NONE;
  url += 7;
  if (url[0] == '\0' || strcmp(url, "/") == 0)
    return AV_ROUTE_LIST;
  if (url[0] != '/')
    return AV_ROUTE_NONE;
  url++;
  const char *slash = strchr(url, '/');
  size_t len = slash ? (size_t)(slash - url) : strlen(url);
  if (len == 0 || (slash && strcmp(slash, "/transcript") != 0))
    return AV_ROUTE_NONE;
  if (len < sizeof id) { /* longer ids exist nowhere */
    memcpy(id, url, len);
    id[len] = '\0';
    *video = av_store_find(store, id);
  }
  return slash ? AV_ROUTE_TRANSCRIPT : AV_ROUTE_VIDEO;
}

/* The request is all in: route it. Input errors are answered at once. */
static enum MHD_Result av_routes_dispatch(struct av_server *server,
                                          struct MHD_Connection *conn,
                                          const char *url, const char *method,
                                          void **con_cls)
{
  struct av_replies *replies = &server->replies;
  struct av_gates *gates = &server->gates;
  struct av_request *req = av_routes_request(con_cls);
  struct av_call call = { .route = AV_ROUTE_NONE, .video = -1 };

  if (req) {
    req->state = AV_REQUEST_DONE; /* unless deferred below */
    if (req->body_seen > AV_BODY_LIMIT)
      return av_reply_queue(conn, MHD_HTTP_CONTENT_TOO_LARGE,
                            replies->too_large);
  }
  bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0;
  if (strcmp(url, "/stats") == 0)
    return get ? av_routes_stats(server, conn)
               : av_reply_queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                                replies->get_only);
  if (strcmp(url, "/capacity") == 0) {
    if (get || strcmp(method, MHD_HTTP_METHOD_POST) == 0)
      return av_routes_capacity(server, conn, !get);
    return av_reply_queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED, replies->get_post);
  }
  /* /stats and /capacity are the tests' window on the server and their
   * control: never rate limited. */
  unsigned retry_after = av_routes_rate(server, conn);
  if (retry_after)
    return av_reply_too_many(conn, retry_after);
  call.route = av_routes_match(&server->store, url, &call.video);
  switch (call.route) {
  case AV_ROUTE_LIST: {
    if (!get)
      return av_reply_queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED, replies->get_only);
    json_t *invalid = av_routes_count(conn, server->store.count, &call.n);
    if (invalid)
      return av_reply_json(conn, MHD_HTTP_UNPROCESSABLE_CONTENT, invalid);
    return av_routes_start(server, conn, &gates->list, &call, con_cls);
  }
  case AV_ROUTE_VIDEO:
    if (get)
      return av_routes_start(server, conn, &gates->video, &call, con_cls);
    if (strcmp(method, MHD_HTTP_METHOD_PATCH) == 0) {
      call.route = AV_ROUTE_PATCH;
      return av_routes_patch(server, conn, &call, con_cls);
    }
    return av_reply_queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED, replies->get_patch);
  case AV_ROUTE_TRANSCRIPT:
    if (!get)
      return av_reply_queue(conn, MHD_HTTP_METHOD_NOT_ALLOWED, replies->get_only);
    return av_routes_start(server, conn, &gates->transcript, &call, con_cls);
  default:
    return av_reply_queue(conn, MHD_HTTP_NOT_FOUND, replies->not_found);
  }
}

enum MHD_Result av_routes_access(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *upload_data,
                                 size_t *upload_size, void **con_cls)
{
  struct av_server *server = cls;

  if (*con_cls == NULL) {
    /* First call, headers in: the request counts as in flight until
     * av_routes_completed, which sees a non-NULL *con_cls. An announced
     * body past the limit is refused before it is read (MHD then closes
     * the connection, as it should). Nothing else is answered yet: MHD
     * keeps a connection alive only when the answer comes after the whole
     * request. */
    *con_cls = AV_ROUTES_SEEN;
    av_stats_request_begin(&server->stats);
    const char *length = MHD_lookup_connection_value(
      conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (length && strtoull(length, NULL, 10) > AV_BODY_LIMIT)
      return av_reply_queue(conn, MHD_HTTP_CONTENT_TOO_LARGE,
                            server->replies.too_large);
    return MHD_YES;
  }
  struct av_request *req = av_routes_request(con_cls);
  if (req && req->state != AV_REQUEST_BODY)
    return av_routes_resume(server, req);
  if (*upload_size > 0) {
    size_t size = *upload_size;
    *upload_size = 0;
    return av_routes_body(server, conn, upload_data, size, con_cls);
  }
  return av_routes_dispatch(server, conn, url, method, con_cls);
}

void av_routes_completed(void *cls, struct MHD_Connection *conn,
                         void **con_cls, enum MHD_RequestTerminationCode code)
{
  struct av_server *server = cls;
  if (*con_cls == NULL)
    return; /* the handler never saw it */
  struct av_request *req = av_routes_request(con_cls);
  *con_cls = NULL;
  av_stats_request_end(&server->stats);
  if (req)
    av_request_complete(req);
}
