/*
 * crc32c.c -- CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
 * Kafka's v2 record batches.
 *
 * Contract: pl_crc32c(crc, buf, len) extends a finished CRC value `crc` (0 to start)
 * over len bytes and returns the finished value, so pl_crc32c(pl_crc32c(0, a), b) is
 * the CRC of a followed by b.  pl_crc32c(0, "123456789", 9) == 0xE3069283.
 *
 * Paths (PL_CRC32C_* in pylog.h; pl_crc32c_with runs one by name, for tests):
 *
 *  - portable: slicing-by-8 tables, everywhere.
 *  - hw: x86-64 with SSE4.2 uses the crc32 instruction; aarch64 with the CRC extension
 *    uses crc32c{b,d}.  Three independent streams run over consecutive blocks of
 *    HW_BLOCK bytes (the instruction's latency is three times its issue interval, so
 *    one stream leaves two thirds of it idle) and are joined: the CRC register is
 *    linear, so crc(A B C) = shift(shift(crc(A)) ^ crc_0(B)) ^ crc_0(C), where shift
 *    is the update over HW_BLOCK zero bytes, a fixed linear map of 32 bits applied
 *    with four 256-entry tables (shift_table, filled by the constructor).
 *  - fold128 / fold256 (x86-64 with PCLMULQDQ, resp. VPCLMULQDQ and AVX2, and SSE4.2),
 *    where they beat hw (FOLD256_MIN, FOLD128_MIN): carry-less multiplication folds the
 *    buffer.  Four accumulators of 16 (32) bytes hold the message read so far,
 *    reduced to a polynomial congruent to it modulo P; each step multiplies an
 *    accumulator by x^D mod P (D = the distance to the next bytes it takes in, 64 or
 *    128 bytes) and XORs those bytes in.  At the end the accumulators are folded onto
 *    one 16-byte lane, and the crc32 instruction finishes: from a zero register it
 *    computes (M x^32) mod P of those 16 bytes, then goes on over the tail.  The
 *    constants are computed by the constructor (fold_constant says why they are what
 *    they are).
 *  - fold512 (x86-64 with AVX-512 and VPCLMULQDQ): fold256 on 64-byte registers, four
 *    accumulators, 256 bytes a step; at the end the four are folded onto one, its
 *    halves onto one 32-byte register, and that as fold256's end.  Measured on this
 *    project's Xeon VM (each path run by name): 73 GB/s on 110 KB in the cache against
 *    60 for hybrid and 56 for fold256, and no slower than them from memory.
 *  - hybrid (CPUs with fold256), for inputs of at least HYB_BLOCK bytes: fold256 and
 *    three crc32 streams in one loop, over different parts of each block.  The two
 *    kinds of instruction run on different execution units, so together they go
 *    faster than either alone (measured on AMD Zen 3: about 1.4 times fold256, which
 *    is itself about 1.3 times hw, on data in the L2 cache).  The parts
 *    are joined by linearity, moving a register over n zero bytes by one carry-less
 *    multiplication and one crc32 instruction (shift_constant).
 *
 * pl_crc32c takes the fold512, hybrid, fold256 or fold128, hw, portable path: the
 * first this CPU has that suits the length.
 *
 * The choice is made once, in a load-time constructor, from the CPU's feature bits,
 * so one binary runs on every CPU of its platform.  All paths give identical results.
 * Input bytes are read with memcpy or the unaligned-load intrinsics (loadu), never
 * through a cast pointer that assumes alignment.
 */
#include <assert.h>
#include <string.h>

#include "pylog.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PL_CRC_X86 1
#include <immintrin.h>
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
static int fold_in_use;        /* PL_CRC32C_FOLD256, PL_CRC32C_FOLD128 or 0 (none) */
static int fold128_ok;         /* the CPU can run the fold128 path (tests run it by name) */
static int fold512_ok;         /* the CPU (and OS) can run fold512 */

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

#if defined(PL_CRC_X86)
/* Where the folds beat hw (measured on AMD Zen 3, each path run by name): fold256
 * from 256 bytes on; fold128 from 512 bytes up to where hw's three streams start
 * (3 * HW_BLOCK), above which hw is faster (PCLMULQDQ issues every other cycle). */
