/* multipart/form-data bodies (files = ...): the parts session.lua lists
 * are copied into C when the request is made, and become a libcurl mime
 * body on the easy handle each time the request runs (a pooled handle is
 * another request's the next time). File parts are read from disk by
 * libcurl as it sends; libcurl writes the Content-Type with its boundary. */
#include <stdlib.h>
#include <string.h>

#include "private.h"

struct av_part {
  char *name;
  char *data;                 /* the content, or NULL for a file part */
  size_t data_len;
  char *path;                 /* the file to send, or NULL */
  char *filename;             /* NULL: none (a field), or the file's own name */
  char *type;                 /* its Content-Type, or NULL */
};

/* A copy of field `k` of the table at idx, or NULL when it is absent;
 * false when out of memory. */
static bool av_part_field(lua_State *L, int idx, const char *k, char **out, size_t *len) {
  size_t n = 0;
  lua_getfield(L, idx, k);
  const char *s = lua_tolstring(L, -1, &n);
  *out = NULL;
  if (s) {
    *out = malloc(n + 1);
    if (*out) memcpy(*out, s, n + 1);
  }
  lua_pop(L, 1);
  if (len) *len = n;
  return !s || *out;
}

bool av_multipart_read(lua_State *L, int idx, av_request *req) {
  size_t n = lua_rawlen(L, idx);
  req->parts = calloc(n ? n : 1, sizeof *req->parts);
  if (!req->parts) return false;
  for (size_t i = 0; i < n; i++) {
    av_part *p = &req->parts[i];
    req->nparts = i + 1;
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    int t = lua_gettop(L);
    bool ok = lua_istable(L, t) && av_part_field(L, t, "name", &p->name, NULL) && p->name &&
              av_part_field(L, t, "data", &p->data, &p->data_len) && av_part_field(L, t, "path", &p->path, NULL) &&
              av_part_field(L, t, "filename", &p->filename, NULL) &&
              av_part_field(L, t, "content_type", &p->type, NULL) && (p->data || p->path);
    lua_pop(L, 1);
    if (!ok) return false;
  }
  return true;
}

CURLcode av_multipart_attach(av_request *req, CURL *h) {
  curl_mime *mime = curl_mime_init(h);
  if (!mime) return CURLE_OUT_OF_MEMORY;
  for (size_t i = 0; i < req->nparts; i++) {
    const av_part *p = &req->parts[i];
    curl_mimepart *part = curl_mime_addpart(mime);
    CURLcode rc = part ? curl_mime_name(part, p->name) : CURLE_OUT_OF_MEMORY;
    /* curl_mime_filedata fails for a file gone since the request was made */
    if (rc == CURLE_OK) rc = p->path ? curl_mime_filedata(part, p->path) : curl_mime_data(part, p->data, p->data_len);
    if (rc == CURLE_OK && p->filename) rc = curl_mime_filename(part, p->filename);
    if (rc == CURLE_OK && p->type) rc = curl_mime_type(part, p->type);
    if (rc != CURLE_OK) {
      curl_mime_free(mime);
      return rc;
    }
  }
  curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
  req->mime = mime;
  return CURLE_OK;
}

void av_multipart_detach(av_request *req, CURL *h) {
  if (!req->mime) return;
  /* the handle refers to the parts: let go of them first */
  curl_easy_setopt(h, CURLOPT_MIMEPOST, NULL);
  curl_mime_free(req->mime);
  req->mime = NULL;
}

void av_multipart_free(av_request *req) {
  for (size_t i = 0; i < req->nparts; i++) {
    av_part *p = &req->parts[i];
    free(p->name);
    free(p->data);
    free(p->path);
    free(p->filename);
    free(p->type);
  }
  free(req->parts);
  req->parts = NULL;
  req->nparts = 0;
}
