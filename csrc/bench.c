/*
 * bench.c -- the machine's ceiling for appends, printed next to every benchmark.
 *
 * Layout of one run over dst (an mmapped file of dst_cap bytes):
 *
 *   src  +--------+--------+--------+-- ... --+--------+
 *        | piece  | piece  | piece  |         | piece  |   then again from src's start
 *        +--------+--------+--------+-- ... --+--------+
 *           |        |        |                   |
 *   dst  +--------+--------+--------+-- ... --+--------+------+
 *        |        |        |        |         |        | (gap)|   then again from 0
 *        +--------+--------+--------+-- ... --+--------+------+
 *        0                                                    dst_cap
 *
 * src's bytes are copied in order, in copies of at most `piece` bytes (one batch of
 * the workload); a copy that would not fit before dst_cap starts again at 0 (as an
 * append loop rolls to a new segment).  The bench passes a src as large as the data
 * the workloads write: like theirs, every byte comes from memory once, not from a
 * small buffer the cache keeps.  No per-record work: the loop is memcpy plus a few
 * compares, the most any append path could achieve with these bytes on this
 * machine.  A compiler barrier after each copy keeps the stores from being merged or
 * dropped.
 *
 * pl_bench_write_ceiling is the other way to put bytes into the file: pwrite, one
 * system call per piece, which the log uses for large batches (no page fault and no
 * kernel zeroing per new page).  The faster of the two is the ceiling.
 */
#include <string.h>

#include "internal.h"

int64_t pl_bench_copy_ceiling(uint8_t *dst, uint64_t dst_cap, const uint8_t *src, uint64_t src_len,
                              uint64_t piece, uint64_t total_bytes)
{
    if (total_bytes > (uint64_t)INT64_MAX)
        return PL_E_ARG;
    if (total_bytes == 0)
        return 0;
    if (dst == NULL || src == NULL || dst_cap == 0 || src_len == 0 || piece == 0)
        return PL_E_ARG;

    uint64_t most = piece < dst_cap ? piece : dst_cap;
    uint64_t pos = 0, copied = 0, from = 0;
    while (copied < total_bytes) {
        uint64_t n = total_bytes - copied < most ? total_bytes - copied : most;
        if (src_len - from < n)
            n = src_len - from;
        if (dst_cap - pos < n)
            pos = 0;
        memcpy(dst + pos, src + from, (size_t)n);
        /* The bytes are observable: forbid the compiler to elide or coalesce copies. */
        __asm__ __volatile__("" : : "r"(dst + pos) : "memory");
        pos += n;
        copied += n;
        from = from + n == src_len ? 0 : from + n;
    }
    return (int64_t)copied;
}

int64_t pl_bench_write_ceiling(int fd, const uint8_t *src, uint64_t src_len, uint64_t piece,
                               uint64_t total_bytes)
{
    if (total_bytes > (uint64_t)INT64_MAX)
        return PL_E_ARG;
    if (total_bytes == 0)
        return 0;
    if (fd < 0 || src == NULL || src_len == 0 || piece == 0)
        return PL_E_ARG;
    uint64_t from = 0;
    for (uint64_t written = 0; written < total_bytes;) {
        uint64_t n = total_bytes - written < piece ? total_bytes - written : piece;
        if (src_len - from < n)
            n = src_len - from;
        int st = pl_write_all(fd, src + from, n, written);
        if (st != PL_OK)
            return st;
        written += n;
        from = from + n == src_len ? 0 : from + n;
    }
    return (int64_t)total_bytes;
}
