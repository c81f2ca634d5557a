/* core.json_decoder(null, arrays) -> decode: a strict RFC 8259 JSON decoder
 * that builds Lua values directly.
 *
 *   decode(text) -> value | nil, message, byte
 *
 * Why not lua-cjson: it reads every number with strtod, so integers past
 * 2^53 lose digits and 1.0 cannot be told from 1. Here an integer literal
 * (no fraction, no exponent) that fits int64 is a Lua integer, exact; one
 * beyond int64 is a float, as Lua's tonumber gives; a number with a
 * fraction or exponent is a float (1.0, -0.0 kept); one beyond the doubles
 * (1e400) is refused. Objects are tables with string keys (the last of
 * duplicate keys wins), arrays 1-based lists, null the `null` value given
 * at setup; an empty array is put in the weak set `arrays` (json.array's
 * marks) so that it encodes back as []. Strings must be UTF-8; \u escapes
 * become UTF-8, surrogate pairs joined, lone surrogates refused.
 *
 * Bad text is not raised but returned: nil, a one-line message, and the
 * byte (1-based, as string.sub counts) where the problem is; the caller
 * words the error. Nesting deeper than 1000 is refused (lua-cjson's limit);
 * the recursion is bounded by that, the Lua stack checked as it grows. */
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "private.h"

#define AV_JSON_MAX_DEPTH 1000

typedef struct av_jd {
  lua_State *L;
  int null_idx;   /* where the `null` value is (an index or upvalue index) */
  int arrays_idx; /* where the weak set of empty arrays is */
  const unsigned char *text, *p, *end;
  int depth;
  size_t at;      /* 1-based byte of the error */
  char msg[200];  /* the error, once a parse function returned false */
} av_jd;

/* Byte classes for the string scan: 0 a byte copied as it is, 1 the
 * closing quote, 2 an escape, 3 a control character (refused), 4 the
 * first byte of a UTF-8 sequence (checked). */
enum { AV_C_PLAIN = 0, AV_C_QUOTE, AV_C_ESCAPE, AV_C_CONTROL, AV_C_HIGH };

static const unsigned char av_jd_class[256] = {
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
};

/* Record the error at byte `at` of the text; always false. */
static bool av_jd_fail(av_jd *d, const unsigned char *at, const char *fmt, ...) {
  d->at = (size_t)(at - d->text) + 1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->msg, sizeof d->msg, fmt, ap);
  va_end(ap);
  return false;
}

/* What is at p, for messages: 'x', byte 0xHH, or end of text. */
static const char *av_jd_what(av_jd *d, const unsigned char *p, char buf[16]) {
  if (p >= d->end) return "end of text";
  if (*p >= 0x20 && *p < 0x7f && *p != '\'')
    snprintf(buf, 16, "'%c'", *p);
  else
    snprintf(buf, 16, "byte 0x%02X", *p);
  return buf;
}

static void av_jd_space(av_jd *d) {
  const unsigned char *p = d->p, *e = d->end;
  while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  d->p = p;
}

/* Length of the well-formed UTF-8 sequence (2 to 4 bytes) at p, or 0:
 * no overlongs, no encoded surrogates, nothing past U+10FFFF. */
static size_t av_jd_utf8(const unsigned char *p, const unsigned char *e) {
  size_t room = (size_t)(e - p);
  unsigned c = p[0];
  if (c >= 0xC2 && c <= 0xDF) return room >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (room < 3 || (p[2] & 0xC0) != 0x80) return 0;
    unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return p[1] >= lo && p[1] <= hi ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (room < 4 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
    unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return p[1] >= lo && p[1] <= hi ? 4 : 0;
  }
  return 0;
}

/* The 4 hex digits at p (there are at least 4 bytes), or -1. */
static long av_jd_hex4(const unsigned char *p) {
  long v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned c = p[i];
    int digit = c >= '0' && c <= '9' ? (int)(c - '0')
              : c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
              : c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10) : -1;
    if (digit < 0) return -1;
    v = v * 16 + digit;
  }
  return v;
}

