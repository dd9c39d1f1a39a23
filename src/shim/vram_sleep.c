/* vram_sleep.c - the memory side of vram_sleep.h (driver, devices, regions; the ggml side is
 * vram_sleep_ggml.c). A model's weights can "sleep": their bytes go to pinned host memory, the GPU's physical
 * memory is released, and the virtual address range stays reserved, so every pointer into it (ggml tensors, a
 * llama_model, captured CUDA graphs) stays valid; waking maps new physical memory at the same addresses and copies
 * the bytes back (one pinned host->device copy). The design is vLLM's CuMemAllocator: the CUDA driver's virtual
 * memory management (cuMemAddressReserve / cuMemCreate / cuMemMap / cuMemSetAccess / cuMemUnmap / cuMemRelease).
 *
 * The driver is taken at run time (dlopen("libcuda.so.1") + cuGetProcAddress), never linked: the library loads on
 * a machine without a driver and vs_init() then fails with a message. Types and function-pointer types come from
 * the toolkit's cuda.h / cudaTypedefs.h; every entry point is requested at the CUDA 12.0 ABI (VS_CUDA_ABI), whose
 * signatures are the PFN_*_v<=12000> typedefs of vs_internal.h.
 *
 * Every driver call runs with the device's *primary* context pushed (the one cudart, hence ggml, uses; retained
 * here for the life of the process) and popped afterwards, so the caller's thread state is unchanged. Copies and
 * memsets run on CU_STREAM_PER_THREAD followed by a synchronize of that stream only, as ggml's CUDA buffers do with
 * cudaStreamPerThread; nothing here synchronizes the whole context (that could break a CUDA graph being captured
 * by another thread). A region is one reserved range backed by one physical allocation (cuMemCreate, pinned device
 * memory) of its whole size, rounded up to the device's recommended granularity (2 MiB on current GPUs).
 *
 * A vs_region on its own is not thread-safe; a pool serializes its regions under its mutex.
 */
#include "vs_internal.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ driver entry points */

struct vs_driver cu;
static PFN_cuGetProcAddress_v12000 get_proc_v2;   /* cuGetProcAddress_v2 (drivers >= 12.0) */
static PFN_cuGetProcAddress_v11030 get_proc_v1;   /* cuGetProcAddress (drivers >= 11.3) */

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static int init_state;            /* 0 not tried, 1 ok, -1 failed (init_msg) */
static char init_msg[512];

/* ------------------------------------------------------------------ errors */

_Thread_local char vsi_err[VS_ERR_LEN];

void vsi_set_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(vsi_err, sizeof vsi_err, fmt, ap);
    va_end(ap);
}

const char *vsi_cu_str(CUresult rc) {
    const char *s = NULL;
    if (cu.GetErrorString == NULL || cu.GetErrorString(rc, &s) != CUDA_SUCCESS || s == NULL) {
        s = "unknown error";
    }
    return s;
}

void vsi_set_cu_err(const char *call, CUresult rc) {
    vsi_set_err("%s failed: %s (%d)", call, vsi_cu_str(rc), (int)rc);
}

VS_API const char *vs_last_error(void) { return vsi_err; }
VS_API int vs_abi_version(void) { return VS_ABI_VERSION; }

/* ------------------------------------------------------------------ init */

static void *proc(const char *name) {
    void *fn = NULL;
    CUresult rc;
    if (get_proc_v2) {
        CUdriverProcAddressQueryResult found = CU_GET_PROC_ADDRESS_SUCCESS;
        rc = get_proc_v2(name, &fn, VS_CUDA_ABI, CU_GET_PROC_ADDRESS_DEFAULT, &found);
        if (found != CU_GET_PROC_ADDRESS_SUCCESS) {
            fn = NULL;
        }
    } else {
        rc = get_proc_v1(name, &fn, VS_CUDA_ABI, CU_GET_PROC_ADDRESS_DEFAULT);
    }
    return rc == CUDA_SUCCESS ? fn : NULL;
}

