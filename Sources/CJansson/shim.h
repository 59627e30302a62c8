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

/* The byte scans of the long-string splice (tcpgw_plain_run, tcpgw_quote_or_backslash) are
   in CNetShim (scan.c): compiled there, they get the vector instructions. */
#endif
