/*
 * tsan_segment_harness.c -- one writer, four readers on one segment, in plain C with
 * pthreads, built with -fsanitize=thread by test_concurrency.py.  Python cannot run
 * under TSan here, so the release/acquire protocol of segment.c/index.c is checked at
 * this level: readers must only ever see whole batches with the right offsets, and
 * lookup / time search must agree with what read returned.
 * Exit status 0 = ok; TSan reports races on stderr (and exits 66).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "pylog.h"

#define N_BATCHES 6000
#define N_READERS 4

static pl_segment seg;
static int64_t final_next;
static atomic_int failed;

static void fail(const char *what, long a, long b)
{
    fprintf(stderr, "FAIL %s %ld %ld\n", what, a, b);
    atomic_store(&failed, 1);
}

static void *writer(void *arg)
{
    (void)arg;
    uint8_t buf[512];
    for (int i = 0; i < N_BATCHES && !atomic_load(&failed); i++) {
        uint8_t vals[64];
        int32_t lens[3] = {4 * (1 + i % 5), 4, 4};
        memset(vals, i & 0xff, sizeof vals);
        pl_batch_input in;
        memset(&in, 0, sizeof in);
        in.count = 1 + (uint32_t)(i % 3);
        in.values = vals;
        in.value_lens = lens;
        in.base_timestamp = 1000 + i;
        in.producer_id = -1;
        in.producer_epoch = -1;
        in.base_sequence = -1;
        in.partition_leader_epoch = 2;
        pl_append_result r;
        int st;
        if (i % 2) {
            int64_t n = pl_batch_build(&in, buf, sizeof buf);
            if (n < 0) {
                fail("build", (long)n, i);
                return NULL;
            }
            st = pl_segment_append(&seg, buf, (uint64_t)n, 2, 1, &r);
        } else {
            st = pl_segment_append_build(&seg, &in, &r);
        }
        if (st != PL_OK)
            fail("append", st, i);
    }
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    int64_t off = 0;
    uint64_t pos[64], end;
    uint32_t n;
    while (off < final_next && !atomic_load(&failed)) {
        pl_segment_snapshot snap;
        pl_segment_snapshot_get(&seg, &snap);
        int st = pl_segment_read(&seg, off, 2000, INT64_MAX, pos, 64, &n, &end);
        if (st != PL_OK) {
            fail("read", st, (long)off);
            break;
        }
        if (snap.next_offset > off && n == 0) {
            fail("offset below the snapshot's next_offset not readable", (long)off,
                 (long)snap.next_offset);
            break;
        }
        for (uint32_t j = 0; j < n; j++) {
            pl_batch_info info;
            /* only [pos, end) is published: validate exactly the bytes read returned */
            uint64_t stop = j + 1 < n ? pos[j + 1] : end;
            if (pl_batch_validate(seg.log + pos[j], stop - pos[j], &info) != PL_OK ||
                info.base_offset != off || info.partition_leader_epoch != 2) {
                fail("bad batch", (long)pos[j], (long)off);
                break;
            }
            off = info.base_offset + info.last_offset_delta + 1;
            uint64_t p;
            int64_t bo;
            st = pl_segment_find_timestamp(&seg, info.max_timestamp, &p, &bo);
            if (st != PL_OK || p != pos[j] || bo != info.base_offset)
                fail("find_timestamp", st, (long)pos[j]);
            st = pl_segment_lookup(&seg, off - 1, &p);
            if (st != PL_OK || p != pos[j])
                fail("lookup", st, (long)pos[j]);
        }
    }
    return NULL;
}

int main(void)
{
    size_t log_bytes = 4u << 20, index_bytes = 1u << 18;
    seg.log = mmap(NULL, log_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    seg.index = mmap(NULL, index_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    seg.timeindex = mmap(NULL, index_bytes / 8 * 12, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (seg.log == MAP_FAILED || seg.index == MAP_FAILED || seg.timeindex == MAP_FAILED)
        return 2;
    seg.log_capacity = log_bytes;
    seg.index_capacity = index_bytes;
    seg.timeindex_capacity = index_bytes / 8 * 12;
    if (pl_segment_init(&seg, 0, 256) != PL_OK)
        return 2;
    for (int i = 0; i < N_BATCHES; i++)
        final_next += 1 + i % 3;

    pthread_t t[N_READERS + 1];
    for (int i = 0; i < N_READERS; i++)
        pthread_create(&t[i], NULL, reader, NULL);
    pthread_create(&t[N_READERS], NULL, writer, NULL);
    for (int i = 0; i <= N_READERS; i++)
        pthread_join(t[i], NULL);
    if (seg.next_offset != final_next)
        fail("final next_offset", (long)seg.next_offset, (long)final_next);
    return atomic_load(&failed) ? 1 : 0;
}