#define FOLD256_MIN 256u
#define FOLD128_MIN 512u

/* Folding constants, as carry-less multiplication operands (fold_constant): k[0]
 * multiplies the first 8 bytes of a 16-byte lane, k[1] the last 8; the pair repeats
 * for a 256-bit register's second lane.  The suffix is the distance D in bytes. */
static uint64_t fold_k16[4];  /* one lane onto the next */
static uint64_t fold_k32[4];  /* one 256-bit accumulator onto the next */
static uint64_t fold_k64[4];  /* fold128's step (4 x 16 bytes) */
static uint64_t fold_k128[4]; /* fold256's step (4 x 32 bytes) */
static uint64_t fold_k256[8]; /* fold512's step (4 x 64 bytes), four lanes' worth */
static uint64_t fold_k64x4[8]; /* one 512-bit accumulator onto the next */

/* The hybrid path's block (crc32c_hybrid): HYB_STEPS fold256 steps over its first
 * HYB_FOLD_BYTES, and alongside each step HYB_LANE_BYTES more of each of three crc32
 * streams over the HYB_STREAM_BYTES that follow, one after the other. */
#define HYB_STEPS 32u
#define HYB_LANE_BYTES 32u
#define HYB_FOLD_BYTES (HYB_STEPS * 128u)
#define HYB_STREAM_BYTES (HYB_STEPS * HYB_LANE_BYTES)
#define HYB_BLOCK (HYB_FOLD_BYTES + 3u * HYB_STREAM_BYTES)
_Static_assert(HYB_LANE_BYTES % 8 == 0 && HYB_STREAM_BYTES >= 5, "crc32 streams take 8-byte words");
/* shift_by operands (shift_constant) moving a register over n zero bytes, for
 * n = 1, 2 and 3 streams and for a whole block. */
static uint64_t hyb_k1, hyb_k2, hyb_k3, hyb_kblock;

/* x^e mod P in the reflected 32-bit form of a CRC register (bit i = coefficient of
 * x^(31-i)): multiplying by x shifts right, and an x^32 that falls out is replaced by
 * P - x^32 (the reflected polynomial). */
static uint32_t xpow_mod(uint32_t e)
{
    uint32_t r = 0x80000000u; /* x^0 */
    while (e--)
        r = (r >> 1) ^ ((r & 1) ? CRC32C_POLY : 0);
    return r;
}

/* The constants that fold a 16-byte lane forward by D bytes (d = 8 D bits).
 *
 * Loaded little-endian, a 16-byte lane is a reflected 128-bit polynomial: bit k is
 * the coefficient of x^(127-k), so its first 8 bytes are H x^64 and its last 8 are L,
 * each a reflected 64-bit polynomial.  Moving it d bits forward means multiplying by
 * x^d, and modulo P: X x^d = H x^(64+d) + L x^d == H (x^(64+d) mod P) + L (x^d mod P).
 * PCLMULQDQ multiplies two reflected 64-bit operands into a 127-bit product whose bit
 * k is the coefficient of x^(126-k); read as a 128-bit lane, that is the product times
 * x.  So the constants are x^(63+d) mod P and x^(d-1) mod P, each a 32-bit register
 * value moved to the top of a 64-bit operand (bit i -> i + 32, so that bit j stands
 * for x^(63-j)).  Their products have degree < 96: no reduction is needed until the
 * end. */
static void fold_constant(uint64_t k[4], uint32_t bytes)
{
    uint32_t d = 8u * bytes;
    k[0] = k[2] = (uint64_t)xpow_mod(63u + d) << 32;
    k[1] = k[3] = (uint64_t)xpow_mod(d - 1u) << 32;
}

/* The operand with which shift_by moves a raw register over n >= 5 zero bytes.
 *
 * A register value a (bit i = coefficient of x^(31-i)) and k = x^e mod P, both in
 * the low 32 bits of 64-bit operands, multiply carry-lessly into a 63-bit product
 * whose bit m is the coefficient of x^(62-m).  The crc32 instruction over 8 bytes
 * from a zero register reads bit m of its operand as the coefficient of x^(63-m) and
 * returns (that polynomial) x^32 mod P: here a k x^33 mod P.  Moving a over n zero
 * bytes is multiplying it by x^(8n): so e = 8n - 33. */
