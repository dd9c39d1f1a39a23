/* shim_test - the ggml side of the GPU sleep shim (vs_pool_*) against scripts/gpu/fake_libcuda.c, on a CPU:
 * a stand-in for ggml's CUDA buffer type and ggml_backend_buffer_init (the shim takes both as pointers), then a
 * buffer's life as llama.cpp drives it (alloc, set/get, 2d, memset, clear, sleep, wake, free), the host copy's
 * invalidation by a write, the abort on touching a sleeping buffer, and the pool's refusals.
 * Run by `scripts/gpu/check shim-dry-run` with LD_LIBRARY_PATH at the fake libcuda.so.1. Exit 0 = pass.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cuda.h>

#include "ggml-backend-impl.h"
#include "vram_sleep.h"

#define MIB (1u << 20)
#define CHECK(c)                                                                                                      \
    do {                                                                                                              \
        if (!(c)) {                                                                                                   \
            fprintf(stderr, "shim_test: %s:%d: %s failed (%s)\n", __FILE__, __LINE__, #c, vs_last_error());          \
            exit(1);                                                                                                  \
        }                                                                                                             \
    } while (0)

static const char *cuda_name(ggml_backend_buffer_type_t b) { (void)b; return "CUDA0"; }
static const char *cpu_name(ggml_backend_buffer_type_t b) { (void)b; return "CPU"; }
static size_t align128(ggml_backend_buffer_type_t b) { (void)b; return 128; }

/* what ggml_backend_buffer_init does */
static ggml_backend_buffer_t buffer_init(ggml_backend_buffer_type_t buft, struct ggml_backend_buffer_i iface,
                                         void *context, size_t size) {
    ggml_backend_buffer_t b = calloc(1, sizeof *b);
    b->iface = iface;
    b->buft = buft;
    b->context = context;
    b->size = size;
    return b;
}

/* what ggml_backend_buffer_free does */
static void buffer_free(ggml_backend_buffer_t b) {
    b->iface.free_buffer(b);
    free(b);
}

static struct ggml_tensor tensor_at(ggml_backend_buffer_t b, size_t offset) {
    struct ggml_tensor t;
    memset(&t, 0, sizeof t);
    t.buffer = b;
    t.data = (char *)b->iface.get_base(b) + offset;
    return t;
}

/* the fake device's free bytes (1 GiB when nothing is mapped) */
static size_t device_free(void) {
    CUresult (*get_info)(size_t *, size_t *) = (CUresult(*)(size_t *, size_t *))vs_driver_symbol("cuMemGetInfo");
    size_t f = 0, total = 0;
    CHECK(get_info != NULL && vs_context_push(0) == 0);
    CHECK(get_info(&f, &total) == CUDA_SUCCESS && vs_context_pop() == 0);
    return f;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        p[i] = (unsigned char)(i * 31u + seed);
    }
}

