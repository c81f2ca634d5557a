/* The videos: generated from the seed at start, changed only by PATCH.
 *
 * Random streams: 0 drives the store (id order, NASA picks), 2i+1 the
 * fields of video i, 2i+2 its transcript. A transcript is rebuilt from its
 * stream on each request rather than kept: it never changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

/* One transcript in this many mentions NASA (one per block of videos). */
#define AV_NASA_EVERY 40
/* Upload dates: 2020-01-01 plus 0..3652 days (to 2029-12-31). */
#define AV_DAY_2020 18262
#define AV_DAYS 3653
#define AV_PARAGRAPHS 5

/* Civil date from days since 1970-01-01 (Howard Hinnant's algorithm). */
static void av_store_date(long days, char *out, size_t size)
{
  long z = days + 719468;
  long era = z / 146097;
  long doe = z - era * 146097;
  long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  long mp = (5 * doy + 2) / 153;
  long day = doy - (153 * mp + 2) / 5 + 1;
  long month = mp < 10 ? mp + 3 : mp - 9;
  long year = yoe + era * 400 + (month <= 2);
  snprintf(out, size, "%04ld-%02ld-%02ld", year, month, day);
}

/* The id of video i: the vocabulary in a seeded order, and past its end two
 * words joined, drawn until unused. */
static void av_store_name(struct av_store *store, struct av_rng *rng,
                          const size_t *order, size_t i, char *out,
                          size_t size)
{
  if (i < av_words_count()) {
    snprintf(out, size, "%s", av_words_get(order[i]));
    return;
  }
  do {
    snprintf(out, size, "%s%s", av_words_get(av_rng_next(rng)),
             av_words_get(av_rng_next(rng)));
  } while (json_object_get(store->index, out) != NULL);
}

static json_t *av_store_make(json_t *id, uint64_t seed, size_t i)
{
  struct av_rng rng;
  struct av_buf title = { 0 }, description = { 0 };
  char date[64]; /* YYYY-MM-DD; the compiler cannot see the ranges */
  json_t *video = NULL;

  av_rng_seed(&rng, seed, 2 * (uint64_t)i + 1);
  if (av_text_sentence(&title, &rng, 4, 8, NULL) &&
      av_text_paragraph(&description, &rng, 2, 4, NULL)) {
    av_store_date(AV_DAY_2020 + (long)av_rng_range(&rng, 0, AV_DAYS - 1), date,
                  sizeof date);
    json_int_t views = av_rng_range(&rng, 0, 1000000);
    /* json_pack keeps this key order, which the contract fixes. */
    video = json_pack("{s:O,s:s,s:s,s:s,s:I,s:[]}", "id", id, "title",
                      title.data, "description", description.data,
                      "upload_date", date, "views", views, "warnings");
  }
  av_buf_free(&title);
  av_buf_free(&description);
  return video;
}

bool av_store_init(struct av_store *store, size_t count, uint64_t seed)
{
  size_t words = av_words_count();
  size_t *order = malloc(words * sizeof *order);
  struct av_rng rng;
  char name[128];

  *store = (struct av_store){ .seed = seed, .count = count };
  store->videos = calloc(count ? count : 1, sizeof *store->videos);
  store->index = json_object();
  if (order == NULL || store->videos == NULL || store->index == NULL)
    goto fail;

  av_rng_seed(&rng, seed, 0);
  for (size_t i = 0; i < words; i++)
    order[i] = i;
  for (size_t i = words - 1; i > 0; i--) { /* Fisher-Yates */
    size_t j = av_rng_range(&rng, 0, (uint32_t)i);
    size_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }

  for (size_t i = 0; i < count; i++) {
    struct av_video *video = &store->videos[i];
    av_store_name(store, &rng, order, i, name, sizeof name);
    video->id = json_string(name);
    if (video->id == NULL ||
        json_object_set_new(store->index, name, json_integer((json_int_t)i)))
      goto fail;
    video->object = av_store_make(video->id, seed, i);
    if (video->object == NULL)
      goto fail;
  }

  /* One NASA transcript per block, at a seeded place in the block, so any
   * seed gives a few and the first hundred ids always include some. */
  for (size_t start = 0; start < count; start += AV_NASA_EVERY) {
    size_t len = count - start < AV_NASA_EVERY ? count - start : AV_NASA_EVERY;
    store->videos[start + av_rng_range(&rng, 0, (uint32_t)len - 1)].nasa = true;
  }
  free(order);
  return true;

fail:
  free(order);
  av_store_free(store);
  return false;
}

void av_store_free(struct av_store *store)
{
  for (size_t i = 0; store->videos != NULL && i < store->count; i++) {
    json_decref(store->videos[i].id);
    json_decref(store->videos[i].object);
  }
  free(store->videos);
  json_decref(store->index);
  *store = (struct av_store){ 0 };
}

long av_store_find(const struct av_store *store, const char *id)
{
  json_t *at = json_object_get(store->index, id);
  return at ? (long)json_integer_value(at) : -1;
}

json_t *av_store_ids(const struct av_store *store, size_t n)
{
  json_t *ids = json_array();
  for (size_t i = 0; ids != NULL && i < n && i < store->count; i++) {
    if (json_array_append(ids, store->videos[i].id)) {
      json_decref(ids);
      return NULL;
    }
  }
  return ids;
}

json_t *av_store_video(const struct av_store *store, size_t i)
{
  return store->videos[i].object;
}

bool av_store_transcript(const struct av_store *store, size_t i,
                         struct av_buf *buf)
{
  struct av_rng rng;
  av_rng_seed(&rng, store->seed, 2 * (uint64_t)i + 2);
  unsigned nasa = store->videos[i].nasa ? av_rng_range(&rng, 0, AV_PARAGRAPHS - 1)
                                        : AV_PARAGRAPHS;
  for (unsigned p = 0; p < AV_PARAGRAPHS; p++) {
    if (p > 0 && !av_buf_add(buf, "\n\n", 2))
      return false;
    if (!av_text_paragraph(buf, &rng, 4, 8, p == nasa ? "NASA" : NULL))
      return false;
  }
  return true;
}

bool av_store_patch(struct av_store *store, size_t i, json_t *patch)
{
  /* Existing keys keep their place; new ones follow, in the body's order. */
  return json_object_update(store->videos[i].object, patch) == 0;
}