static uint64_t shift_constant(uint32_t n)
{
    assert(n >= 5);
    return xpow_mod(8u * n - 33u);
}

static void fill_fold_constants(void)
{
    hyb_k1 = shift_constant(HYB_STREAM_BYTES);
    hyb_k2 = shift_constant(2u * HYB_STREAM_BYTES);
    hyb_k3 = shift_constant(3u * HYB_STREAM_BYTES);
    hyb_kblock = shift_constant(HYB_BLOCK);
    fold_constant(fold_k16, 16);
    fold_constant(fold_k32, 32);
    fold_constant(fold_k64, 64);
    fold_constant(fold_k128, 128);
    fold_constant(fold_k256, 256);
    fold_constant(fold_k256 + 4, 256);
    fold_constant(fold_k64x4, 64);
    fold_constant(fold_k64x4 + 4, 64);
}
#endif

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
    fill_fold_constants();
    fold128_ok = hw_in_use && __builtin_cpu_supports("pclmul");
    /* avx2 also says the OS saves the YMM registers (libgcc checks XCR0) */
    if (fold128_ok && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("vpclmulqdq"))
        fold_in_use = PL_CRC32C_FOLD256;
    else if (fold128_ok)
        fold_in_use = PL_CRC32C_FOLD128;
    /* avx512f also says the OS saves the ZMM and mask registers (libgcc checks XCR0) */
    fold512_ok = fold_in_use == PL_CRC32C_FOLD256 && __builtin_cpu_supports("avx512f") &&
                 __builtin_cpu_supports("avx512vl");
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
/* The raw register c taken over the len bytes at p, eight at a time, then finished. */
__attribute__((target("sse4.2")))
static inline uint32_t hw_finish(uint64_t c, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        len -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (len--)
        c32 = _mm_crc32_u8(c32, *p++);
    return ~c32;
}

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
    return hw_finish(c, buf, len);
}

#define FOLD128_TARGET "sse4.2,pclmul"
#define FOLD256_TARGET "sse4.2,pclmul,avx2,vpclmulqdq"

/* Bytes one fold256 step takes in (four 32-byte accumulators). */
#define FOLD256_STEP 128u

__attribute__((target(FOLD128_TARGET)))
static inline __m128i fold_load16(const void *p)
{
    return _mm_loadu_si128((const __m128i_u *)p);
}

__attribute__((target(FOLD256_TARGET)))
static inline __m256i fold_load32(const void *p)
{
    return _mm256_loadu_si256((const __m256i_u *)p);
}

/* The 16-byte lane x moved forward by the distance of k, modulo P. */
__attribute__((target(FOLD128_TARGET)))
static inline __m128i fold16(__m128i x, __m128i k)
{
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* Both lanes of x moved forward by the distance of k, modulo P. */
__attribute__((target(FOLD256_TARGET)))
static inline __m256i fold32(__m256i x, __m256i k)
{
    return _mm256_xor_si256(_mm256_clmulepi64_epi128(x, k, 0x00),
                            _mm256_clmulepi64_epi128(x, k, 0x11));
}

/* The finished CRC of a message that reduced to the lane x (its register taken in
 * at the start) followed by the len < 16 bytes at p. */
__attribute__((target(FOLD128_TARGET)))
static inline uint32_t fold_finish(__m128i x, const uint8_t *p, size_t len)
{
    assert(len < 16);
    uint64_t c = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(x));
    c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(x, 1));
    return hw_finish(c, p, len);
}

/* The finished CRC of a message that reduced to the lane x followed by the len bytes
 * at p: whole 16-byte lanes folded in, then fold_finish. */
__attribute__((target(FOLD128_TARGET)))
static inline uint32_t fold_tail(__m128i x, const uint8_t *p, size_t len)
{
    const __m128i k16 = fold_load16(fold_k16);
    while (len >= 16) {
        x = _mm_xor_si128(fold16(x, k16), fold_load16(p));
        p += 16;
        len -= 16;
    }
    return fold_finish(x, p, len);
}

/* fold256 state: the four accumulators. */
typedef struct fold256_state {
    __m256i y[4];
} fold256_state;