static int init_locked(void) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        const char *e = dlerror();
        snprintf(init_msg, sizeof init_msg, "no CUDA driver: dlopen(libcuda.so.1) failed: %s", e ? e : "?");
        return -1;
    }
    get_proc_v2 = (PFN_cuGetProcAddress_v12000)dlsym(lib, "cuGetProcAddress_v2");
    if (get_proc_v2 == NULL) {
        get_proc_v1 = (PFN_cuGetProcAddress_v11030)dlsym(lib, "cuGetProcAddress");
    }
    PFN_cuDriverGetVersion_v2020 get_version = (PFN_cuDriverGetVersion_v2020)dlsym(lib, "cuDriverGetVersion");
    int version = 0;
    if ((get_proc_v2 == NULL && get_proc_v1 == NULL) || get_version == NULL || get_version(&version) != CUDA_SUCCESS
        || version < VS_CUDA_ABI) {
        snprintf(init_msg, sizeof init_msg, "CUDA driver too old: API version %d, need >= %d (CUDA 12.0)", version,
                 VS_CUDA_ABI);
        return -1;
    }
#define X(name, type)                                                                                                 \
    cu.name = (type)proc("cu" #name);                                                                                 \
    if (cu.name == NULL) {                                                                                            \
        snprintf(init_msg, sizeof init_msg, "CUDA driver %d lacks cu" #name, version);                                \
        return -1;                                                                                                    \
    }
    VS_DRIVER_FUNCS(X)
#undef X
    CUresult rc = cu.Init(0);
    if (rc != CUDA_SUCCESS) {
        snprintf(init_msg, sizeof init_msg, "cuInit failed: %s (%d)", vsi_cu_str(rc), (int)rc);
        return -1;
    }
    return 0;
}

VS_API int vs_init(void) {
    pthread_mutex_lock(&init_mu);
    if (init_state == 0) {
        init_state = init_locked() == 0 ? 1 : -1;
    }
    int ok = init_state == 1;
    pthread_mutex_unlock(&init_mu);
    if (!ok) {
        vsi_set_err("%s", init_msg);
        return -1;
    }
    return 0;
}

VS_API void *vs_driver_symbol(const char *name) {
    if (name == NULL || vs_init() != 0) {
        return NULL;
    }
    return proc(name);
}

/* ------------------------------------------------------------------ devices and contexts */

struct dev_state {
    int ready;
    CUdevice dev;
    CUcontext ctx;   /* the primary context, retained for the life of the process */
    size_t gran;     /* recommended granularity of pinned device allocations */
};

static struct dev_state devs[VS_MAX_DEVICES];
static pthread_mutex_t devs_mu = PTHREAD_MUTEX_INITIALIZER;

static CUmemAllocationProp alloc_prop(int ordinal) {
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = ordinal;
    return prop;
}

/* `device` is a CUDA device ordinal (the driver's; the same as cudart's under one CUDA_VISIBLE_DEVICES). */
static struct dev_state *dev_get(int device) {
    if (vs_init() != 0) {
        return NULL;
    }
    if (device < 0 || device >= VS_MAX_DEVICES) {
        vsi_set_err("device %d out of range", device);
        return NULL;
    }
    struct dev_state *d = &devs[device];
    pthread_mutex_lock(&devs_mu);
    if (!d->ready) {
        CUdevice dev;
        CUcontext ctx = NULL;
        size_t gran = 0;
        CUmemAllocationProp prop = alloc_prop(device);
        int vmm = 0;
        CU_TRY("cuDeviceGet", cu.DeviceGet(&dev, device));
        CU_TRY("cuDeviceGetAttribute",
               cu.DeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev));
        if (!vmm) {
            vsi_set_err("device %d does not support CUDA virtual memory management", device);
            goto fail;
        }
        CU_TRY("cuDevicePrimaryCtxRetain", cu.DevicePrimaryCtxRetain(&ctx, dev));
        CU_TRY("cuMemGetAllocationGranularity",
               cu.MemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED));
        if (gran == 0) {
            vsi_set_err("device %d: granularity 0", device);
            goto fail;
        }
        d->dev = dev;
        d->ctx = ctx;
        d->gran = gran;
        d->ready = 1;
    }
    pthread_mutex_unlock(&devs_mu);
    return d;