/* The escape at p (a backslash) into b; advances *pp past it. */
static bool av_jd_escape(av_jd *d, luaL_Buffer *b, const unsigned char **pp) {
  const unsigned char *p = *pp, *e = d->end;
  char buf[16];
  if (p + 1 >= e) return false; /* the caller reports the unterminated string */
  char c;
  switch (p[1]) {
  case '"': c = '"'; break;
  case '\\': c = '\\'; break;
  case '/': c = '/'; break;
  case 'b': c = '\b'; break;
  case 'f': c = '\f'; break;
  case 'n': c = '\n'; break;
  case 'r': c = '\r'; break;
  case 't': c = '\t'; break;
  case 'u': {
    long cp = e - p >= 6 ? av_jd_hex4(p + 2) : -1;
    if (cp < 0) return av_jd_fail(d, p, "bad \\u escape in a string (\\u and 4 hex digits expected)");
    const unsigned char *next = p + 6;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
      return av_jd_fail(d, p, "lone surrogate \\u%04lX in a string (a low surrogate without a high one)", cp);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      long lo = e - next >= 6 && next[0] == '\\' && next[1] == 'u' ? av_jd_hex4(next + 2) : -1;
      if (lo < 0xDC00 || lo > 0xDFFF)
        return av_jd_fail(d, p, "lone surrogate \\u%04lX in a string (a high surrogate must be followed by a low one)",
                          cp);
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      next += 6;
    }
    char u[4];
    size_t n;
    if (cp < 0x80) {
      u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
      u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
      u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
      u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
      u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
      u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    luaL_addlstring(b, u, n);
    *pp = next;
    return true;
  }
  default:
    return av_jd_fail(d, p, "bad escape in a string: backslash then %s", av_jd_what(d, p + 1, buf));
  }
  luaL_addchar(b, c);
  *pp = p + 2;
  return true;
}

/* The string at d->p (its opening quote), pushed. Text without escapes is
 * pushed straight from the input; escapes go through a luaL_Buffer. */
static bool av_jd_string(av_jd *d) {
  lua_State *L = d->L;
  const unsigned char *open = d->p, *p = open + 1, *e = d->end;
  const unsigned char *run = p; /* start of the bytes not yet copied */
  luaL_Buffer b;
  bool buffered = false;
  for (;;) {
    while (p < e && av_jd_class[*p] == AV_C_PLAIN) p++;
    if (p >= e) return av_jd_fail(d, open, "unterminated string");
    switch (av_jd_class[*p]) {
    case AV_C_QUOTE:
      if (!buffered) {
        lua_pushlstring(L, (const char *)run, (size_t)(p - run));
      } else {
        luaL_addlstring(&b, (const char *)run, (size_t)(p - run));
        luaL_pushresult(&b);
      }
      d->p = p + 1;
      return true;
    case AV_C_ESCAPE:
      if (!buffered) luaL_buffinit(L, &b), buffered = true;
      luaL_addlstring(&b, (const char *)run, (size_t)(p - run));
      if (!av_jd_escape(d, &b, &p)) {
        if (p + 1 >= e) return av_jd_fail(d, open, "unterminated string");
        return false;
      }
      run = p;
      break;
    case AV_C_CONTROL:
      return av_jd_fail(d, p, "control character 0x%02X in a string (it must be escaped)", *p);
    default: { /* AV_C_HIGH */
      size_t n = av_jd_utf8(p, e);
      if (n == 0) return av_jd_fail(d, p, "invalid UTF-8 in a string (byte 0x%02X)", *p);
      p += n;
    }
    }
  }
}

/* Exact powers of ten as doubles: m * 10^k or m / 10^k for m <= 2^53 is
 * then one correctly rounded operation (Clinger's fast path). */
