/* fake_libcuda.c - a stand-in libcuda.so.1 for testing the GPU sleep shim on a machine without a GPU
 * (scripts/gpu/check shim-dry-run). "Device" memory is host memory with the VMM semantics the shim relies on:
 *   cuMemAddressReserve  reserves an inaccessible range (PROT_NONE mmap);
 *   cuMemCreate          creates physical memory (a memfd), counted against a 1 GiB "device";
 *   cuMemMap             maps it at a fixed address, still inaccessible; cuMemSetAccess makes it read/write;
 *   cuMemUnmap           turns the range back into an inaccessible reservation (touching it then faults);
 *   cuMemRelease         frees the physical memory (the fake frees it at release; the real one at the last unmap).
 * Every memory call fails with CUDA_ERROR_INVALID_CONTEXT unless a context was pushed on the calling thread, which
 * checks the shim's push/pop discipline. Only cuGetProcAddress_v2 and cuDriverGetVersion are exported by name,
 * the rest is reached through cuGetProcAddress, as the shim does. FAKE_CUDA_NO_DEVICE=1 makes cuInit fail with
 * CUDA_ERROR_NO_DEVICE; FAKE_CUDA_NO_VMM=1 gives a device without VMM support. Not thread-safe beyond what the
 * tests need.
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define API __attribute__((visibility("default")))
#define DEVICE_BYTES (1ull << 30)
#define NEED_CTX                                                                                                      \
    if (depth <= 0) return CUDA_ERROR_INVALID_CONTEXT

static _Thread_local int depth; /* contexts pushed on this thread */
static size_t used;            /* physical bytes created and not released */

static CUresult f_GetErrorString(CUresult e, const char **s) {
    *s = e == CUDA_SUCCESS ? "no error" : e == CUDA_ERROR_INVALID_CONTEXT ? "invalid device context (fake)"
       : e == CUDA_ERROR_OUT_OF_MEMORY ? "out of memory (fake)" : "error (fake)";
    return CUDA_SUCCESS;
}
static CUresult f_GetErrorName(CUresult e, const char **s) { return f_GetErrorString(e, s); }
static CUresult f_Init(unsigned int flags) {
    (void)flags;
    return getenv("FAKE_CUDA_NO_DEVICE") ? CUDA_ERROR_NO_DEVICE : CUDA_SUCCESS;
}
static CUresult f_DeviceGet(CUdevice *d, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
static CUresult f_DeviceGetCount(int *n) { *n = 1; return CUDA_SUCCESS; }
static CUresult f_DeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d) {
    (void)d;
    *v = a == CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED ? !getenv("FAKE_CUDA_NO_VMM") : 0;
    return CUDA_SUCCESS;
}
static CUresult f_DeviceGetName(char *name, int len, CUdevice d) {
    (void)d;
    strncpy(name, "fake GPU (host memory)", (size_t)len - 1);
    name[len - 1] = 0;
    return CUDA_SUCCESS;
}
static CUresult f_DevicePrimaryCtxRetain(CUcontext *c, CUdevice d) {
    (void)d;
    *c = (CUcontext)(uintptr_t)0xc0;
    return CUDA_SUCCESS;
}
static CUresult f_CtxPushCurrent(CUcontext c) {
    if (c == NULL) return CUDA_ERROR_INVALID_CONTEXT;
    depth++;
    return CUDA_SUCCESS;
}
static CUresult f_CtxPopCurrent(CUcontext *c) {
    NEED_CTX;
    depth--;
    if (c) *c = (CUcontext)(uintptr_t)0xc0;
    return CUDA_SUCCESS;
}
static CUresult f_CtxSynchronize(void) { NEED_CTX; return CUDA_SUCCESS; }
static CUresult f_StreamSynchronize(CUstream s) { (void)s; NEED_CTX; return CUDA_SUCCESS; }
static CUresult f_MemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *p, CUmemAllocationGranularity_flags o) {
    (void)o;
    if (p->type != CU_MEM_ALLOCATION_TYPE_PINNED || p->location.type != CU_MEM_LOCATION_TYPE_DEVICE) {
        return CUDA_ERROR_INVALID_VALUE;
    }
    *g = 2u << 20;
    return CUDA_SUCCESS;
}
static CUresult f_MemGetInfo(size_t *free_, size_t *total) {
    NEED_CTX;
    *free_ = DEVICE_BYTES - used;
    *total = DEVICE_BYTES;
    return CUDA_SUCCESS;
}
static void *reserve(void *at, size_t size) {
    return mmap(at, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (at ? MAP_FIXED : 0), -1, 0);
}
static CUresult f_MemAddressReserve(CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr, unsigned long long fl) {
    (void)align, (void)addr, (void)fl;
    NEED_CTX;
    void *m = reserve(NULL, size);
    if (m == MAP_FAILED) return CUDA_ERROR_OUT_OF_MEMORY;
    *p = (CUdeviceptr)(uintptr_t)m;
    return CUDA_SUCCESS;
}
static CUresult f_MemAddressFree(CUdeviceptr p, size_t size) {
    NEED_CTX;
    return munmap((void *)(uintptr_t)p, size) == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
/* a handle is the memfd + 1, its size kept beside it */
static size_t sizes[4096];
static CUresult f_MemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *p,
                            unsigned long long fl) {
    (void)fl;
    NEED_CTX;
    if (p->type != CU_MEM_ALLOCATION_TYPE_PINNED || size % (2u << 20)) return CUDA_ERROR_INVALID_VALUE;
    if (used + size > DEVICE_BYTES) return CUDA_ERROR_OUT_OF_MEMORY;
    int fd = memfd_create("fake-cuda", 0);
    if (fd < 0 || fd >= 4096 || ftruncate(fd, (off_t)size) != 0) return CUDA_ERROR_OUT_OF_MEMORY;
    sizes[fd] = size;
    used += size;
    *h = (CUmemGenericAllocationHandle)fd + 1;
    return CUDA_SUCCESS;
}
static CUresult f_MemRelease(CUmemGenericAllocationHandle h) {
    NEED_CTX;
    int fd = (int)h - 1;
    if (fd < 0 || fd >= 4096 || sizes[fd] == 0) return CUDA_ERROR_INVALID_VALUE;
    used -= sizes[fd];
    sizes[fd] = 0;
    close(fd);
    return CUDA_SUCCESS;
}
static CUresult f_MemMap(CUdeviceptr p, size_t size, size_t off, CUmemGenericAllocationHandle h, unsigned long long fl) {
    (void)fl;
    NEED_CTX;
    void *m = mmap((void *)(uintptr_t)p, size, PROT_NONE, MAP_SHARED | MAP_FIXED, (int)h - 1, (off_t)off);
    return m == MAP_FAILED ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}
