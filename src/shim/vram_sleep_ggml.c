/* vram_sleep_ggml.c - the ggml side of vram_sleep.h: a pool is a buffer type for one model's weights whose
 * buffers are vs_regions (vram_sleep.c), so the weights can sleep and wake at fixed addresses.
 *
 * The buffer type is a copy of ggml's CUDA buffer type of the device (struct ggml_backend_buffer_type: iface,
 * device, context) with only iface.alloc_buffer replaced. The CUDA backend recognizes its buffer types by
 * iface.get_name (ggml_backend_buft_is_cuda), its device's supports_buft also compares buft->device, and
 * supports_op reads buft->context as its own buffer-type context: all three are CUDA's own here, so the CUDA
 * backend computes directly on these weights. The pool struct starts with the buffer type, so alloc_buffer(buft)
 * finds its pool by a cast.
 *
 * Its buffers have their own struct ggml_backend_buffer_i (below). ggml's ggml_backend_buffer_is_cuda() compares
 * iface.free_buffer, so it is false for them: device->device copies from or to them (cpy_tensor, the CUDA
 * backend's cpy_tensor_async) decline, and ggml stages such copies through the host. The CUDA backend's
 * set_tensor_async / get_tensor_async (and their _2d forms) assert buf->buft == ggml_backend_cuda_buffer_type(dev):
 * llama.cpp's loader uses set_tensor_async for weights only when loading without mmap AND when the buffer type is
 * the device's default one (llama_model_loader::load_all_data, upload_backend), which ours is not, so it takes the
 * synchronous path, our set_tensor. Nothing else in ggml-cuda compares a weight's buffer type by pointer outside
 * assert()s compiled out by NDEBUG (ggml_cuda_graph_evaluate_and_capture): a llama.cpp built without NDEBUG
 * (CMAKE_BUILD_TYPE=Debug) would fail those asserts on these weights. LoRA adapters allocate their tensors in the
 * buffer type of the weight they modify (llama-adapter.cpp), so on such a model they land in the pool too and
 * sleep and wake with it.
 *
 * Errors inside ggml callbacks cannot be returned: they print "vram_sleep: <call> failed: <reason>" and abort(),
 * as ggml's CUDA_CHECK does. Touching a sleeping buffer (set/get/memset/clear) is a bug and aborts too.
 */
#include "vs_internal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-backend-impl.h" /* struct ggml_backend_buffer_type / _buffer / _buffer_i (no ggml symbol is used) */

typedef ggml_backend_buffer_t (*buffer_init_fn)(ggml_backend_buffer_type_t, struct ggml_backend_buffer_i, void *,
                                                size_t);

struct vs_pool {
    struct ggml_backend_buffer_type buft; /* first member: alloc_buffer(buft, size) casts buft back to the pool */
    int device;
    buffer_init_fn buffer_init;
    pthread_mutex_t mu;   /* guards the list and every region's state; held during a buffer's copies */
    vs_region *head;
    size_t n;
};

/* Enter a ggml callback on `buffer`: lock its pool, make sure it is awake (touching a sleeping buffer is a bug:
 * the caller promised no context uses the weights), push the context. Returns the region; leave() undoes. */
static vs_region *enter(ggml_backend_buffer_t buffer, const char *what, int writes) {
    vs_region *r = (vs_region *)buffer->context;
    pthread_mutex_lock(&r->pool->mu);
    if (!r->mapped) {
        fprintf(stderr, "vram_sleep: %s on a sleeping weights buffer (%zu bytes at %p): the model must be woken first\n",
                what, r->size, (void *)(uintptr_t)r->ptr);
        abort();
    }
    if (writes) {
        r->host_valid = 0;
    }
    if (vsi_ctx_enter(r->device) != 0) {
        fprintf(stderr, "vram_sleep: %s: %s\n", what, vsi_err);
        abort();
    }
    return r;
}

static void leave(vs_region *r) {
    vsi_ctx_leave();
    pthread_mutex_unlock(&r->pool->mu);
}

static CUdeviceptr dptr(const struct ggml_tensor *t, size_t offset) {
    return (CUdeviceptr)(uintptr_t)((const char *)t->data + offset);
}