/* Starts a CRC over the FOLD256_STEP bytes at p, extending the finished value crc
 * (0 to start): the register ~crc acts on the message only as an XOR into its first
 * 4 bytes. */
__attribute__((target(FOLD256_TARGET)))
static inline void fold256_begin(fold256_state *s, uint32_t crc, const uint8_t *p)
{
    __m256i reg = _mm256_inserti128_si256(_mm256_setzero_si256(), _mm_cvtsi32_si128((int)~crc), 0);
    s->y[0] = _mm256_xor_si256(fold_load32(p), reg);
    s->y[1] = fold_load32(p + 32);
    s->y[2] = fold_load32(p + 64);
    s->y[3] = fold_load32(p + 96);
}

/* Takes in the next FOLD256_STEP bytes, at p. */
__attribute__((target(FOLD256_TARGET)))
static inline void fold256_step(fold256_state *s, const uint8_t *p)
{
    const __m256i k = fold_load32(fold_k128);
    s->y[0] = _mm256_xor_si256(fold32(s->y[0], k), fold_load32(p));
    s->y[1] = _mm256_xor_si256(fold32(s->y[1], k), fold_load32(p + 32));
    s->y[2] = _mm256_xor_si256(fold32(s->y[2], k), fold_load32(p + 64));
    s->y[3] = _mm256_xor_si256(fold32(s->y[3], k), fold_load32(p + 96));
}

/* The finished CRC: the state followed by the len < FOLD256_STEP bytes at p. */
__attribute__((target(FOLD256_TARGET)))
static inline uint32_t fold256_end(const fold256_state *s, const uint8_t *p, size_t len)
{
    assert(len < FOLD256_STEP);
    const __m256i k32 = fold_load32(fold_k32);
    const __m128i k16 = fold_load16(fold_k16);
    __m256i y = _mm256_xor_si256(s->y[1], fold32(s->y[0], k32));
    y = _mm256_xor_si256(s->y[2], fold32(y, k32));
    y = _mm256_xor_si256(s->y[3], fold32(y, k32));
    __m128i x = _mm_xor_si128(_mm256_extracti128_si256(y, 1),
                              fold16(_mm256_castsi256_si128(y), k16));
    return fold_tail(x, p, len);
}

/* fold128 (see the top): four 16-byte accumulators, 64 bytes a step. */
__attribute__((target(FOLD128_TARGET)))
static uint32_t crc32c_fold128(uint32_t crc, const uint8_t *buf, size_t len)
{
    assert(len >= 64);
    const __m128i k64 = fold_load16(fold_k64), k16 = fold_load16(fold_k16);
    __m128i x0 = _mm_xor_si128(fold_load16(buf), _mm_cvtsi32_si128((int)~crc));
    __m128i x1 = fold_load16(buf + 16), x2 = fold_load16(buf + 32), x3 = fold_load16(buf + 48);
    buf += 64;
    len -= 64;
    while (len >= 64) {
        x0 = _mm_xor_si128(fold16(x0, k64), fold_load16(buf));
        x1 = _mm_xor_si128(fold16(x1, k64), fold_load16(buf + 16));
        x2 = _mm_xor_si128(fold16(x2, k64), fold_load16(buf + 32));
        x3 = _mm_xor_si128(fold16(x3, k64), fold_load16(buf + 48));
        buf += 64;
        len -= 64;
    }
    x1 = _mm_xor_si128(x1, fold16(x0, k16));
    x2 = _mm_xor_si128(x2, fold16(x1, k16));
    x3 = _mm_xor_si128(x3, fold16(x2, k16));
    return fold_tail(x3, buf, len);
}

/* fold256 (see the top): four 32-byte accumulators, 128 bytes a step. */
__attribute__((target(FOLD256_TARGET)))
static uint32_t crc32c_fold256(uint32_t crc, const uint8_t *buf, size_t len)
{
    assert(len >= FOLD256_STEP);
    fold256_state s;
    fold256_begin(&s, crc, buf);
    buf += FOLD256_STEP;
    len -= FOLD256_STEP;
    while (len >= FOLD256_STEP) {
        fold256_step(&s, buf);
        buf += FOLD256_STEP;
        len -= FOLD256_STEP;
    }
    return fold256_end(&s, buf, len);
}

