/* vmm_bench - what sleeping and waking a model's weights costs, measured with the shim itself
 * (src/shim/vram_sleep.h, libvram-llm-sleep.so), next to plain host->device copies. Needs no Rust.
 *
 *   vmm_bench [GiB]        (default 4; GPU 0)
 *
 * (a) pageable (malloc) host -> device (cuMemAlloc) copy; (b) pinned (cuMemHostAlloc) host -> device, and pinned
 * device -> host; (c) a VMM region through vs_region_*: create (reserve + map + zero), fill with a pattern, first
 * sleep (device -> pinned copy + release), wake (map at the same address + pinned -> device copy), second sleep
 * (release only), second wake; the pattern is checked after each wake (64 samples of 1 MiB), the device's free
 * memory is read awake and asleep (what a sleep gives back). Each step is timed with CLOCK_MONOTONIC around the
 * call and a context synchronize. One JSON object on stdout; progress on stderr.
 * Exit 0 ok, 1 a CUDA failure or a pattern mismatch, 2 no driver or no GPU (message on stderr).
 */
#define _GNU_SOURCE
#include <cudaTypedefs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vram_sleep.h"

#define MIB (1024.0 * 1024.0)
#define SAMPLES 64
#define SAMPLE_BYTES (1u << 20)

static struct {
    PFN_cuMemAlloc_v3020 MemAlloc;
    PFN_cuMemFree_v3020 MemFree;
    PFN_cuMemcpyHtoD_v3020 MemcpyHtoD;
    PFN_cuMemcpyDtoH_v3020 MemcpyDtoH;
    PFN_cuMemHostAlloc_v2020 MemHostAlloc;
    PFN_cuMemFreeHost_v2000 MemFreeHost;
    PFN_cuCtxSynchronize_v2000 CtxSynchronize;
    PFN_cuMemGetInfo_v3020 MemGetInfo;
    PFN_cuDeviceGetName_v2000 DeviceGetName;
    PFN_cuDriverGetVersion_v2020 DriverGetVersion;
    PFN_cuGetErrorString_v6000 GetErrorString;
} cu;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void check(const char *what, CUresult rc) {
    if (rc != CUDA_SUCCESS) {
        const char *s = "?";
        if (cu.GetErrorString) {
            cu.GetErrorString(rc, &s);
        }
        fprintf(stderr, "vmm_bench: %s failed: %s (%d)\n", what, s, (int)rc);
        exit(1);
    }
}

static void check_vs(const char *what, int rc) {
    if (rc != 0) {
        fprintf(stderr, "vmm_bench: %s failed: %s\n", what, vs_last_error());
        exit(1);
    }
}

static void sync_ctx(void) { check("cuCtxSynchronize", cu.CtxSynchronize()); }

static uint64_t pattern(uint64_t word) { return (word * 0x9E3779B97F4A7C15ull) ^ 0xA5A5A5A55A5A5A5Aull; }

static size_t free_bytes(void) {
    size_t f = 0, t = 0;
    check("cuMemGetInfo", cu.MemGetInfo(&f, &t));
    return f;
}

/* JSON helpers: a timed step is {"ms": .., "gbps": ..} (gbps omitted when no bytes moved) */
static void step(const char *name, double ms, size_t bytes, int last) {
    if (bytes) {
        printf("  \"%s\": {\"ms\": %.2f, \"gbps\": %.2f}%s\n", name, ms, bytes / 1e9 / (ms / 1e3), last ? "" : ",");
    } else {
        printf("  \"%s\": {\"ms\": %.2f}%s\n", name, ms, last ? "" : ",");
    }
}

/* best of `runs` copies */
static double time_copy(int h2d, CUdeviceptr dev, void *host, size_t bytes, int runs) {
    double best = 1e30;
    for (int i = 0; i < runs; i++) {
        sync_ctx();
        double t = now_ms();
        if (h2d) {
            check("cuMemcpyHtoD", cu.MemcpyHtoD(dev, host, bytes));
        } else {
            check("cuMemcpyDtoH", cu.MemcpyDtoH(host, dev, bytes));
        }
        sync_ctx();
        t = now_ms() - t;
        best = t < best ? t : best;
    }
    return best;
}