static const double av_jd_pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                     1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Numbers the fast paths cannot take: the text through strtod (with the
 * locale's decimal point, as Lua does), correctly rounded. */
static bool av_jd_slow_number(av_jd *d, const unsigned char *start, size_t len, bool is_int) {
  char small[64];
  char *buf = len < sizeof small ? small : malloc(len + 1);
  if (!buf) {
    lua_pushliteral(d->L, "not enough memory");
    lua_error(d->L);
  }
  memcpy(buf, start, len);
  buf[len] = '\0';
  char *dot = is_int ? NULL : memchr(buf, '.', len);
  if (dot) *dot = lua_getlocaledecpoint();
  double x = strtod(buf, NULL);
  if (buf != small) free(buf);
  if (x == HUGE_VAL || x == -HUGE_VAL) {
    if (len > 40)
      return av_jd_fail(d, start, "number out of range (beyond the doubles): %.40s...", (const char *)start);
    return av_jd_fail(d, start, "number out of range (beyond the doubles): %.*s", (int)len, (const char *)start);
  }
  lua_pushnumber(d->L, x);
  return true;
}

#define AV_IS_DIGIT(c) ((unsigned)((c) - '0') < 10u)

/* The number at d->p, pushed: an integer for an integer literal that fits
 * int64, a float otherwise. */
static bool av_jd_number(av_jd *d) {
  const unsigned char *start = d->p, *p = start, *e = d->end;
  bool neg = false;
  if (*p == '-') neg = true, p++;
  if (p >= e || !AV_IS_DIGIT(*p)) {
    if ((size_t)(e - p) >= 8 && memcmp(p, "Infinity", 8) == 0)
      return av_jd_fail(d, start, "-Infinity is not a JSON number");
    return av_jd_fail(d, start, "bad number '-': a digit must follow '-'");
  }
  uint64_t m = 0; /* the first 19 significant digits */
  int digits = 0; /* significant digits seen (leading zeros are not) */
  long long exp10 = 0; /* m's decimal exponent, while digits <= 19 */
  bool is_int = true;
  if (*p == '0') {
    p++;
    if (p < e && AV_IS_DIGIT(*p))
      return av_jd_fail(d, start, "leading zero in number '%.*s'", (int)(p - start + 1), (const char *)start);
  } else {
    while (p < e && AV_IS_DIGIT(*p)) {
      if (digits < 19) m = m * 10 + (uint64_t)(*p - '0');
      digits++;
      p++;
    }
  }
  if (p < e && *p == '.') {
    is_int = false;
    p++;
    if (p >= e || !AV_IS_DIGIT(*p))
      return av_jd_fail(d, start, "bad number '%.*s': a digit must follow '.'", (int)(p - start), (const char *)start);
    while (p < e && AV_IS_DIGIT(*p)) {
      if (digits < 19) {
        m = m * 10 + (uint64_t)(*p - '0');
        exp10--;
        if (m) digits++;
      } else {
        digits++;
      }
      p++;
    }
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    is_int = false;
    p++;
    int sign = 1;
    if (p < e && (*p == '+' || *p == '-')) sign = *p == '-' ? -1 : 1, p++;
    if (p >= e || !AV_IS_DIGIT(*p))
      return av_jd_fail(d, start, "bad number '%.*s': a digit must follow the exponent's 'e'", (int)(p - start),
                        (const char *)start);
    int x = 0;
    while (p < e && AV_IS_DIGIT(*p)) {
      if (x < 100000) x = x * 10 + (*p - '0'); /* beyond, only strtod's answer matters */
      p++;
    }
    exp10 += sign * x;
  }
  d->p = p;
  if (is_int && digits <= 19) {
#if LUA_VERSION_NUM < 503
    if (neg && m == 0) { /* numbers are doubles: "-0" is -0.0, as tonumber says */
      lua_pushnumber(d->L, -0.0);
      return true;
    }
#endif
    if (!neg && m <= (uint64_t)INT64_MAX) {
      lua_pushinteger(d->L, (lua_Integer)m);
      return true;
    }
    if (neg && m <= (uint64_t)INT64_MAX + 1) {
      lua_pushinteger(d->L, (lua_Integer)(0 - m)); /* INT64_MIN included, without overflow */
      return true;
    }
  }
#if FLT_EVAL_METHOD == 0 /* doubles computed as doubles: the fast path is exact */
  if (!is_int && digits <= 19 && m <= ((uint64_t)1 << 53) && exp10 >= -22 && exp10 <= 22) {
    double x = (double)m;
    x = exp10 < 0 ? x / av_jd_pow10[-exp10] : x * av_jd_pow10[exp10];
    lua_pushnumber(d->L, neg ? -x : x);
    return true;
  }
#endif
  return av_jd_slow_number(d, start, (size_t)(p - start), is_int);
}

/* The literal word at d->p, or an error naming what was expected. */
static bool av_jd_word(av_jd *d, const char *word, size_t n) {
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
    return av_jd_fail(d, d->p, "expected %s", word);
  d->p += n;
  return true;
}

static bool av_jd_value(av_jd *d);

/* Members (or elements) gathered on the Lua stack before their table is
 * made: a table made with its final size is never rehashed, and growing
 * one field at a time cost more than the rest of the decoding (measured:
 * 5.7k instructions of 12k for a 7-field object). Longer ones go in
 * chunks of this many. */
#define AV_JSON_CHUNK 16

/* Enter an array or object at d->p: depth and Lua stack checked. */
static bool av_jd_enter(av_jd *d) {
  if (++d->depth > AV_JSON_MAX_DEPTH) return av_jd_fail(d, d->p, "nested deeper than %d", AV_JSON_MAX_DEPTH);
  /* the table, a key, a value, and a string buffer's slots; each member
   * of a chunk checks for its own two (av_jd_room) */
  if (!lua_checkstack(d->L, 8)) return av_jd_fail(d, d->p, "nested too deeply for the Lua stack");
  d->p++;
  av_jd_space(d);
  return true;
}

/* Room on the Lua stack for one more member of a chunk: asked for one
 * member at a time, so that a small document never grows the stack of the
 * coroutine that decodes it (a 16-member chunk asked for at once did). */
static bool av_jd_room(av_jd *d) {
  return lua_checkstack(d->L, 8) || av_jd_fail(d, d->p, "nested too deeply for the Lua stack");
}

/* Set the n values above slot t into the table at t (made now, sized for
 * them, if t holds false) as elements first + 1 ... first + n. */
static void av_jd_flush_array(lua_State *L, int t, lua_Integer first, int n) {
  if (!lua_istable(L, t)) {
    lua_createtable(L, n, 0);
    lua_replace(L, t);
  }
  for (int i = n; i > 0; i--) lua_rawseti(L, t, first + i); /* pops from the top */
}

/* Set the n key/value pairs above slot t into the table at t (made now,
 * sized for them, if t holds false), in order: the last of duplicate keys
 * wins. */
static void av_jd_flush_object(lua_State *L, int t, int n) {
  if (!lua_istable(L, t)) {
    lua_createtable(L, 0, n);
    lua_replace(L, t);
  }
  for (int i = 0; i < n; i++) {
    lua_pushvalue(L, t + 1 + 2 * i);
    lua_pushvalue(L, t + 2 + 2 * i);
    lua_rawset(L, t);
  }
  lua_settop(L, t);
}

static bool av_jd_array(av_jd *d) {
  lua_State *L = d->L;
  if (!av_jd_enter(d)) return false;
  if (d->p < d->end && *d->p == ']') {
    d->p++;
    d->depth--;
    lua_newtable(L);
    lua_pushvalue(L, -1); /* marked as json.array(): it encodes back as [] */
    lua_pushboolean(L, 1);
    lua_rawset(L, d->arrays_idx);
    return true;
  }
  lua_pushboolean(L, 0); /* the table's slot, until it is made */
  int t = lua_gettop(L);
  lua_Integer n = 0;
  int pending = 0;
  char buf[16];
  for (;;) {
    if (!av_jd_room(d) || !av_jd_value(d)) return false;
    if (++pending == AV_JSON_CHUNK) {
      av_jd_flush_array(L, t, n, pending);
      n += pending;
      pending = 0;
    }
    av_jd_space(d);
    if (d->p < d->end && *d->p == ',') {
      d->p++;
      continue;
    }
    if (d->p < d->end && *d->p == ']') break;
    return av_jd_fail(d, d->p, "expected ',' or ']' in an array, got %s", av_jd_what(d, d->p, buf));
  }
  if (pending || !lua_istable(L, t)) av_jd_flush_array(L, t, n, pending);
  d->p++;
  d->depth--;
  return true;
}

static bool av_jd_object(av_jd *d) {
  lua_State *L = d->L;
  if (!av_jd_enter(d)) return false;
  char buf[16];
  if (d->p < d->end && *d->p == '}') {
    d->p++;
    d->depth--;
    lua_newtable(L);
    return true;
  }
  lua_pushboolean(L, 0); /* the table's slot, until it is made */
  int t = lua_gettop(L);
  int pending = 0;
  for (;;) {
    if (!av_jd_room(d)) return false;
    av_jd_space(d);
    if (d->p >= d->end || *d->p != '"')
      return av_jd_fail(d, d->p, "expected a string key in an object, got %s", av_jd_what(d, d->p, buf));
    if (!av_jd_string(d)) return false;
    av_jd_space(d);
    if (d->p >= d->end || *d->p != ':')
      return av_jd_fail(d, d->p, "expected ':' after an object key, got %s", av_jd_what(d, d->p, buf));
    d->p++;
    if (!av_jd_value(d)) return false;
    if (++pending == AV_JSON_CHUNK) {
      av_jd_flush_object(L, t, pending);
      pending = 0;
    }
    av_jd_space(d);
    if (d->p < d->end && *d->p == ',') {
      d->p++;
      continue;
    }
    if (d->p < d->end && *d->p == '}') break;
    return av_jd_fail(d, d->p, "expected ',' or '}' in an object, got %s", av_jd_what(d, d->p, buf));
  }
  if (pending || !lua_istable(L, t)) av_jd_flush_object(L, t, pending);
  d->p++;
  d->depth--;
  return true;
}

/* One value at d->p (after white space), pushed. */
static bool av_jd_value(av_jd *d) {
  av_jd_space(d);
  char buf[16];
  if (d->p >= d->end) return av_jd_fail(d, d->p, "expected a value, got end of text");
  switch (*d->p) {
  case '{':
    return av_jd_object(d);
  case '[':
    return av_jd_array(d);
  case '"':
    return av_jd_string(d);
  case 't':
    if (!av_jd_word(d, "true", 4)) return false;
    lua_pushboolean(d->L, 1);
    return true;
  case 'f':
    if (!av_jd_word(d, "false", 5)) return false;
    lua_pushboolean(d->L, 0);
    return true;
  case 'n':
    if (!av_jd_word(d, "null", 4)) return false;
    lua_pushvalue(d->L, d->null_idx);
    return true;
  case '-':
  case '0': case '1': case '2': case '3': case '4':
  case '5': case '6': case '7': case '8': case '9':
    return av_jd_number(d);
  case 'N':
  case 'I': {
    const char *word = *d->p == 'N' ? "NaN" : "Infinity";
    size_t n = strlen(word);
    if ((size_t)(d->end - d->p) >= n && memcmp(d->p, word, n) == 0)
      return av_jd_fail(d, d->p, "%s is not a JSON number", word);
  }
    /* fall through */
  default:
    return av_jd_fail(d, d->p, "expected a value, got %s", av_jd_what(d, d->p, buf));
  }
}

/* decode(text) -> value | nil, message, byte */
int av_json_decode_text(lua_State *L, const char *text, size_t len, int null_idx, int arrays_idx) {
  int top = lua_gettop(L);
  av_jd d = {.L = L, .null_idx = null_idx, .arrays_idx = arrays_idx, .text = (const unsigned char *)text};
  d.p = d.text;
  d.end = d.text + len;
  char buf[16];
  if (av_jd_value(&d)) {
    av_jd_space(&d);
    if (d.p == d.end) return 1;
    av_jd_fail(&d, d.p, "unexpected %s after the value", av_jd_what(&d, d.p, buf));
  }
  lua_settop(L, top);
  lua_pushnil(L);
  lua_pushstring(L, d.msg);
  lua_pushinteger(L, (lua_Integer)d.at);
  return 3;
}

/* decode(text): the closure core.json_decoder makes; null and the array
 * marks are its upvalues. */
static int av_json_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  lua_settop(L, 1);
  return av_json_decode_text(L, text, len, lua_upvalueindex(1), lua_upvalueindex(2));
}

int av_json_decoder(lua_State *L) {
  luaL_checkany(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_pushcclosure(L, av_json_decode, 2);
  return 1;
}
