/* Base64 for the data path: encoding what clients receive (tcp.onData, tcp.recv answers) and
 * decoding what they send (tcp.send).
 *
 * Every byte of data passes through here, so both directions are vectorised with the pshufb
 * method (W. Mula, D. Lemire, "Faster Base64 Encoding and Decoding Using AVX2 Instructions",
 * 2018), written for this project: 12 bytes become 16 characters per SSSE3 step (24 and 32
 * with AVX2), and back. The instruction set is chosen once, at run time, so one binary runs on
 * any x86-64; other machines, and the tail of every buffer, take the scalar code. Neither
 * Debian nor the Swift package index carries a vectorised base64. */
#include "CNetShim.h"

#include <string.h>

typedef size_t (*encoder_fn)(const uint8_t *, size_t, uint8_t *);

static const char alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Three bytes at a time; the last one or two take '=' padding. */
static size_t encode_scalar(const uint8_t *in, size_t n, uint8_t *out) {
    size_t i = 0, o = 0;
    for (; i + 3 <= n; i += 3, o += 4) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o] = (uint8_t)alphabet[v >> 18];
        out[o + 1] = (uint8_t)alphabet[(v >> 12) & 63];
        out[o + 2] = (uint8_t)alphabet[(v >> 6) & 63];
        out[o + 3] = (uint8_t)alphabet[v & 63];
    }
    size_t rest = n - i;
    if (rest > 0) {
        uint32_t v = (uint32_t)in[i] << 16 | (rest > 1 ? (uint32_t)in[i + 1] << 8 : 0);
        out[o] = (uint8_t)alphabet[v >> 18];
        out[o + 1] = (uint8_t)alphabet[(v >> 12) & 63];
        out[o + 2] = rest > 1 ? (uint8_t)alphabet[(v >> 6) & 63] : '=';
        out[o + 3] = '=';
        o += 4;
    }
    return o;
}

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>

/* Within each 32-bit lane, bytes a b c become b a c b, so that the four 6-bit fields can be
   moved into four bytes with two multiplies (the paper's "mulhi/mullo" step). */
#define TCPGW_SPLIT_MASK_LO 0x0fc0fc00
#define TCPGW_SPLIT_MUL_LO 0x04000040
#define TCPGW_SPLIT_MASK_HI 0x003f03f0
#define TCPGW_SPLIT_MUL_HI 0x01000010

__attribute__((target("ssse3")))
static inline __m128i indices_ssse3(__m128i v) {
    const __m128i spread = _mm_set_epi8(10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1);
    v = _mm_shuffle_epi8(v, spread);
    __m128i lo = _mm_mulhi_epu16(_mm_and_si128(v, _mm_set1_epi32(TCPGW_SPLIT_MASK_LO)),
                                 _mm_set1_epi32(TCPGW_SPLIT_MUL_LO));
    __m128i hi = _mm_mullo_epi16(_mm_and_si128(v, _mm_set1_epi32(TCPGW_SPLIT_MASK_HI)),
                                 _mm_set1_epi32(TCPGW_SPLIT_MUL_HI));
    return _mm_or_si128(lo, hi);
}

/* 6-bit values to characters: each range (A-Z, a-z, 0-9, '+', '/') is one offset added to
   the value; a saturating subtract and one compare pick the offset's slot in a 16-entry table. */
__attribute__((target("ssse3")))
static inline __m128i characters_ssse3(__m128i indices) {
    const __m128i offsets = _mm_setr_epi8('a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
                                          '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '+' - 62,
                                          '/' - 63, 'A', 0, 0);
    __m128i slot = _mm_subs_epu8(indices, _mm_set1_epi8(51));
    __m128i upper = _mm_cmpgt_epi8(_mm_set1_epi8(26), indices);
    slot = _mm_or_si128(slot, _mm_and_si128(upper, _mm_set1_epi8(13)));
    return _mm_add_epi8(_mm_shuffle_epi8(offsets, slot), indices);
}

__attribute__((target("ssse3")))
static size_t encode_ssse3(const uint8_t *in, size_t n, uint8_t *out) {
    size_t i = 0, o = 0;
    /* Each step reads 16 bytes and uses 12, so it stops 4 bytes early. */
    for (; i + 16 <= n; i += 12, o += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
        _mm_storeu_si128((__m128i *)(void *)(out + o), characters_ssse3(indices_ssse3(v)));
    }
    return o + encode_scalar(in + i, n - i, out + o);
}