/* 64 samples of 1 MiB spread over the region, compared with the pattern; returns mismatching samples, and a
 * checksum (sum of the sampled words) in *sum */
static int verify(CUdeviceptr dev, size_t bytes, uint64_t *sum) {
    static uint64_t buf[SAMPLE_BYTES / 8];
    int bad = 0;
    *sum = 0;
    size_t span = bytes > SAMPLE_BYTES ? bytes - SAMPLE_BYTES : 0;
    for (int s = 0; s < SAMPLES; s++) {
        size_t off = (size_t)((double)span * s / (SAMPLES - 1)) & ~(size_t)7;
        size_t n = bytes - off < SAMPLE_BYTES ? bytes - off : SAMPLE_BYTES;
        check("cuMemcpyDtoH (verify)", cu.MemcpyDtoH(buf, dev + off, n));
        int ok = 1;
        for (size_t w = 0; w < n / 8; w++) {
            *sum += buf[w];
            ok &= buf[w] == pattern(off / 8 + w);
        }
        bad += !ok;
    }
    return bad;
}

#define GET(field, name)                                                                                              \
    do {                                                                                                              \
        *(void **)&cu.field = vs_driver_symbol(name);                                                                 \
        if (cu.field == NULL) {                                                                                       \
            fprintf(stderr, "vmm_bench: the driver lacks %s\n", name);                                                \
            return 1;                                                                                                 \
        }                                                                                                             \
    } while (0)

