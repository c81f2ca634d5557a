/* JSON answers as libmicrohttpd responses. Responses that never change are
 * built once; a video's is built on its first GET and kept until a PATCH
 * changes it (MHD counts references, so one still being sent survives). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

struct MHD_Response *av_reply_new(const json_t *value)
{
  /* Compact and in insertion order, like the talk's service
   * (json.dumps with separators=(",", ":")). */
  char *text = json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                     JSON_ENCODE_ANY);
  if (text == NULL)
    return NULL;
  struct MHD_Response *response =
    MHD_create_response_from_buffer_with_free_callback(strlen(text), text,
                                                       free);
  if (response == NULL) {
    free(text);
    return NULL;
  }
  if (MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE,
                              "application/json") != MHD_YES) {
    MHD_destroy_response(response);
    return NULL;
  }
  return response;
}

/* A prepared response of a value built here; NULL on any failure. */
static struct MHD_Response *av_reply_prepare(json_t *value, const char *allow)
{
  struct MHD_Response *response = value ? av_reply_new(value) : NULL;
  json_decref(value);
  if (response && allow &&
      MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, allow) != MHD_YES) {
    MHD_destroy_response(response);
    response = NULL;
  }
  return response;
}

static json_t *av_reply_detail(const char *text)
{
  return json_pack("{s:s}", "detail", text);
}

bool av_replies_init(struct av_replies *replies, size_t videos)
{
  *replies = (struct av_replies){ .count = videos };
  replies->videos = calloc(videos ? videos : 1, sizeof *replies->videos);
  /* The texts FastAPI gives, so clients see the same answers. */
  replies->not_found = av_reply_prepare(av_reply_detail("Not Found"), NULL);
  replies->video_not_found =
    av_reply_prepare(av_reply_detail("Video not found"), NULL);
  replies->get_only =
    av_reply_prepare(av_reply_detail("Method Not Allowed"), "GET");
  replies->get_patch =
    av_reply_prepare(av_reply_detail("Method Not Allowed"), "GET, PATCH");
  replies->get_post =
    av_reply_prepare(av_reply_detail("Method Not Allowed"), "GET, POST");
  replies->too_large = av_reply_prepare(
    av_reply_detail("Request body too large (limit 1 MiB)"), NULL);
  replies->success = av_reply_prepare(json_string("success"), NULL);
  if (replies->videos && replies->not_found && replies->video_not_found &&
      replies->get_only && replies->get_patch && replies->get_post &&
      replies->too_large &&
      replies->success)
    return true;
  av_replies_free(replies);
  return false;
}

void av_replies_free(struct av_replies *replies)
{
  struct MHD_Response *fixed[] = { replies->not_found, replies->video_not_found,
                                   replies->get_only, replies->get_patch,
                                   replies->get_post,
                                   replies->too_large, replies->success };
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    if (fixed[i])
      MHD_destroy_response(fixed[i]);
  for (size_t i = 0; replies->videos && i < replies->count; i++)
    av_reply_forget(replies, i);
  free(replies->videos);
  *replies = (struct av_replies){ 0 };
}

enum MHD_Result av_reply_queue(struct MHD_Connection *conn, unsigned status,
                               struct MHD_Response *response)
{
  /* Without a response (out of memory) the connection is dropped. */
  return response ? MHD_queue_response(conn, status, response) : MHD_NO;
}

enum MHD_Result av_reply_json(struct MHD_Connection *conn, unsigned status,
                              json_t *value)
{
  struct MHD_Response *response = av_reply_prepare(value, NULL);
  enum MHD_Result result = av_reply_queue(conn, status, response);
  if (response)
    MHD_destroy_response(response);
  return result;
}

enum MHD_Result av_reply_too_many(struct MHD_Connection *conn,
                                  unsigned seconds)
{
  char after[16];
  snprintf(after, sizeof after, "%u", seconds);
  struct MHD_Response *response =
    av_reply_prepare(av_reply_detail("Too Many Requests"), NULL);
  if (response &&
      MHD_add_response_header(response, "Retry-After", after) != MHD_YES) {
    MHD_destroy_response(response);
    response = NULL;
  }
  enum MHD_Result result =
    av_reply_queue(conn, MHD_HTTP_TOO_MANY_REQUESTS, response);
  if (response)
    MHD_destroy_response(response);
  return result;
}

struct MHD_Response *av_reply_video(struct av_replies *replies,
                                    const struct av_store *store, size_t i)
{
  if (replies->videos[i] == NULL)
    replies->videos[i] = av_reply_new(av_store_video(store, i));
  return replies->videos[i];
}

void av_reply_forget(struct av_replies *replies, size_t i)
{
  if (replies->videos[i]) {
    MHD_destroy_response(replies->videos[i]);
    replies->videos[i] = NULL;
  }
}

json_t *av_reply_invalid(const char *type, const char *where, json_t *index,
                         const char *msg, json_t *input, json_t *ctx)
{
  /* {"detail":[{"type","loc","msg","input"[,"ctx"]}]}; index, input and
   * ctx are stolen. */
  json_t *loc = json_pack("[s]", where);
  if (loc && index)
    json_array_append(loc, index);
  json_decref(index);
  json_t *error = json_pack("{s:s,s:o*,s:s,s:o}", "type", type, "loc", loc,
                            "msg", msg, "input", input ? input : json_null());
  if (error && ctx)
    json_object_set(error, "ctx", ctx);
  json_decref(ctx);
  return error ? json_pack("{s:[o]}", "detail", error) : NULL;
}