static CUresult f_MemUnmap(CUdeviceptr p, size_t size) {
    NEED_CTX;
    return reserve((void *)(uintptr_t)p, size) == MAP_FAILED ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}
static CUresult f_MemSetAccess(CUdeviceptr p, size_t size, const CUmemAccessDesc *d, size_t n) {
    NEED_CTX;
    if (n != 1 || d->flags != CU_MEM_ACCESS_FLAGS_PROT_READWRITE) return CUDA_ERROR_INVALID_VALUE;
    return mprotect((void *)(uintptr_t)p, size, PROT_READ | PROT_WRITE) == 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
static CUresult f_MemHostAlloc(void **p, size_t size, unsigned int fl) {
    (void)fl;
    NEED_CTX;
    return (*p = malloc(size)) ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
static CUresult f_MemFreeHost(void *p) { NEED_CTX; free(p); return CUDA_SUCCESS; }
static CUresult f_MemAlloc(CUdeviceptr *p, size_t size) {
    NEED_CTX;
    void *m = malloc(size);
    *p = (CUdeviceptr)(uintptr_t)m;
    return m ? CUDA_SUCCESS : CUDA_ERROR_OUT_OF_MEMORY;
}
static CUresult f_MemFree(CUdeviceptr p) { NEED_CTX; free((void *)(uintptr_t)p); return CUDA_SUCCESS; }
static CUresult f_MemcpyHtoD(CUdeviceptr d, const void *s, size_t n) {
    NEED_CTX;
    memcpy((void *)(uintptr_t)d, s, n);
    return CUDA_SUCCESS;
}
static CUresult f_MemcpyDtoH(void *d, CUdeviceptr s, size_t n) {
    NEED_CTX;
    memcpy(d, (const void *)(uintptr_t)s, n);
    return CUDA_SUCCESS;
}
static CUresult f_MemcpyHtoDAsync(CUdeviceptr d, const void *s, size_t n, CUstream st) { (void)st; return f_MemcpyHtoD(d, s, n); }
static CUresult f_MemcpyDtoHAsync(void *d, CUdeviceptr s, size_t n, CUstream st) { (void)st; return f_MemcpyDtoH(d, s, n); }
static CUresult f_MemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, CUstream st) {
    (void)st;
    NEED_CTX;
    memset((void *)(uintptr_t)d, v, n);
    return CUDA_SUCCESS;
}
static CUresult f_Memcpy2DAsync(const CUDA_MEMCPY2D *c, CUstream st) {
    (void)st;
    NEED_CTX;
    for (size_t y = 0; y < c->Height; y++) {
        char *dst = c->dstMemoryType == CU_MEMORYTYPE_HOST ? (char *)c->dstHost : (char *)(uintptr_t)c->dstDevice;
        const char *src = c->srcMemoryType == CU_MEMORYTYPE_HOST ? (const char *)c->srcHost
                                                                  : (const char *)(uintptr_t)c->srcDevice;
        memcpy(dst + y * c->dstPitch, src + y * c->srcPitch, c->WidthInBytes);
    }
    return CUDA_SUCCESS;
}

API CUresult cuDriverGetVersion(int *v) { *v = 13000; return CUDA_SUCCESS; }

static const struct { const char *name; void *fn; } table[] = {
#define F(n) { "cu" #n, (void *)f_##n }
    F(GetErrorString), F(GetErrorName), F(Init), F(DeviceGet), F(DeviceGetCount), F(DeviceGetAttribute), F(DeviceGetName),
    F(DevicePrimaryCtxRetain), F(CtxPushCurrent), F(CtxPopCurrent), F(CtxSynchronize), F(StreamSynchronize),
    F(MemGetAllocationGranularity), F(MemGetInfo), F(MemAddressReserve), F(MemAddressFree), F(MemCreate),
    F(MemRelease), F(MemMap), F(MemUnmap), F(MemSetAccess), F(MemHostAlloc), F(MemFreeHost), F(MemAlloc),
    F(MemFree), F(MemcpyHtoD), F(MemcpyDtoH), F(MemcpyHtoDAsync), F(MemcpyDtoHAsync), F(MemsetD8Async),
    F(Memcpy2DAsync), { "cuDriverGetVersion", (void *)cuDriverGetVersion },
#undef F
};

API CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                 CUdriverProcAddressQueryResult *status) {
    (void)flags;
    *pfn = NULL;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(table[i].name, symbol) == 0) {
            *pfn = table[i].fn;
        }
    }
    if (status) {
        *status = *pfn ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    }
    (void)version;
    return *pfn ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}
