/* STUB: replaced by the real implementation. */
#include "pylog.h"

uint32_t pl_crc32c(uint32_t crc, const uint8_t *buf, size_t len)
{ return PL_E_ARG; }

uint32_t pl_crc32c_portable(uint32_t crc, const uint8_t *buf, size_t len)
{ return PL_E_ARG; }

int pl_crc32c_hw_available(void)
{ return PL_E_ARG; }