fail:
    /* a retained context is kept: retaining it again on a later try is harmless */
    pthread_mutex_unlock(&devs_mu);
    return NULL;
}

int vsi_ctx_enter(int device) {
    struct dev_state *d = dev_get(device);
    if (d == NULL) {
        return -1;
    }
    CU_TRY("cuCtxPushCurrent", cu.CtxPushCurrent(d->ctx));
    return 0;
fail:
    return -1;
}

void vsi_ctx_leave(void) {
    CUcontext prev;
    CU_CHECK("cuCtxPopCurrent", cu.CtxPopCurrent(&prev));
}

VS_API int vs_context_push(int device) { return vsi_ctx_enter(device); }

VS_API int vs_context_pop(void) {
    CUcontext prev;
    if (vs_init() != 0) {
        return -1;
    }
    CU_TRY("cuCtxPopCurrent", cu.CtxPopCurrent(&prev));
    return 0;
fail:
    return -1;
}

VS_API size_t vs_granularity(int device) {
    struct dev_state *d = dev_get(device);
    return d ? d->gran : 0;
}

/* ------------------------------------------------------------------ regions */

/* create + map + grant access; on failure nothing stays mapped. The context must be current. */
static int map_physical(vs_region *r) {
    CUmemAllocationProp prop = alloc_prop(r->device);
    CUmemAccessDesc access;
    memset(&access, 0, sizeof access);
    access.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    access.location.id = r->device;
    access.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    CUmemGenericAllocationHandle h = 0;
    int created = 0, mapped = 0;
    CU_TRY("cuMemCreate", cu.MemCreate(&h, r->size, &prop, 0));
    created = 1;
    CU_TRY("cuMemMap", cu.MemMap(r->ptr, r->size, 0, h, 0));
    mapped = 1;
    CU_TRY("cuMemSetAccess", cu.MemSetAccess(r->ptr, r->size, &access, 1));
    r->handle = h;
    r->mapped = 1;
    return 0;
fail:
    if (mapped) {
        (void)cu.MemUnmap(r->ptr, r->size);
    }
    if (created) {
        (void)cu.MemRelease(h);
    }
    return -1;
}

/* unmap + release; the context must be current. A handle whose release fails is leaked: the range is unmapped. */
static int unmap_physical(vs_region *r) {
    CU_TRY("cuMemUnmap", cu.MemUnmap(r->ptr, r->size));
    r->mapped = 0;
    CU_TRY("cuMemRelease", cu.MemRelease(r->handle));
    return 0;
fail:
    return -1;
}

VS_API vs_region *vs_region_create(int device, size_t size) {
    struct dev_state *d = dev_get(device);
    if (d == NULL) {
        return NULL;
    }
    if (size == 0 || size > SIZE_MAX - d->gran) {
        vsi_set_err("vs_region_create: invalid size %zu", size);
        return NULL;
    }
    vs_region *r = calloc(1, sizeof *r);
    if (r == NULL) {
        vsi_set_err("vs_region_create: out of host memory");
        return NULL;
    }
    r->device = device;
    r->size = (size + d->gran - 1) / d->gran * d->gran;
    if (vsi_ctx_enter(device) != 0) {
        free(r);
        return NULL;
    }
    CU_TRY("cuMemAddressReserve", cu.MemAddressReserve(&r->ptr, r->size, 0, 0, 0));
    if (map_physical(r) != 0) {
        goto fail;
    }
    /* zeroed, so the padding after quantized rows is 0 (what ggml's CUDA init_tensor ensures) */
    CU_TRY("cuMemsetD8Async", cu.MemsetD8Async(r->ptr, 0, r->size, PT));
    CU_TRY("cuStreamSynchronize", cu.StreamSynchronize(PT));
    vsi_ctx_leave();
    return r;
fail:
    {
        char keep[sizeof vsi_err]; /* the first failure's message, not the clean-up's */
        memcpy(keep, vsi_err, sizeof keep);
        if (r->mapped) {
            (void)unmap_physical(r);
        }
        if (r->ptr) {
            (void)cu.MemAddressFree(r->ptr, r->size);
        }
        memcpy(vsi_err, keep, sizeof keep);
    }
    vsi_ctx_leave();
    free(r);
    return NULL;
}