int main(void) {
    CHECK(vs_abi_version() == VS_ABI_VERSION);
    CHECK(vs_init() == 0);
    CHECK(vs_init() == 0); /* idempotent */

    struct ggml_backend_buffer_type cuda;
    memset(&cuda, 0, sizeof cuda);
    cuda.iface.get_name = cuda_name;
    cuda.iface.get_alignment = align128;
    cuda.device = (ggml_backend_dev_t)(uintptr_t)0xde;
    cuda.context = (void *)(uintptr_t)0xc7;

    /* refusals */
    struct ggml_backend_buffer_type cpu = cuda;
    cpu.iface.get_name = cpu_name;
    CHECK(vs_pool_new(&cpu, 0, (void *)buffer_init) == NULL && strstr(vs_last_error(), "not a CUDA"));
    CHECK(vs_pool_new(&cuda, 3, (void *)buffer_init) == NULL); /* the fake has one device */
    CHECK(vs_pool_new(&cuda, 0, NULL) == NULL);

    vs_pool *p = vs_pool_new(&cuda, 0, (void *)buffer_init);
    CHECK(p != NULL);
    ggml_backend_buffer_type_t bt = vs_pool_buft(p);
    CHECK(bt->iface.get_name == cuda.iface.get_name && bt->device == cuda.device && bt->context == cuda.context);
    CHECK(bt->iface.get_alignment == cuda.iface.get_alignment && bt->iface.alloc_buffer != NULL);
    CHECK(vs_pool_awake(p) && vs_pool_buffers(p) == 0 && vs_pool_device_bytes(p) == 0);

    /* a buffer of 5 MiB + 1: a 6 MiB region, zeroed */
    const size_t size = 5 * MIB + 1;
    ggml_backend_buffer_t b = bt->iface.alloc_buffer(bt, size);
    CHECK(b != NULL && b->buft == bt && b->size == size);
    CHECK(vs_pool_buffers(p) == 1 && vs_pool_device_bytes(p) == 6 * MIB && vs_pool_host_bytes(p) == 0);
    void *base = b->iface.get_base(b);
    CHECK(base != NULL && ((uintptr_t)base % 128) == 0);
    CHECK(b->iface.cpy_tensor(b, NULL, NULL) == false);

    static unsigned char in[MIB], out[MIB], zero[MIB];
    struct ggml_tensor t = tensor_at(b, 4096);
    CHECK(b->iface.init_tensor(b, &t) == GGML_STATUS_SUCCESS);
    b->iface.get_tensor(b, &t, out, 0, MIB);
    CHECK(memcmp(out, zero, MIB) == 0);
    fill(in, MIB, 7);
    b->iface.set_tensor(b, &t, in, 0, MIB);
    b->iface.get_tensor(b, &t, out, 0, MIB);
    CHECK(memcmp(in, out, MIB) == 0);
    /* 2d: 16 rows of 100 bytes, 256 apart in the tensor, 128 apart in host memory */
    struct ggml_tensor t2 = tensor_at(b, 2 * MIB);
    b->iface.set_tensor_2d(b, &t2, in, 0, 100, 16, 256, 128);
    memset(out, 0, MIB);
    b->iface.get_tensor_2d(b, &t2, out, 0, 100, 16, 256, 128);
    for (int r = 0; r < 16; r++) {
        CHECK(memcmp(out + r * 128, in + r * 128, 100) == 0);
    }
    b->iface.get_tensor(b, &t2, out, 100, 156);
    CHECK(memcmp(out, zero, 156) == 0); /* the gap between rows untouched */
    b->iface.memset_tensor(b, &t2, 0xab, 4 * MIB - 10, 10);
    b->iface.get_tensor(b, &t2, out, 4 * MIB - 10, 10);
    for (int i = 0; i < 10; i++) {
        CHECK(out[i] == 0xab);
    }

    /* sleep: the bytes go to pinned memory and the physical memory is released; the address stays */
    CHECK(device_free() == 1024u * MIB - 6 * MIB);
    CHECK(vs_pool_sleep(p) == 0 && !vs_pool_awake(p) && vs_pool_host_bytes(p) == 6 * MIB);
    CHECK(device_free() == 1024u * MIB);
    CHECK(vs_pool_sleep(p) == 0); /* asleep already: nothing */
    CHECK(b->iface.get_base(b) == base);
    CHECK(vs_pool_wake(p) == 0 && vs_pool_awake(p));
    CHECK(vs_pool_wake(p) == 0);
    b->iface.get_tensor(b, &t, out, 0, MIB);
    CHECK(memcmp(in, out, MIB) == 0);
    b->iface.get_tensor(b, &t2, out, 4 * MIB - 10, 10);
    CHECK(out[0] == 0xab && out[9] == 0xab);

    /* a write after the first sleep invalidates the host copy: the next sleep copies again */
    fill(in, MIB, 99);
    b->iface.set_tensor(b, &t, in, 0, MIB);
    CHECK(vs_pool_sleep(p) == 0 && vs_pool_wake(p) == 0);
    b->iface.get_tensor(b, &t, out, 0, MIB);
    CHECK(memcmp(in, out, MIB) == 0);
    /* clear: the whole buffer */
    b->iface.clear(b, 0);
    b->iface.get_tensor(b, &t, out, 0, MIB);
    CHECK(memcmp(out, zero, MIB) == 0);

    /* touching a sleeping buffer aborts with a message */
    CHECK(vs_pool_sleep(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (freopen("/dev/null", "w", stderr) == NULL) {
            _exit(3);
        }
        b->iface.get_tensor(b, &t, out, 0, 16);
        _exit(0);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CHECK(vs_pool_wake(p) == 0);

    /* a second buffer, and the pool kept while buffers live */
    ggml_backend_buffer_t b2 = bt->iface.alloc_buffer(bt, 3 * MIB);
    CHECK(b2 != NULL && vs_pool_buffers(p) == 2 && vs_pool_device_bytes(p) == 10 * MIB);
    CHECK(vs_pool_sleep(p) == 0 && vs_pool_host_bytes(p) == 10 * MIB && vs_pool_wake(p) == 0);
    buffer_free(b);
    CHECK(vs_pool_buffers(p) == 1 && vs_pool_device_bytes(p) == 4 * MIB);
    vs_pool_free(p); /* says it keeps the pool */
    CHECK(vs_pool_buffers(p) == 1);
    buffer_free(b2);
    CHECK(vs_pool_buffers(p) == 0);
    vs_pool_free(p);

    /* regions on their own */
    vs_region *r = vs_region_create(0, 1);
    CHECK(r && vs_region_size(r) == 2 * MIB && vs_region_awake(r) && vs_region_host_bytes(r) == 0);
    CHECK(vs_region_sleep(r) == 0 && !vs_region_awake(r) && vs_region_wake(r) == 0);
    vs_region_free(r);
    CHECK(vs_region_create(0, 0) == NULL);
    CHECK(vs_region_create(0, (size_t)2 << 30) == NULL && strstr(vs_last_error(), "cuMemCreate")); /* > 1 GiB fake */
    printf("shim_test: ok\n");
    return 0;
}