#define FOLD512_TARGET "sse4.2,pclmul,avx2,vpclmulqdq,avx512f,avx512vl"

/* Bytes one fold512 step takes in (four 64-byte accumulators). */
#define FOLD512_STEP 256u

/* All four lanes of x moved forward by the distance of k, XORed with d (one
 * three-way XOR: ternary logic 0x96). */
__attribute__((target(FOLD512_TARGET)))
static inline __m512i fold64x4_xor(__m512i x, __m512i k, __m512i d)
{
    return _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x, k, 0x00),
                                     _mm512_clmulepi64_epi128(x, k, 0x11), d, 0x96);
}

/* fold512 (see the top): four 64-byte accumulators, 256 bytes a step; at the end
 * they are folded onto one 64-byte register, its halves onto one 32-byte register
 * and that onto one lane (as fold256_end). */
__attribute__((target(FOLD512_TARGET)))
static uint32_t crc32c_fold512(uint32_t crc, const uint8_t *buf, size_t len)
{
    assert(len >= FOLD512_STEP);
    const __m512i k256 = _mm512_loadu_si512((const void *)fold_k256);
    __m512i z0 = _mm512_xor_si512(_mm512_loadu_si512((const void *)buf),
                                  _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)~crc)));
    __m512i z1 = _mm512_loadu_si512((const void *)(buf + 64));
    __m512i z2 = _mm512_loadu_si512((const void *)(buf + 128));
    __m512i z3 = _mm512_loadu_si512((const void *)(buf + 192));
    buf += FOLD512_STEP;
    len -= FOLD512_STEP;
    while (len >= FOLD512_STEP) {
        z0 = fold64x4_xor(z0, k256, _mm512_loadu_si512((const void *)buf));
        z1 = fold64x4_xor(z1, k256, _mm512_loadu_si512((const void *)(buf + 64)));
        z2 = fold64x4_xor(z2, k256, _mm512_loadu_si512((const void *)(buf + 128)));
        z3 = fold64x4_xor(z3, k256, _mm512_loadu_si512((const void *)(buf + 192)));
        buf += FOLD512_STEP;
        len -= FOLD512_STEP;
    }
    const __m512i k64 = _mm512_loadu_si512((const void *)fold_k64x4);
    z1 = fold64x4_xor(z0, k64, z1);
    z2 = fold64x4_xor(z1, k64, z2);
    z3 = fold64x4_xor(z2, k64, z3);
    __m256i y = _mm256_xor_si256(_mm512_extracti64x4_epi64(z3, 1),
                                 fold32(_mm512_castsi512_si256(z3), fold_load32(fold_k32)));
    __m128i x = _mm_xor_si128(_mm256_extracti128_si256(y, 1),
                              fold16(_mm256_castsi256_si128(y), fold_load16(fold_k16)));
    return fold_tail(x, buf, len);
}

/* The raw register a moved over the zero bytes of the shift_constant k. */
__attribute__((target(FOLD128_TARGET)))
static inline uint32_t shift_by(uint32_t a, uint64_t k)
{
    __m128i p = _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)a), _mm_cvtsi64_si128((long long)k),
                                     0x00);
    return (uint32_t)_mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(p));
}

/* hybrid (see the top): blocks of HYB_BLOCK bytes, each folded by fold256 over its
 * first part while three crc32 streams take in the rest, the two kinds of
 * instruction running on different units; each block's raw register is computed from
 * zero and joined by linearity: raw(R B) = shift(R, |B|) ^ raw_0(B), and within the
 * block raw_0(F S0 S1 S2) = shift(F, 3s) ^ shift(S0, 2s) ^ shift(S1, s) ^ S2 with s =
 * HYB_STREAM_BYTES.  What is left after the last whole block goes to fold256 / hw. */