VS_API void *vs_region_ptr(const vs_region *r) { return r ? (void *)(uintptr_t)r->ptr : NULL; }
VS_API size_t vs_region_size(const vs_region *r) { return r ? r->size : 0; }
VS_API int vs_region_awake(const vs_region *r) { return r ? r->mapped : 0; }
VS_API size_t vs_region_host_bytes(const vs_region *r) { return r && r->host ? r->size : 0; }

VS_API int vs_region_sleep(vs_region *r) {
    if (r == NULL) {
        vsi_set_err("vs_region_sleep: NULL region");
        return -1;
    }
    if (!r->mapped) {
        return 0;
    }
    if (vsi_ctx_enter(r->device) != 0) {
        return -1;
    }
    /* No device-wide wait here: another model's decode may be capturing a CUDA graph, and a
     * context synchronize during a capture invalidates it (ggml aborts). The caller frees the
     * model's contexts first, and ~llama_context synchronizes their streams. */
    if (r->host == NULL) {
        CU_TRY("cuMemHostAlloc", cu.MemHostAlloc(&r->host, r->size, CU_MEMHOSTALLOC_PORTABLE));
    }
    /* The first sleep copies; weights do not change afterwards, so later sleeps only release (unless something
     * was written since: every set/memset/clear clears host_valid). */
    if (!r->host_valid) {
        CU_TRY("cuMemcpyDtoHAsync", cu.MemcpyDtoHAsync(r->host, r->ptr, r->size, PT));
        CU_TRY("cuStreamSynchronize", cu.StreamSynchronize(PT));
        r->host_valid = 1;
    }
    if (unmap_physical(r) != 0) {
        goto fail;
    }
    vsi_ctx_leave();
    return 0;
fail:
    vsi_ctx_leave();
    return -1;
}

VS_API int vs_region_wake(vs_region *r) {
    if (r == NULL) {
        vsi_set_err("vs_region_wake: NULL region");
        return -1;
    }
    if (r->mapped) {
        return 0;
    }
    if (r->host == NULL || !r->host_valid) {
        vsi_set_err("vs_region_wake: asleep without a host copy");
        return -1;
    }
    if (vsi_ctx_enter(r->device) != 0) {
        return -1;
    }
    if (map_physical(r) != 0) {
        goto fail;
    }
    CU_TRY("cuMemcpyHtoDAsync", cu.MemcpyHtoDAsync(r->ptr, r->host, r->size, PT));
    CU_TRY("cuStreamSynchronize", cu.StreamSynchronize(PT));
    vsi_ctx_leave();
    return 0;
fail:
    /* left asleep: whatever was mapped is released again (the failure message is kept) */
    if (r->mapped) {
        char keep[sizeof vsi_err];
        memcpy(keep, vsi_err, sizeof keep);
        (void)unmap_physical(r);
        r->mapped = 0;
        memcpy(vsi_err, keep, sizeof keep);
    }
    vsi_ctx_leave();
    return -1;
}

VS_API void vs_region_free(vs_region *r) {
    if (r == NULL) {
        return;
    }
    if (vsi_ctx_enter(r->device) != 0) {
        fprintf(stderr, "vram_sleep: freeing a region: %s (leaked)\n", vsi_err);
        return;
    }
    if (r->mapped && unmap_physical(r) != 0) {
        fprintf(stderr, "vram_sleep: freeing a region: %s\n", vsi_err);
    }
    if (!r->mapped) {
        CUresult rc = cu.MemAddressFree(r->ptr, r->size);
        if (rc != CUDA_SUCCESS) {
            fprintf(stderr, "vram_sleep: cuMemAddressFree failed: %s (%d)\n", vsi_cu_str(rc), (int)rc);
        }
    }
    if (r->host) {
        CUresult rc = cu.MemFreeHost(r->host);
        if (rc != CUDA_SUCCESS) {
            fprintf(stderr, "vram_sleep: cuMemFreeHost failed: %s (%d)\n", vsi_cu_str(rc), (int)rc);
        }
    }
    vsi_ctx_leave();
    free(r);
}
