/* A streamed response's gzip or deflate body, decoded as its reader reads.
 * libcurl decodes a buffered response itself; a stream's it must not: it
 * decodes a whole read (up to 64 KiB in) at once, and when the reader lags
 * and the transfer pauses mid-read it keeps the rest of that read's output,
 * up to 64 MiB, and hands it back after each unpause anew (copied again at
 * every pause). A body that expands a thousand times read at 64 KiB a piece
 * was then both large and quadratic. Here the compressed bytes wait in the
 * stream's bounded buffer, and each read inflates only what it returns. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "private.h"

struct av_inflate {
  z_stream z;
  int kind;       /* AV_CODING_GZIP or AV_CODING_DEFLATE */
  bool started;   /* some output came: a deflate body can no longer be retried raw */
  bool ended;     /* the compressed stream's end was read */
  size_t cap;     /* the most one run makes */
  char out[];     /* what one run made */
};

int av_coding_of(const char *value, size_t len) {
  while (len > 0 && (*value == ' ' || *value == '\t')) value++, len--;
  while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t' || value[len - 1] == '\r' ||
                     value[len - 1] == '\n'))
    len--;
  if (len == 0 || (len == 8 && strncasecmp(value, "identity", 8) == 0)) return AV_CODING_NONE;
  if ((len == 4 && strncasecmp(value, "gzip", 4) == 0) || (len == 6 && strncasecmp(value, "x-gzip", 6) == 0))
    return AV_CODING_GZIP;
  if (len == 7 && strncasecmp(value, "deflate", 7) == 0) return AV_CODING_DEFLATE;
  return AV_CODING_OTHER;
}

/* zlib's window bits for a kind: gzip, or zlib-wrapped deflate (HTTP's
 * "deflate"; a raw one is tried when that fails at once, as libcurl does). */
static int av_inflate_bits(int kind, bool raw) { return kind == AV_CODING_GZIP ? 15 + 16 : raw ? -15 : 15; }

av_inflate *av_inflate_new(int kind, size_t cap) {
  av_inflate *f = calloc(1, sizeof *f + cap);
  if (!f) return NULL;
  f->kind = kind;
  f->cap = cap;
  if (inflateInit2(&f->z, av_inflate_bits(kind, false)) != Z_OK) {
    free(f);
    return NULL;
  }
  return f;
}

void av_inflate_free(av_inflate *f) {
  if (!f) return;
  inflateEnd(&f->z);
  free(f);
}

bool av_inflate_ended(const av_inflate *f) { return f->ended; }

bool av_inflate_fed(const av_inflate *f) { return f->z.total_in > 0; }

int av_inflate_run(av_inflate *f, const char **in, size_t *in_len, size_t want, const char **out, size_t *made,
                   const char **why) {
  *out = f->out;
  *made = 0;
  *why = NULL;
  if (want == 0 || want > f->cap) want = f->cap;
  for (;;) {
    if (f->ended) {
      if (*in_len == 0) return AV_INFLATE_END;
      /* more after the end: gzip's next member (pigz, concatenated
       * files), decoded on, or data that is no part of the body */
      if (f->kind != AV_CODING_GZIP || (unsigned char)(*in)[0] != 0x1f ||
          (*in_len > 1 && (unsigned char)(*in)[1] != 0x8b)) {
        *why = "data after the end of the compressed body";
        return AV_INFLATE_ERROR;
      }
      if (*in_len < 2) return AV_INFLATE_MORE; /* the rest of its magic is to come */
      if (inflateReset(&f->z) != Z_OK) {
        *why = "out of memory";
        return AV_INFLATE_ERROR;
      }
      f->ended = false;
    }
    f->z.next_in = (Bytef *)*in;
    f->z.avail_in = (uInt)(*in_len > UINT32_MAX ? UINT32_MAX : *in_len);
    f->z.next_out = (Bytef *)f->out + *made;
    f->z.avail_out = (uInt)(want - *made);
    uInt in_before = f->z.avail_in, out_before = f->z.avail_out;
    int rc = inflate(&f->z, Z_NO_FLUSH);
    size_t used = in_before - f->z.avail_in, produced = out_before - f->z.avail_out;
    *in += used;
    *in_len -= used;
    *made += produced;
    if (produced) f->started = true;
    if (rc == Z_STREAM_END) {
      f->ended = true;
      if (*made == want) return AV_INFLATE_MORE; /* what follows, next time */
      continue;
    }
    /* (only while this call has all the input so far: z.total_in counts
     * what earlier calls took, which cannot be given back) */
    if (rc == Z_DATA_ERROR && f->kind == AV_CODING_DEFLATE && !f->started && f->z.total_in == used) {
      /* "deflate" sent raw, without its zlib header: start again so */
      f->started = true; /* only once */
      if (inflateReset2(&f->z, av_inflate_bits(f->kind, true)) == Z_OK) {
        *in -= used;
        *in_len += used;
        continue;
      }
    }
    if (rc == Z_MEM_ERROR) {
      *why = "out of memory";
      return AV_INFLATE_ERROR;
    }
    if (rc != Z_OK && rc != Z_BUF_ERROR) {
      *why = f->z.msg ? f->z.msg : "bad compressed data";
      return AV_INFLATE_ERROR;
    }
    return AV_INFLATE_MORE; /* out full, or all of in taken */
  }
}