int main(int argc, char **argv) {
    double gib = argc > 1 ? atof(argv[1]) : 4.0;
    if (!(gib > 0)) {
        fprintf(stderr, "usage: vmm_bench [GiB]\n");
        return 1;
    }
    size_t bytes = ((size_t)(gib * 1024.0 * MIB) + 7) & ~(size_t)7;
    if (vs_init() != 0) {
        fprintf(stderr, "vmm_bench: no CUDA driver or GPU: %s\n", vs_last_error());
        return 2;
    }
    GET(MemAlloc, "cuMemAlloc");
    GET(MemFree, "cuMemFree");
    GET(MemcpyHtoD, "cuMemcpyHtoD");
    GET(MemcpyDtoH, "cuMemcpyDtoH");
    GET(MemHostAlloc, "cuMemHostAlloc");
    GET(MemFreeHost, "cuMemFreeHost");
    GET(CtxSynchronize, "cuCtxSynchronize");
    GET(MemGetInfo, "cuMemGetInfo");
    GET(DeviceGetName, "cuDeviceGetName");
    GET(DriverGetVersion, "cuDriverGetVersion");
    GET(GetErrorString, "cuGetErrorString");
    check_vs("vs_context_push(0)", vs_context_push(0)); /* GPU 0's primary context for the whole run */

    char name[256] = "";
    int driver = 0;
    check("cuDeviceGetName", cu.DeviceGetName(name, sizeof name, 0));
    check("cuDriverGetVersion", cu.DriverGetVersion(&driver));
    size_t gran = vs_granularity(0);
    fprintf(stderr, "vmm_bench: %s, driver %d, granularity %zu, %.2f GiB\n", name, driver, gran, bytes / 1024.0 / MIB);

    /* host buffers with the pattern */
    void *pinned = NULL;
    double t = now_ms();
    check("cuMemHostAlloc", cu.MemHostAlloc(&pinned, bytes, 0));
    double pin_ms = now_ms() - t;
    uint64_t *w = pinned;
    for (size_t i = 0; i < bytes / 8; i++) {
        w[i] = pattern(i);
    }
    char *pageable = malloc(bytes);
    if (pageable == NULL) {
        fprintf(stderr, "vmm_bench: malloc(%zu) failed\n", bytes);
        return 1;
    }
    memcpy(pageable, pinned, bytes); /* touched: no page faults in the timing */

    /* (a), (b): plain device memory */
    CUdeviceptr dev = 0;
    check("cuMemAlloc", cu.MemAlloc(&dev, bytes));
    fprintf(stderr, "vmm_bench: plain copies\n");
    double pageable_ms = time_copy(1, dev, pageable, bytes, 2);
    double pinned_ms = time_copy(1, dev, pinned, bytes, 2);
    double d2h_ms = time_copy(0, dev, pinned, bytes, 2);
    check("cuMemFree", cu.MemFree(dev));
    free(pageable);

    /* (c): a VMM region through the shim */
    fprintf(stderr, "vmm_bench: VMM region\n");
    sync_ctx();
    size_t free_before = free_bytes();
    t = now_ms();
    vs_region *r = vs_region_create(0, bytes);
    sync_ctx();
    double create_ms = now_ms() - t;
    if (r == NULL) {
        check_vs("vs_region_create", -1);
    }
    CUdeviceptr base = (CUdeviceptr)(uintptr_t)vs_region_ptr(r);
    t = now_ms();
    check("cuMemcpyHtoD (fill)", cu.MemcpyHtoD(base, pinned, bytes));
    sync_ctx();
    double fill_ms = now_ms() - t;
    size_t free_awake = free_bytes();

    double ms[4];
    int bad[2];
    uint64_t sums[2];
    size_t free_asleep = 0;
    for (int round = 0; round < 2; round++) {
        t = now_ms();
        check_vs("vs_region_sleep", vs_region_sleep(r));
        sync_ctx();
        ms[2 * round] = now_ms() - t;
        if (round == 0) {
            free_asleep = free_bytes();
        }
        if (vs_region_awake(r) || vs_region_ptr(r) != (void *)(uintptr_t)base) {
            fprintf(stderr, "vmm_bench: region awake after sleep, or moved\n");
            return 1;
        }
        t = now_ms();
        check_vs("vs_region_wake", vs_region_wake(r));
        sync_ctx();
        ms[2 * round + 1] = now_ms() - t;
        bad[round] = verify(base, bytes, &sums[round]);
        fprintf(stderr, "vmm_bench: round %d: sleep %.1f ms, wake %.1f ms, %d bad samples\n", round + 1,
                ms[2 * round], ms[2 * round + 1], bad[round]);
    }
    size_t host_bytes = vs_region_host_bytes(r);
    size_t region_bytes = vs_region_size(r);
    t = now_ms();
    vs_region_free(r);
    double free_ms = now_ms() - t;
    size_t free_end = free_bytes();
    check("cuMemFreeHost", cu.MemFreeHost(pinned));
    vs_context_pop();

    printf("{\n  \"device\": \"%s\",\n  \"driver_version\": %d,\n  \"bytes\": %zu,\n  \"gib\": %.3f,\n", name, driver,
           bytes, bytes / 1024.0 / MIB);
    printf("  \"granularity\": %zu,\n  \"region_bytes\": %zu,\n  \"host_bytes\": %zu,\n", gran, region_bytes,
           host_bytes);
    step("pinned_host_alloc", pin_ms, 0, 0);
    step("pageable_h2d", pageable_ms, bytes, 0);
    step("pinned_h2d", pinned_ms, bytes, 0);
    step("pinned_d2h", d2h_ms, bytes, 0);
    step("vmm_create", create_ms, 0, 0);
    step("vmm_fill_h2d", fill_ms, bytes, 0);
    step("vmm_sleep1_copy_release", ms[0], bytes, 0);
    step("vmm_wake1", ms[1], bytes, 0);
    step("vmm_sleep2_release", ms[2], 0, 0);
    step("vmm_wake2", ms[3], bytes, 0);
    step("vmm_free", free_ms, 0, 0);
    printf("  \"free_mib\": {\"before\": %.0f, \"awake\": %.0f, \"asleep\": %.0f, \"after_free\": %.0f},\n",
           free_before / MIB, free_awake / MIB, free_asleep / MIB, free_end / MIB);
    printf("  \"released_mib\": %.0f,\n", ((double)free_asleep - (double)free_awake) / MIB);
    printf("  \"verify\": {\"samples\": %d, \"bad_wake1\": %d, \"bad_wake2\": %d, \"sum_wake1\": \"%016llx\", "
           "\"sum_wake2\": \"%016llx\"},\n",
           SAMPLES, bad[0], bad[1], (unsigned long long)sums[0], (unsigned long long)sums[1]);
    printf("  \"ok\": %s\n}\n", bad[0] || bad[1] ? "false" : "true");
    return bad[0] || bad[1] ? 1 : 0;
}