__attribute__((target("avx2")))
static size_t encode_avx2(const uint8_t *in, size_t n, uint8_t *out) {
    const __m256i spread = _mm256_set_epi8(10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1,
                                           10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1);
    const __m256i offsets = _mm256_setr_epi8(
        'a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
        '0' - 52, '0' - 52, '+' - 62, '/' - 63, 'A', 0, 0, 'a' - 26, '0' - 52, '0' - 52, '0' - 52,
        '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '+' - 62, '/' - 63, 'A', 0, 0);
    size_t i = 0, o = 0;
    /* Two 12-byte groups, one per 128-bit lane (pshufb does not cross lanes); the second load
       reads 16 bytes from i + 12, so a step needs 28 readable bytes. */
    for (; i + 28 <= n; i += 24, o += 32) {
        __m128i first = _mm_loadu_si128((const __m128i *)(const void *)(in + i));
        __m128i second = _mm_loadu_si128((const __m128i *)(const void *)(in + i + 12));
        __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(first), second, 1);
        v = _mm256_shuffle_epi8(v, spread);
        __m256i lo = _mm256_mulhi_epu16(_mm256_and_si256(v, _mm256_set1_epi32(TCPGW_SPLIT_MASK_LO)),
                                        _mm256_set1_epi32(TCPGW_SPLIT_MUL_LO));
        __m256i hi = _mm256_mullo_epi16(_mm256_and_si256(v, _mm256_set1_epi32(TCPGW_SPLIT_MASK_HI)),
                                        _mm256_set1_epi32(TCPGW_SPLIT_MUL_HI));
        __m256i indices = _mm256_or_si256(lo, hi);
        __m256i slot = _mm256_subs_epu8(indices, _mm256_set1_epi8(51));
        __m256i upper = _mm256_cmpgt_epi8(_mm256_set1_epi8(26), indices);
        slot = _mm256_or_si256(slot, _mm256_and_si256(upper, _mm256_set1_epi8(13)));
        __m256i chars = _mm256_add_epi8(_mm256_shuffle_epi8(offsets, slot), indices);
        _mm256_storeu_si256((__m256i *)(void *)(out + o), chars);
    }
    return o + encode_ssse3(in + i, n - i, out + o);
}

static encoder_fn chosen_encoder(int level) {
    switch (level) {
    case 0: return encode_scalar;
    case 1: return encode_ssse3;
    default: return encode_avx2;
    }
}

static int best_level(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) return 2;
    if (__builtin_cpu_supports("ssse3")) return 1;
    return 0;
}
#else
static encoder_fn chosen_encoder(int level) { (void)level; return encode_scalar; }
static int best_level(void) { return 0; }
#endif

/* Decoding: only whole blocks of the standard alphabet are done here; a block holding anything
   else (padding, the URL-safe alphabet, a bad character) ends the vector loop, and the caller's
   scalar code takes over from there and judges it. */
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
/* 6-bit values of 16 characters, and in *bad a mask of those outside A-Z a-z 0-9 + /. The range
   check and the offset both come from the high nibble; '/' shares its nibble with '+' and is
   patched by one compare. */