static void pool_unlink(vs_pool *p, vs_region *r) {
    pthread_mutex_lock(&p->mu);
    for (vs_region **it = &p->head; *it; it = &(*it)->next) {
        if (*it == r) {
            *it = r->next;
            p->n--;
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
}

static void buf_free(ggml_backend_buffer_t buffer) {
    vs_region *r = (vs_region *)buffer->context;
    pool_unlink(r->pool, r);
    vs_region_free(r);
}

static void *buf_get_base(ggml_backend_buffer_t buffer) {
    return vs_region_ptr((const vs_region *)buffer->context); /* valid awake or asleep */
}

static enum ggml_status buf_init_tensor(ggml_backend_buffer_t buffer, struct ggml_tensor *tensor) {
    /* views need nothing; the region was zeroed at creation, so quantized padding is already 0 */
    (void)buffer;
    (void)tensor;
    return GGML_STATUS_SUCCESS;
}

static void buf_memset_tensor(ggml_backend_buffer_t buffer, struct ggml_tensor *tensor, uint8_t value, size_t offset,
                              size_t size) {
    vs_region *r = enter(buffer, "memset_tensor", 1);
    CU_CHECK("cuMemsetD8Async", cu.MemsetD8Async(dptr(tensor, offset), value, size, PT));
    CU_CHECK("cuStreamSynchronize", cu.StreamSynchronize(PT));
    leave(r);
}

static void buf_set_tensor(ggml_backend_buffer_t buffer, struct ggml_tensor *tensor, const void *data, size_t offset,
                           size_t size) {
    vs_region *r = enter(buffer, "set_tensor", 1);
    CU_CHECK("cuMemcpyHtoDAsync", cu.MemcpyHtoDAsync(dptr(tensor, offset), data, size, PT));
    CU_CHECK("cuStreamSynchronize", cu.StreamSynchronize(PT));
    leave(r);
}

static void buf_get_tensor(ggml_backend_buffer_t buffer, const struct ggml_tensor *tensor, void *data, size_t offset,
                           size_t size) {
    vs_region *r = enter(buffer, "get_tensor", 0);
    CU_CHECK("cuMemcpyDtoHAsync", cu.MemcpyDtoHAsync(data, dptr(tensor, offset), size, PT));
    CU_CHECK("cuStreamSynchronize", cu.StreamSynchronize(PT));
    leave(r);
}

/* n_copies rows of `size` bytes, `stride_tensor` apart on the device and `stride_data` apart on the host */
static void copy_2d(const char *what, int to_device, CUdeviceptr dev, void *host, size_t size, size_t n_copies,
                    size_t stride_tensor, size_t stride_data) {
    if (size == 0 || n_copies == 0) {
        return;
    }
    CUDA_MEMCPY2D c;
    memset(&c, 0, sizeof c);
    if (to_device) {
        c.srcMemoryType = CU_MEMORYTYPE_HOST;
        c.srcHost = host;
        c.srcPitch = stride_data;
        c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
        c.dstDevice = dev;
        c.dstPitch = stride_tensor;
    } else {
        c.srcMemoryType = CU_MEMORYTYPE_DEVICE;
        c.srcDevice = dev;
        c.srcPitch = stride_tensor;
        c.dstMemoryType = CU_MEMORYTYPE_HOST;
        c.dstHost = host;
        c.dstPitch = stride_data;
    }
    c.WidthInBytes = size;
    c.Height = n_copies;
    CU_CHECK(what, cu.Memcpy2DAsync(&c, PT));
    CU_CHECK("cuStreamSynchronize", cu.StreamSynchronize(PT));
}

static void buf_set_tensor_2d(ggml_backend_buffer_t buffer, struct ggml_tensor *tensor, const void *data,
                              size_t offset, size_t size, size_t n_copies, size_t stride_tensor, size_t stride_data) {
    vs_region *r = enter(buffer, "set_tensor_2d", 1);
    copy_2d("cuMemcpy2DAsync (set_tensor_2d)", 1, dptr(tensor, offset), (void *)data, size, n_copies, stride_tensor,
            stride_data);
    leave(r);
}

static void buf_get_tensor_2d(ggml_backend_buffer_t buffer, const struct ggml_tensor *tensor, void *data,
                              size_t offset, size_t size, size_t n_copies, size_t stride_tensor, size_t stride_data) {
    vs_region *r = enter(buffer, "get_tensor_2d", 0);
    copy_2d("cuMemcpy2DAsync (get_tensor_2d)", 0, dptr(tensor, offset), data, size, n_copies, stride_tensor,
            stride_data);
    leave(r);
}

static bool buf_cpy_tensor(ggml_backend_buffer_t buffer, const struct ggml_tensor *src, struct ggml_tensor *dst) {
    (void)buffer;
    (void)src;
    (void)dst;
    return false; /* ggml falls back to get_tensor + set_tensor */
}

static void buf_clear(ggml_backend_buffer_t buffer, uint8_t value) {
    vs_region *r = enter(buffer, "clear", 1);
    CU_CHECK("cuMemsetD8Async", cu.MemsetD8Async(r->ptr, value, buffer->size, PT));
    CU_CHECK("cuStreamSynchronize", cu.StreamSynchronize(PT));
    leave(r);
}

static const struct ggml_backend_buffer_i buffer_iface = {
    /* .free_buffer   = */ buf_free,
    /* .get_base      = */ buf_get_base,
    /* .init_tensor   = */ buf_init_tensor,
    /* .memset_tensor = */ buf_memset_tensor,
    /* .set_tensor    = */ buf_set_tensor,
    /* .get_tensor    = */ buf_get_tensor,
    /* .set_tensor_2d = */ buf_set_tensor_2d,
    /* .get_tensor_2d = */ buf_get_tensor_2d,
    /* .cpy_tensor    = */ buf_cpy_tensor,
    /* .clear         = */ buf_clear,
    /* .reset         = */ NULL,
};

static ggml_backend_buffer_t pool_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size) {
    vs_pool *p = (vs_pool *)buft;
    vs_region *r = vs_region_create(p->device, size);
    if (r == NULL) {
        /* ggml only learns NULL (llama.cpp then throws "unable to allocate ... buffer"): say why here */
        fprintf(stderr, "vram_sleep: allocating %.2f MiB on device %d failed: %s\n", size / 1048576.0, p->device,
                vsi_err);
        return NULL;
    }
    r->pool = p;
    pthread_mutex_lock(&p->mu);
    r->next = p->head;
    p->head = r;
    p->n++;
    pthread_mutex_unlock(&p->mu);
    ggml_backend_buffer_t b = p->buffer_init(buft, buffer_iface, r, size);
    if (b == NULL) {
        pool_unlink(p, r);
        vs_region_free(r);
    }
    return b;
}

/* ------------------------------------------------------------------ pools */

VS_API vs_pool *vs_pool_new(void *cuda_buft, int device, void *buffer_init) {
    const struct ggml_backend_buffer_type *src = (const struct ggml_backend_buffer_type *)cuda_buft;
    if (src == NULL || buffer_init == NULL) {
        vsi_set_err("vs_pool_new: NULL buffer type or buffer_init");
        return NULL;
    }
    const char *name = src->iface.get_name ? src->iface.get_name((ggml_backend_buffer_type_t)src) : NULL;
    if (name == NULL || strncmp(name, "CUDA", 4) != 0) {
        vsi_set_err("vs_pool_new: not a CUDA buffer type (%s)", name ? name : "no name");
        return NULL;
    }
    if (src->iface.alloc_buffer_n != NULL) {
        /* ggml would call it instead of our alloc_buffer */
        vsi_set_err("vs_pool_new: buffer type %s has alloc_buffer_n (unknown ggml version)", name);
        return NULL;
    }
    if (vs_granularity(device) == 0) { /* the driver and the device are usable (vsi_err says why not) */
        return NULL;
    }
    vs_pool *p = calloc(1, sizeof *p);
    if (p == NULL) {
        vsi_set_err("vs_pool_new: out of host memory");
        return NULL;
    }
    p->buft = *src; /* same get_name, device and context as CUDA's: the CUDA backend takes it for its own */
    p->buft.iface.alloc_buffer = pool_alloc_buffer;
    p->device = device;
    p->buffer_init = (buffer_init_fn)buffer_init;
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

VS_API void *vs_pool_buft(vs_pool *p) { return p ? &p->buft : NULL; }

static int pool_each(vs_pool *p, int (*op)(vs_region *), const char *what) {
    if (p == NULL) {
        vsi_set_err("%s: NULL pool", what);
        return -1;
    }
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    for (vs_region *r = p->head; r; r = r->next) {
        if (op(r) != 0) {
            rc = -1; /* stop here; the other regions keep their state, and a retry skips those done */
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

VS_API int vs_pool_sleep(vs_pool *p) { return pool_each(p, vs_region_sleep, "vs_pool_sleep"); }
VS_API int vs_pool_wake(vs_pool *p) { return pool_each(p, vs_region_wake, "vs_pool_wake"); }

/* sums over the regions; kind 0: awake (all), 1: device bytes, 2: host bytes, 3: buffers */
static size_t pool_sum(const vs_pool *cp, int kind) {
    vs_pool *p = (vs_pool *)cp;
    if (p == NULL) {
        return 0;
    }
    size_t s = kind == 0 ? 1 : 0;
    pthread_mutex_lock(&p->mu);
    for (vs_region *r = p->head; r; r = r->next) {
        switch (kind) {
        case 0: s = s && r->mapped; break;
        case 1: s += r->size; break;
        case 2: s += vs_region_host_bytes(r); break;
        default: s++; break;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return s;
}

VS_API int vs_pool_awake(const vs_pool *p) { return p != NULL && pool_sum(p, 0) != 0; }
VS_API size_t vs_pool_device_bytes(const vs_pool *p) { return pool_sum(p, 1); }
VS_API size_t vs_pool_host_bytes(const vs_pool *p) { return pool_sum(p, 2); }
VS_API size_t vs_pool_buffers(const vs_pool *p) { return pool_sum(p, 3); }

VS_API void vs_pool_free(vs_pool *p) {
    if (p == NULL) {
        return;
    }
    size_t n = vs_pool_buffers(p);
    if (n != 0) {
        /* its buffers still point at p->buft: keep it (a leak) rather than leave them dangling */
        fprintf(stderr, "vram_sleep: vs_pool_free with %zu buffers still allocated: pool kept\n", n);
        return;
    }
    pthread_mutex_destroy(&p->mu);
    free(p);
}
