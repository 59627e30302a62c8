#ifndef TCPGW_CLIBFUZZER_SHIM_H
#define TCPGW_CLIBFUZZER_SHIM_H
#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry for programs with their own main (linked by -sanitize=fuzzer). SwiftPM
   gives every executable target its own main, so the fuzz targets start libFuzzer with this. */
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

/* Each fuzz target defines this (@_cdecl), as libFuzzer expects. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#endif