__attribute__((target("ssse3")))
static inline __m128i values_ssse3(__m128i v, int *bad) {
    const __m128i lower = _mm_setr_epi8(1, 1, 0x2b, 0x30, 0x41, 0x50, 0x61, 0x70, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m128i upper = _mm_setr_epi8(0, 0, 0x2b, 0x39, 0x4f, 0x5a, 0x6f, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m128i shift = _mm_setr_epi8(0, 0, 0x3e - 0x2b, 0x34 - 0x30, 0x00 - 0x41, 0x0f - 0x50, 0x1a - 0x61,
                                        0x29 - 0x70, 0, 0, 0, 0, 0, 0, 0, 0);
    __m128i nibble = _mm_and_si128(_mm_srli_epi32(v, 4), _mm_set1_epi8(0x0f));
    __m128i below = _mm_cmplt_epi8(v, _mm_shuffle_epi8(lower, nibble));
    __m128i above = _mm_cmpgt_epi8(v, _mm_shuffle_epi8(upper, nibble));
    __m128i slash = _mm_cmpeq_epi8(v, _mm_set1_epi8(0x2f));
    *bad = _mm_movemask_epi8(_mm_andnot_si128(slash, _mm_or_si128(below, above)));
    __m128i values = _mm_add_epi8(v, _mm_shuffle_epi8(shift, nibble));
    return _mm_add_epi8(values, _mm_and_si128(slash, _mm_set1_epi8(-3)));
}

/* Four 6-bit values per 32-bit lane into three bytes, in order, in the lane's low 24 bits. */
__attribute__((target("ssse3")))
static inline __m128i pack_ssse3(__m128i values) {
    __m128i pairs = _mm_maddubs_epi16(values, _mm_set1_epi32(0x01400140));
    __m128i lanes = _mm_madd_epi16(pairs, _mm_set1_epi32(0x00011000));
    return _mm_shuffle_epi8(lanes, _mm_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1));
}

__attribute__((target("ssse3")))
static size_t decode_ssse3(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    size_t i = 0, o = 0;
    /* A step writes 16 bytes, 12 of them decoded: it needs 4 bytes of room past them. */
    while (i + 16 <= n && o + 16 <= cap) {
        int bad;
        __m128i values = values_ssse3(_mm_loadu_si128((const __m128i *)(const void *)(in + i)), &bad);
        if (bad) break;
        _mm_storeu_si128((__m128i *)(void *)(out + o), pack_ssse3(values));
        i += 16;
        o += 12;
    }
    return i;
}

__attribute__((target("avx2")))
static size_t decode_avx2(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    const __m256i lower = _mm256_setr_epi8(1, 1, 0x2b, 0x30, 0x41, 0x50, 0x61, 0x70, 1, 1, 1, 1, 1, 1, 1, 1,
                                           1, 1, 0x2b, 0x30, 0x41, 0x50, 0x61, 0x70, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m256i upper = _mm256_setr_epi8(0, 0, 0x2b, 0x39, 0x4f, 0x5a, 0x6f, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0,
                                           0, 0, 0x2b, 0x39, 0x4f, 0x5a, 0x6f, 0x7a, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i shift = _mm256_setr_epi8(
        0, 0, 0x3e - 0x2b, 0x34 - 0x30, 0x00 - 0x41, 0x0f - 0x50, 0x1a - 0x61, 0x29 - 0x70, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0x3e - 0x2b, 0x34 - 0x30, 0x00 - 0x41, 0x0f - 0x50, 0x1a - 0x61, 0x29 - 0x70, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m256i order = _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
                                           2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    size_t i = 0, o = 0;
    /* 32 characters to 24 bytes; the store writes 32. */
    while (i + 32 <= n && o + 32 <= cap) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)(in + i));
        __m256i nibble = _mm256_and_si256(_mm256_srli_epi32(v, 4), _mm256_set1_epi8(0x0f));
        __m256i below = _mm256_cmpgt_epi8(_mm256_shuffle_epi8(lower, nibble), v);
        __m256i above = _mm256_cmpgt_epi8(v, _mm256_shuffle_epi8(upper, nibble));
        __m256i slash = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(0x2f));
        if (_mm256_movemask_epi8(_mm256_andnot_si256(slash, _mm256_or_si256(below, above)))) break;
        __m256i values = _mm256_add_epi8(v, _mm256_shuffle_epi8(shift, nibble));
        values = _mm256_add_epi8(values, _mm256_and_si256(slash, _mm256_set1_epi8(-3)));
        __m256i pairs = _mm256_maddubs_epi16(values, _mm256_set1_epi32(0x01400140));
        __m256i lanes = _mm256_madd_epi16(pairs, _mm256_set1_epi32(0x00011000));
        __m256i packed = _mm256_shuffle_epi8(lanes, order);
        /* Each lane holds 12 bytes at its start: close the gap between them. */
        packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7));
        _mm256_storeu_si256((__m256i *)(void *)(out + o), packed);
        i += 32;
        o += 24;
    }
    return i + decode_ssse3(in + i, n - i, out + o, cap - o);
}

static size_t decode_prefix(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int level) {
    switch (level) {
    case 0: return 0;
    case 1: return decode_ssse3(in, n, out, cap);
    default: return decode_avx2(in, n, out, cap);
    }
}
#else
static size_t decode_prefix(const uint8_t *in, size_t n, uint8_t *out, size_t cap, int level) {
    (void)in; (void)n; (void)out; (void)cap; (void)level;
    return 0;
}
#endif

/* The CPU's best level, found on the first call (two first calls at once store the same value). */
static int cpu_level(void) {
    static int cached = -1;
    int level = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (level < 0) {
        level = best_level();
        __atomic_store_n(&cached, level, __ATOMIC_RELAXED);
    }
    return level;
}

/* A level a test asks for, never above what the CPU runs. */
static int capped(int level) {
    int best = cpu_level();
    return level < best ? level : best;
}

int tcpgw_base64_best_level(void) {
    return cpu_level();
}

size_t tcpgw_base64_encode(const void *in, size_t n, void *out) {
    return chosen_encoder(cpu_level())((const uint8_t *)in, n, (uint8_t *)out);
}

size_t tcpgw_base64_encode_level(const void *in, size_t n, void *out, int level) {
    return chosen_encoder(capped(level))((const uint8_t *)in, n, (uint8_t *)out);
}

size_t tcpgw_base64_decode_prefix(const void *in, size_t n, void *out, size_t cap) {
    return decode_prefix((const uint8_t *)in, n, (uint8_t *)out, cap, cpu_level());
}

size_t tcpgw_base64_decode_prefix_level(const void *in, size_t n, void *out, size_t cap, int level) {
    return decode_prefix((const uint8_t *)in, n, (uint8_t *)out, cap, capped(level));
}
