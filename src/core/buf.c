/* Growable byte buffers for response bodies and headers. */
#include <stdlib.h>
#include <string.h>

#include "private.h"

/* The first block is just big enough, at least AV_BUF_MIN: a typical small
 * JSON body or header block then fits in one allocation that glibc serves
 * from its per-thread cache (blocks up to ~1 KiB). A fixed 1 KiB start
 * missed that cache by a few bytes and went through the slow bins, which
 * Lua's batch frees keep busy. Growth doubles after that. */
#define AV_BUF_MIN 256

bool av_buf_append(av_buf *b, const char *p, size_t n) {
  size_t need = b->len + n + 1; /* room for a NUL terminator */
  if (need > b->cap) {
    size_t cap = b->cap ? b->cap : (need > AV_BUF_MIN ? need : AV_BUF_MIN);
    while (cap < need) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return false;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return true;
}

void av_buf_free(av_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
