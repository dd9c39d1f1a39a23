/* vram_sleep: device memory whose physical backing can be released and restored at the same
 * virtual address (CUDA VMM), and a ggml buffer type built on it for a model's weights. */
#pragma once
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
#define VS_ABI_VERSION 1
int vs_abi_version(void);
int vs_init(void);                 /* dlopen libcuda.so.1, resolve entry points, cuInit; 0 ok, -1 error (vs_last_error). Idempotent, thread-safe. */
const char *vs_last_error(void);   /* message of this thread's last failure ("" if none) */
typedef struct vs_region vs_region;   /* one reserved range, mapped or not */
vs_region *vs_region_create(int device, size_t size);  /* reserve + map + zero; size rounded up to the granularity; NULL on error */
void *vs_region_ptr(const vs_region *r);
size_t vs_region_size(const vs_region *r);
int vs_region_awake(const vs_region *r);
size_t vs_region_host_bytes(const vs_region *r);      /* pinned bytes held (0 before the first sleep) */
int vs_region_sleep(vs_region *r);  /* first time: copy to pinned host memory; then unmap + release physical memory. 0 ok */
int vs_region_wake(vs_region *r);   /* create + map at the same address + set access + copy back from pinned. 0 ok */
void vs_region_free(vs_region *r);
/* ggml: a pool = the weights buffers of one model. `cuda_buft` is ggml's CUDA buffer type of `device`
 * (ggml_backend_dev_buffer_type); `buffer_init` is ggml's ggml_backend_buffer_init (passed as a pointer so the
 * shim links nothing from ggml). vs_pool_buft returns a buffer type to hand llama.cpp via tensor_buft_overrides. */
typedef struct vs_pool vs_pool;
vs_pool *vs_pool_new(void *cuda_buft, int device, void *buffer_init);
void *vs_pool_buft(vs_pool *p);
int vs_pool_sleep(vs_pool *p);     /* every buffer of the pool; caller guarantees no context uses the weights */
int vs_pool_wake(vs_pool *p);
int vs_pool_awake(const vs_pool *p);
size_t vs_pool_device_bytes(const vs_pool *p);  /* sum of region sizes (mapped or not) */
size_t vs_pool_host_bytes(const vs_pool *p);    /* pinned bytes held */
size_t vs_pool_buffers(const vs_pool *p);
void vs_pool_free(vs_pool *p);     /* only after llama.cpp freed every buffer of it (model dropped) */

/* Additions (same ABI version; not needed by the server, used by scripts/gpu/vmm_bench.c). */
size_t vs_granularity(int device);          /* the allocation granularity regions round to; 0 on error */
int vs_context_push(int device);            /* make `device`'s primary context current (push); 0 ok */
int vs_context_pop(void);                   /* undo one vs_context_push; 0 ok */
void *vs_driver_symbol(const char *name);   /* a driver entry point, e.g. "cuMemAlloc", at the CUDA 12.0 ABI
                                             * (cudaTypedefs.h's PFN_<name>_v<=12000>); NULL if absent */
#ifdef __cplusplus
}
#endif
