#ifndef TCPGW_CJANSSON_SHIM_H
#define TCPGW_CJANSSON_SHIM_H
#include <jansson.h>

/* jansson's type tests and refcounting are macros or inline functions over
   json_t's fields; these wrappers give Swift plain functions to call. */
static inline json_type tcpgw_json_typeof(const json_t *json) { return json_typeof(json); }
static inline json_t *tcpgw_json_incref(json_t *json) { return json_incref(json); }
static inline void tcpgw_json_decref(json_t *json) { json_decref(json); }
static inline const char *tcpgw_json_error_text(const json_error_t *error) { return error->text; }
static inline int tcpgw_json_error_position(const json_error_t *error) { return error->position; }

/* Length of the run of "plain" bytes at p: printable ASCII other than '"' and '\\', i.e. what a
   JSON string may hold unescaped and verbatim (base64 and hex payloads). Eight bytes per step
   (SWAR): a byte is flagged when it is below 0x20, at or above 0x7F, or equals 0x22 or 0x5C. */
#include <stdint.h>
#include <string.h>
/* The high bit of each byte of v that equals c. */
static inline uint64_t tcpgw_byte_eq_mask(uint64_t v, unsigned char c) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t x = v ^ (ones * c);
    return (x - ones) & ~x & highs;
}

static inline size_t tcpgw_plain_run(const unsigned char *p, size_t n) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        uint64_t below20 = (v - ones * 0x20) & ~v & highs;        /* byte < 0x20 */
        uint64_t above7e = (v + ones * 0x01) & highs;              /* byte >= 0x7F (incl. >= 0x80) */
        above7e |= v & highs;
        if (below20 | above7e | tcpgw_byte_eq_mask(v, 0x22) | tcpgw_byte_eq_mask(v, 0x5C)) break;
    }
    while (i < n) {
        unsigned char c = p[i];
        if (c < 0x20 || c > 0x7E || c == 0x22 || c == 0x5C) break;
        i++;
    }
    return i;
}

/* Index of the first '"' or '\\' in p[0..n) (n when there is none): the string-aware walk over
   jansson's output that finds the splice's placeholders by position. */
static inline size_t tcpgw_quote_or_backslash(const unsigned char *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        if (tcpgw_byte_eq_mask(v, 0x22) | tcpgw_byte_eq_mask(v, 0x5C)) break;
    }
    while (i < n && p[i] != 0x22 && p[i] != 0x5C) i++;
    return i;
}
#endif
