/* Growable byte buffers for response bodies and headers. */
#include <stdlib.h>
#include <string.h>

#include "private.h"

bool av_buf_append(av_buf *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
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
