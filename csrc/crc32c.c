/*
 * crc32c.c -- CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
 * Kafka's v2 record batches.
 *
 * Contract: pl_crc32c(crc, buf, len) extends a finished CRC value `crc` (0 to start)
 * over len bytes and returns the finished value, so pl_crc32c(pl_crc32c(0, a), b) is
 * the CRC of a followed by b.  pl_crc32c(0, "123456789", 9) == 0xE3069283.
 *
 * Paths: x86-64 with SSE4.2 uses the crc32 instruction; aarch64 with the CRC
 * extension uses crc32c{b,d}; everything else uses slicing-by-8 tables.  The
 * hardware paths run three independent streams over consecutive blocks of
 * HW_BLOCK bytes (the instruction's latency is three times its issue interval, so
 * one stream leaves two thirds of it idle) and join them: the CRC register is linear,
 * so crc(A B C) = shift(shift(crc(A)) ^ crc_0(B)) ^ crc_0(C), where shift is the
 * update over HW_BLOCK zero bytes, a fixed linear map of 32 bits applied with four
 * 256-entry tables (shift_table, filled by the constructor).  The choice is
 * made once, in a load-time constructor, from the CPU's feature bits, so one binary
 * runs on every CPU of its platform.  All paths give identical results.  Input bytes
 * are read with memcpy (no unaligned loads).
 */
#include <string.h>

#include "pylog.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PL_CRC_X86 1
#include <nmmintrin.h>
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define PL_CRC_ARM 1
#include <arm_acle.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
#endif
#endif

#define CRC32C_POLY 0x82F63B78u

static uint32_t table[8][256]; /* slicing-by-8, filled by the constructor */
static int hw_in_use;          /* 1 when the CPU's CRC instructions are used */

/* Bytes per stream of the three-stream hardware loop (a multiple of 8). */
#define HW_BLOCK 1024u
/* shift_table[k][b]: the raw CRC register b << 8k updated over HW_BLOCK zero bytes. */
static uint32_t shift_table[4][256];

/* The raw (not inverted) register c updated over n zero bytes, one byte a step. */
static uint32_t raw_zeros(uint32_t c, size_t n)
{
    while (n--)
        c = table[0][c & 0xff] ^ (c >> 8);
    return c;
}

/* The raw register c updated over HW_BLOCK zero bytes (a linear map: by tables). */
static inline uint32_t shift_block(uint32_t c)
{
    return shift_table[0][c & 0xff] ^ shift_table[1][(c >> 8) & 0xff] ^
           shift_table[2][(c >> 16) & 0xff] ^ shift_table[3][c >> 24];
}

static void fill_shift_table(void)
{
    uint32_t basis[32]; /* the map applied to each single bit */
    for (int bit = 0; bit < 32; bit++)
        basis[bit] = raw_zeros((uint32_t)1 << bit, HW_BLOCK);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int i = 0; i < 8; i++)
                if (b & (1u << i))
                    v ^= basis[8 * k + i];
            shift_table[k][b] = v;
        }
}

__attribute__((constructor)) static void crc32c_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int t = 1; t < 8; t++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[t][n] = c;
        }
    }
    fill_shift_table();
#if defined(PL_CRC_X86)
    __builtin_cpu_init();
    hw_in_use = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#elif defined(PL_CRC_ARM) && defined(__APPLE__)
    hw_in_use = 1; /* every Apple arm64 CPU has the CRC extension */
#elif defined(PL_CRC_ARM) && defined(__linux__)
    hw_in_use = (getauxval(AT_HWCAP) & HWCAP_CRC32) ? 1 : 0;
#else
    hw_in_use = 0;
#endif
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

uint32_t pl_crc32c_portable(uint32_t crc, const uint8_t *buf, size_t len)
{
    uint32_t c = ~crc;
    if (buf == NULL)
        return crc;
    while (len >= 8) {
        uint64_t w = load_le64(buf) ^ c;
        c = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
            table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
            table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        buf += 8;
        len -= 8;
    }
    while (len--)
        c = table[0][(c ^ *buf++) & 0xff] ^ (c >> 8);
    return ~c;
}

#if defined(PL_CRC_X86)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *buf,
                                                             size_t len)
{
    uint64_t c = (uint32_t)~crc;
    while (len >= 3 * HW_BLOCK) { /* three streams, joined (see the top) */
        uint64_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < HW_BLOCK; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, buf + i, 8);
            memcpy(&w1, buf + HW_BLOCK + i, 8);
            memcpy(&w2, buf + 2 * HW_BLOCK + i, 8);
            c = _mm_crc32_u64(c, w0);
            c1 = _mm_crc32_u64(c1, w1);
            c2 = _mm_crc32_u64(c2, w2);
        }
        c = shift_block(shift_block((uint32_t)c) ^ (uint32_t)c1) ^ (uint32_t)c2;
        buf += 3 * HW_BLOCK;
        len -= 3 * HW_BLOCK;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, buf, 8);
        c = _mm_crc32_u64(c, w);
        buf += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = _mm_crc32_u8(c32, *buf++);
    return ~c32;
}
#elif defined(PL_CRC_ARM)
__attribute__((target("+crc"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *buf,
                                                           size_t len)
{
    uint32_t c = ~crc;
    while (len >= 3 * HW_BLOCK) { /* three streams, joined (see the top) */
        uint32_t c1 = 0, c2 = 0;
        for (size_t i = 0; i < HW_BLOCK; i += 8) {
            uint64_t w0, w1, w2;
            memcpy(&w0, buf + i, 8);
            memcpy(&w1, buf + HW_BLOCK + i, 8);
            memcpy(&w2, buf + 2 * HW_BLOCK + i, 8);
            c = __crc32cd(c, w0);
            c1 = __crc32cd(c1, w1);
            c2 = __crc32cd(c2, w2);
        }
        c = shift_block(shift_block(c) ^ c1) ^ c2;
        buf += 3 * HW_BLOCK;
        len -= 3 * HW_BLOCK;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, buf, 8);
        c = __crc32cd(c, w);
        buf += 8;
        len -= 8;
    }
    while (len--)
        c = __crc32cb(c, *buf++);
    return ~c;
}
#endif

uint32_t pl_crc32c(uint32_t crc, const uint8_t *buf, size_t len)
{
    if (buf == NULL)
        return crc;
#if defined(PL_CRC_X86) || defined(PL_CRC_ARM)
    if (hw_in_use)
        return crc32c_hw(crc, buf, len);
#endif
    return pl_crc32c_portable(crc, buf, len);
}

int pl_crc32c_hw_available(void)
{
    return hw_in_use;
}
