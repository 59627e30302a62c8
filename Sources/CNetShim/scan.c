/* Byte scans over JSON text that run over every payload byte: the long-string splice
   (JSONRPC's LongStringSplice) finds where a base64 or hex string ends with these. Sixteen bytes
   per step with SSE2 (every x86-64), else eight at a time in a 64-bit word. */
#include "CNetShim.h"

#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* The high bit of each byte of v that equals c. */
static inline uint64_t byte_eq_mask(uint64_t v, unsigned char c) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t x = v ^ (ones * c);
    return (x - ones) & ~x & highs;
}

size_t tcpgw_plain_run(const unsigned char *p, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    /* As signed bytes, "below 0x20" also catches every byte from 0x80 up. */
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        __m128i odd = _mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)), _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f)));
        odd = _mm_or_si128(odd, _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(0x22)), _mm_cmpeq_epi8(v, _mm_set1_epi8(0x5c))));
        int mask = _mm_movemask_epi8(odd);
        if (mask) return i + (size_t)__builtin_ctz((unsigned)mask);
    }
#endif
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        uint64_t below20 = (v - ones * 0x20) & ~v & highs; /* byte < 0x20 (borrows only overflag) */
        uint64_t above7e = ((v + ones) | v) & highs;        /* byte >= 0x7F */
        if (below20 | above7e | byte_eq_mask(v, 0x22) | byte_eq_mask(v, 0x5C)) break;
    }
    /* A flagged word is settled byte by byte, so a borrow or carry between bytes costs time only. */
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x20 || c > 0x7E || c == 0x22 || c == 0x5C) break;
        i++;
    }
    return i;
}

size_t tcpgw_quote_or_backslash(const unsigned char *p, size_t n) {
    size_t i = 0;
#if defined(__SSE2__)
    for (; i + 16 <= n; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(p + i));
        int mask = _mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8(0x22)), _mm_cmpeq_epi8(v, _mm_set1_epi8(0x5c))));
        if (mask) return i + (size_t)__builtin_ctz((unsigned)mask);
    }
#endif
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        if (byte_eq_mask(v, 0x22) | byte_eq_mask(v, 0x5C)) break;
    }
    while (i < n && p[i] != 0x22 && p[i] != 0x5C) i++;
    return i;
}
