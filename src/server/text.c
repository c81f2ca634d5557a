/* Seeded random numbers and lorem-style English built from words.c.
 * Everything here is a pure function of the seed, so the data is the same
 * on every run and machine. */
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* ============================== RANDOM ============================== */

/* splitmix64: tiny, fast, and good enough to pick words; its output
 * depends only on the state, never on the platform. */
uint64_t av_rng_next(struct av_rng *rng)
{
  uint64_t z = (rng->state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void av_rng_seed(struct av_rng *rng, uint64_t seed, uint64_t stream)
{
  /* Mix both so that nearby seeds and streams give unrelated sequences. */
  struct av_rng mix = { seed ^ (stream * UINT64_C(0xd1b54a32d192ed03)) };
  rng->state = av_rng_next(&mix);
}

uint32_t av_rng_range(struct av_rng *rng, uint32_t lo, uint32_t hi)
{
  uint64_t span = (uint64_t)hi - lo + 1;
  /* Multiply-shift maps 32 random bits onto the span without division. */
  return lo + (uint32_t)(((av_rng_next(rng) >> 32) * span) >> 32);
}

/* ============================== BUFFER ============================== */

bool av_buf_add(struct av_buf *buf, const char *s, size_t len)
{
  if (buf->len + len + 1 > buf->cap) {
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap < buf->len + len + 1)
      cap *= 2;
    char *data = realloc(buf->data, cap);
    if (data == NULL)
      return false;
    buf->data = data;
    buf->cap = cap;
  }
  memcpy(buf->data + buf->len, s, len);
  buf->len += len;
  buf->data[buf->len] = '\0';
  return true;
}

void av_buf_free(struct av_buf *buf)
{
  free(buf->data);
  *buf = (struct av_buf){ 0 };
}

/* =============================== TEXT =============================== */

bool av_text_sentence(struct av_buf *buf, struct av_rng *rng, unsigned min,
                      unsigned max, const char *mention)
{
  unsigned words = av_rng_range(rng, min, max);
  /* The mention never opens the sentence, so its case stays as given. */
  unsigned at = mention ? av_rng_range(rng, 1, words) : words + 1;
  for (unsigned i = 0; i < words + (mention != NULL); i++) {
    const char *word = i == at ? mention : av_words_get(av_rng_next(rng));
    if (i > 0 && !av_buf_add(buf, " ", 1))
      return false;
    size_t start = buf->len;
    if (!av_buf_add(buf, word, strlen(word)))
      return false;
    if (i == 0 && buf->data[start] >= 'a' && buf->data[start] <= 'z')
      buf->data[start] = (char)(buf->data[start] - 'a' + 'A');
  }
  return av_buf_add(buf, ".", 1);
}

bool av_text_paragraph(struct av_buf *buf, struct av_rng *rng, unsigned min,
                       unsigned max, const char *mention)
{
  unsigned sentences = av_rng_range(rng, min, max);
  unsigned at = mention ? av_rng_range(rng, 0, sentences - 1) : sentences;
  for (unsigned i = 0; i < sentences; i++) {
    if (i > 0 && !av_buf_add(buf, " ", 1))
      return false;
    if (!av_text_sentence(buf, rng, 4, 12, i == at ? mention : NULL))
      return false;
  }
  return true;
}
