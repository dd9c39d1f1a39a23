/* vs_internal.h - what vram_sleep.c (driver, devices, regions) and vram_sleep_ggml.c (ggml buffers, pools)
 * share. Not installed: everything here is hidden in libvram-llm-sleep.so. */
#pragma once

#include "vram_sleep.h"

#include <cudaTypedefs.h> /* includes cuda.h: the toolkit's types and PFN_* typedefs; nothing is linked */
#include <stdint.h>

#pragma GCC visibility push(hidden)

#define VS_API __attribute__((visibility("default")))
#define VS_CUDA_ABI 12000 /* the CUDA version whose entry-point ABI we request from cuGetProcAddress */
#define VS_MAX_DEVICES 64
#define PT CU_STREAM_PER_THREAD
#define VS_ERR_LEN 512

/* The driver entry points we use, with their cudaTypedefs.h types at the VS_CUDA_ABI version. */
#define VS_DRIVER_FUNCS(X)                                                                                            \
    X(GetErrorString, PFN_cuGetErrorString_v6000)                                                                     \
    X(GetErrorName, PFN_cuGetErrorName_v6000)                                                                         \
    X(Init, PFN_cuInit_v2000)                                                                                         \
    X(DeviceGet, PFN_cuDeviceGet_v2000)                                                                               \
    X(DeviceGetCount, PFN_cuDeviceGetCount_v2000)                                                                     \
    X(DeviceGetAttribute, PFN_cuDeviceGetAttribute_v2000)                                                             \
    X(DevicePrimaryCtxRetain, PFN_cuDevicePrimaryCtxRetain_v7000)                                                     \
    X(CtxPushCurrent, PFN_cuCtxPushCurrent_v4000)                                                                     \
    X(CtxPopCurrent, PFN_cuCtxPopCurrent_v4000)                                                                       \
    X(MemGetAllocationGranularity, PFN_cuMemGetAllocationGranularity_v10020)                                          \
    X(MemAddressReserve, PFN_cuMemAddressReserve_v10020)                                                              \
    X(MemAddressFree, PFN_cuMemAddressFree_v10020)                                                                    \
    X(MemCreate, PFN_cuMemCreate_v10020)                                                                              \
    X(MemRelease, PFN_cuMemRelease_v10020)                                                                            \
    X(MemMap, PFN_cuMemMap_v10020)                                                                                    \
    X(MemUnmap, PFN_cuMemUnmap_v10020)                                                                                \
    X(MemSetAccess, PFN_cuMemSetAccess_v10020)                                                                        \
    X(MemHostAlloc, PFN_cuMemHostAlloc_v2020)                                                                         \
    X(MemFreeHost, PFN_cuMemFreeHost_v2000)                                                                           \
    X(MemcpyHtoDAsync, PFN_cuMemcpyHtoDAsync_v3020)                                                                   \
    X(MemcpyDtoHAsync, PFN_cuMemcpyDtoHAsync_v3020)                                                                   \
    X(Memcpy2DAsync, PFN_cuMemcpy2DAsync_v3020)                                                                       \
    X(MemsetD8Async, PFN_cuMemsetD8Async_v3020)                                                                       \
    X(StreamSynchronize, PFN_cuStreamSynchronize_v2000)

struct vs_driver {
#define X(name, type) type name;
    VS_DRIVER_FUNCS(X)
#undef X
};
extern struct vs_driver cu; /* filled by vs_init() */

extern _Thread_local char vsi_err[VS_ERR_LEN]; /* vs_last_error() */
void vsi_set_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *vsi_cu_str(CUresult rc);
void vsi_set_cu_err(const char *call, CUresult rc);
int vsi_ctx_enter(int device); /* push the device's primary context; 0 ok, -1 (vsi_err) */
void vsi_ctx_leave(void);      /* pop it (aborts on failure) */

/* vs_* functions: record the failure and jump to `fail` */
#define CU_TRY(name, expr)                                                                                            \
    do {                                                                                                              \
        CUresult rc_ = (expr);                                                                                        \
        if (rc_ != CUDA_SUCCESS) {                                                                                    \
            vsi_set_cu_err(name, rc_);                                                                                \
            goto fail;                                                                                                \
        }                                                                                                             \
    } while (0)

/* ggml callbacks cannot return errors: print and abort, as ggml's CUDA_CHECK does */
#define CU_CHECK(name, expr)                                                                                          \
    do {                                                                                                              \
        CUresult rc_ = (expr);                                                                                        \
        if (rc_ != CUDA_SUCCESS) {                                                                                    \
            fprintf(stderr, "vram_sleep: %s failed: %s (%d)\n", name, vsi_cu_str(rc_), (int)rc_);                     \
            abort();                                                                                                  \
        }                                                                                                             \
    } while (0)

struct vs_region {
    int device;
    CUdeviceptr ptr;                     /* start of the reserved range; never changes */
    size_t size;                         /* reserved = mapped bytes, a multiple of the granularity */
    CUmemGenericAllocationHandle handle; /* physical memory while mapped */
    int mapped;                          /* awake */
    void *host;                          /* pinned copy, allocated at the first sleep */
    int host_valid;                      /* host holds what the device holds (cleared by every write) */
    vs_pool *pool;                       /* owning pool (ggml buffers), or NULL */
    vs_region *next;
};

#pragma GCC visibility pop