__attribute__((target(FOLD256_TARGET)))
static uint32_t crc32c_hybrid(uint32_t crc, const uint8_t *buf, size_t len)
{
    assert(len >= HYB_BLOCK);
    uint32_t r = ~crc;
    while (len >= HYB_BLOCK) {
        const uint8_t *s = buf + HYB_FOLD_BYTES;
        fold256_state f;
        fold256_begin(&f, 0xFFFFFFFFu, buf); /* a zero raw register */
        uint64_t c0 = 0, c1 = 0, c2 = 0;
        for (uint32_t j = 0;;) {
            for (uint32_t m = 0; m < HYB_LANE_BYTES; m += 8) {
                uint64_t w0, w1, w2;
                memcpy(&w0, s + m, 8);
                memcpy(&w1, s + HYB_STREAM_BYTES + m, 8);
                memcpy(&w2, s + 2 * HYB_STREAM_BYTES + m, 8);
                c0 = _mm_crc32_u64(c0, w0);
                c1 = _mm_crc32_u64(c1, w1);
                c2 = _mm_crc32_u64(c2, w2);
            }
            s += HYB_LANE_BYTES;
            if (++j == HYB_STEPS)
                break;
            fold256_step(&f, buf + FOLD256_STEP * j);
        }
        uint32_t rf = ~fold256_end(&f, buf + HYB_FOLD_BYTES, 0);
        uint32_t block = shift_by(rf, hyb_k3) ^ shift_by((uint32_t)c0, hyb_k2) ^
                         shift_by((uint32_t)c1, hyb_k1) ^ (uint32_t)c2;
        r = shift_by(r, hyb_kblock) ^ block;
        buf += HYB_BLOCK;
        len -= HYB_BLOCK;
    }
    if (len >= FOLD256_MIN)
        return crc32c_fold256(~r, buf, len);
    return crc32c_hw(~r, buf, len);
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
#if defined(PL_CRC_X86)
    if (fold512_ok && len >= FOLD512_STEP)
        return crc32c_fold512(crc, buf, len);
    if (fold_in_use == PL_CRC32C_FOLD256 && len >= HYB_BLOCK)
        return crc32c_hybrid(crc, buf, len);
    if (fold_in_use == PL_CRC32C_FOLD256 && len >= FOLD256_MIN)
        return crc32c_fold256(crc, buf, len);
    if (fold_in_use == PL_CRC32C_FOLD128 && len >= FOLD128_MIN && len < 3 * HW_BLOCK)
        return crc32c_fold128(crc, buf, len);
#endif
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

int pl_crc32c_path_available(int path)
{
    switch (path) {
    case PL_CRC32C_PORTABLE:
        return 1;
    case PL_CRC32C_HW:
        return hw_in_use;
    case PL_CRC32C_FOLD128:
        return fold128_ok;
    case PL_CRC32C_FOLD256:
    case PL_CRC32C_HYBRID:
        return fold_in_use == PL_CRC32C_FOLD256;
    case PL_CRC32C_FOLD512:
        return fold512_ok;
    default:
        return 0;
    }
}

int pl_crc32c_with(int path, uint32_t crc, const uint8_t *buf, size_t len, uint32_t *out)
{
    if (out == NULL || (buf == NULL && len > 0) || !pl_crc32c_path_available(path))
        return PL_E_ARG;
    if (len == 0) {
        *out = crc;
        return PL_OK;
    }
    switch (path) {
#if defined(PL_CRC_X86)
    case PL_CRC32C_FOLD256:
        *out = len >= FOLD256_STEP ? crc32c_fold256(crc, buf, len) : crc32c_hw(crc, buf, len);
        return PL_OK;
    case PL_CRC32C_HYBRID:
        *out = len >= HYB_BLOCK ? crc32c_hybrid(crc, buf, len) : crc32c_hw(crc, buf, len);
        return PL_OK;
    case PL_CRC32C_FOLD512:
        *out = len >= FOLD512_STEP ? crc32c_fold512(crc, buf, len) : crc32c_hw(crc, buf, len);
        return PL_OK;
    case PL_CRC32C_FOLD128:
        *out = len >= 64 ? crc32c_fold128(crc, buf, len) : crc32c_hw(crc, buf, len);
        return PL_OK;
#endif
#if defined(PL_CRC_X86) || defined(PL_CRC_ARM)
    case PL_CRC32C_HW:
        *out = crc32c_hw(crc, buf, len);
        return PL_OK;
#endif
    default:
        *out = pl_crc32c_portable(crc, buf, len);
        return PL_OK;
    }
}
