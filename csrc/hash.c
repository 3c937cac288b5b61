/*
 * hash.c -- murmur2 as Kafka's Java client computes it, so that a keyed record lands
 * on the partition a Java producer would choose for the same key.
 *
 * Contract: pl_murmur2(data, len) equals org.apache.kafka.common.utils.Utils.murmur2
 * for the same bytes (MurmurHash2, 32-bit, seed 0x9747b28c, key read as
 * little-endian 4-byte words, Java's int arithmetic), returned as a signed 32-bit
 * value exactly as Java returns it.  Java's DefaultPartitioner / BuiltInPartitioner
 * then takes
 *
 *     partition = (murmur2(key) & 0x7fffffff) % num_partitions      (toPositive)
 *
 * which pl_murmur2_partitions applies.  Known values (Kafka's UtilsTest):
 * murmur2("21") = -973932308, murmur2("foobar") = -790332482, murmur2("") = 275646681.
 *
 * The batch forms hash `count` keys that lie in one buffer: either joined end to end
 * from position 0 (positions == NULL) or at positions[i] (as pl_records_decode's
 * key_pos/key_len columns).  lens[i] == -1 is a null key.  Every key is bounds-checked
 * against buf_len before anything is written to out: on an error status out is
 * untouched.  Arithmetic is done on uint32_t (wrapping, defined), and input bytes are
 * read one by one (no unaligned loads, no dependence on host byte order).
 */
#include "pylog.h"

#define MURMUR2_SEED 0x9747b28cu
#define MURMUR2_M    0x5bd1e995u
#define MURMUR2_R    24

int32_t pl_murmur2(const uint8_t *data, size_t len)
{
    /* Java arrays hold at most 2^31 - 1 bytes; the length enters the seed as an int. */
    uint32_t h = MURMUR2_SEED ^ (uint32_t)len;

    /* Pointer arithmetic on data only when it points at len > 0 bytes: NULL + 0 is
     * undefined in C.  NULL with len > 0 is a caller error: nothing is read, 0. */
    if (data == NULL && len > 0)
        return 0;
    size_t words = len / 4;
    size_t rest = len & 3u;
    for (size_t i = 0; i < words; i++) {
        const uint8_t *p = data + 4 * i;
        uint32_t k = (uint32_t)p[0] | ((uint32_t)p[1] << 8) |
                     ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        k *= MURMUR2_M;
        k ^= k >> MURMUR2_R;
        k *= MURMUR2_M;
        h *= MURMUR2_M;
        h ^= k;
    }

    if (rest > 0) {
        const uint8_t *tail = data + 4 * words;
        if (rest == 3)
            h ^= (uint32_t)tail[2] << 16;
        if (rest >= 2)
            h ^= (uint32_t)tail[1] << 8;
        h ^= (uint32_t)tail[0];
        h *= MURMUR2_M;
    }

    h ^= h >> 13;
    h *= MURMUR2_M;
    h ^= h >> 15;
    /* Two's-complement reinterpretation, written without an implementation-defined
     * conversion of a value above INT32_MAX. */
    return h <= (uint32_t)INT32_MAX ? (int32_t)h : -(int32_t)(~h) - 1;
}

/* Checks every key of a batch call; PL_OK when all lie within buf. */
static int check_keys(const uint8_t *buf, uint64_t buf_len, const int64_t *positions,
                      const int32_t *lens, uint32_t count, const int32_t *out)
{
    if (count == 0)
        return PL_OK;
    if (lens == NULL || out == NULL)
        return PL_E_ARG;
    uint64_t joined_end = 0; /* end of the previous key when positions == NULL */
    for (uint32_t i = 0; i < count; i++) {
        int32_t n = lens[i];
        if (n < -1)
            return PL_E_ARG;
        if (n == -1)
            continue;
        uint64_t start;
        if (positions != NULL) {
            if (positions[i] < 0)
                return PL_E_ARG;
            start = (uint64_t)positions[i];
        } else {
            start = joined_end;
        }
        if (start > buf_len || (uint64_t)n > buf_len - start)
            return PL_E_ARG;
        if (n > 0 && buf == NULL)
            return PL_E_ARG;
        joined_end = start + (uint64_t)n;
    }
    return PL_OK;
}

/* Hashes the (already checked) keys; num_partitions == 0 means raw hashes. */
static void hash_keys(const uint8_t *buf, const int64_t *positions, const int32_t *lens,
                      uint32_t count, int32_t num_partitions, int32_t *out)
{
    static const uint8_t empty[1] = {0};
    uint64_t joined_end = 0;
    for (uint32_t i = 0; i < count; i++) {
        int32_t n = lens[i];
        if (n == -1) {
            out[i] = num_partitions > 0 ? -1 : 0;
            continue;
        }
        uint64_t start = positions != NULL ? (uint64_t)positions[i] : joined_end;
        const uint8_t *key = n > 0 ? buf + start : empty;
        int32_t h = pl_murmur2(key, (size_t)n);
        if (num_partitions > 0)
            out[i] = (int32_t)(((uint32_t)h & 0x7fffffffu) % (uint32_t)num_partitions);
        else
            out[i] = h;
        joined_end = start + (uint64_t)n;
    }
}

int pl_murmur2_batch(const uint8_t *buf, uint64_t buf_len, const int64_t *positions,
                     const int32_t *lens, uint32_t count, int32_t *out)
{
    int rc = check_keys(buf, buf_len, positions, lens, count, out);
    if (rc != PL_OK)
        return rc;
    hash_keys(buf, positions, lens, count, 0, out);
    return PL_OK;
}

int pl_murmur2_partitions(const uint8_t *buf, uint64_t buf_len, const int64_t *positions,
                          const int32_t *lens, uint32_t count, int32_t num_partitions,
                          int32_t *out)
{
    if (num_partitions < 1)
        return PL_E_ARG;
    int rc = check_keys(buf, buf_len, positions, lens, count, out);
    if (rc != PL_OK)
        return rc;
    hash_keys(buf, positions, lens, count, num_partitions, out);
    return PL_OK;
}
