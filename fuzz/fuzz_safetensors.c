/* libFuzzer harness for the safetensors reader: opens the input as a file
 * in memory and, when it opens, reads every tensor and metadata entry and
 * checks what the reader promises (names found again, byte counts that
 * match the shape, every byte readable). libFuzzer hands the input in a
 * heap block of exactly `size` bytes, so ASan flags any read past it. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "trimodal/io.h"

#define REQUIRE(x)                                                                       \
    do {                                                                                 \
        if (!(x)) __builtin_trap();                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tm_safetensors *st = NULL;
    tm_status s = tm_safetensors_open_memory(&st, data, size);
    if (s != TM_OK) {
        REQUIRE(st == NULL);
        REQUIRE(tm_last_error()[0] != 0);
        return 0;
    }
    volatile unsigned sink = 0;
    int n = tm_safetensors_count(st);
    for (int i = 0; i < n; i++) {
        const char *name = tm_safetensors_name(st, i);
        REQUIRE(name != NULL);
        REQUIRE(tm_safetensors_find(st, name) == i);
        tm_safetensors_entry info;
        REQUIRE(tm_safetensors_info(st, i, &info) == TM_OK);
        REQUIRE(info.offset <= size && info.nbytes <= size - info.offset);
        REQUIRE(info.ndim >= 0 && info.ndim <= TM_MAX_DIMS);
        tm_tensor t;
        s = tm_safetensors_get(st, name, &t);
        if (!info.supported) {
            REQUIRE(s == TM_ERR_UNSUPPORTED);
            continue;
        }
        REQUIRE(s == TM_OK);
        size_t nbytes = (size_t)tm_tensor_numel(&t) * tm_dtype_size(t.dtype);
        REQUIRE(nbytes == info.nbytes);
        REQUIRE(t.owns_data == 0 && tm_tensor_is_contiguous(&t));
        REQUIRE((uintptr_t)t.data % tm_dtype_size(t.dtype) == 0);
        const unsigned char *p = t.data;
        for (size_t k = 0; k < nbytes; k++) sink += p[k];
        /* The bytes are the file's, wherever they now live. */
        REQUIRE(nbytes == 0 || memcmp(p, data + info.offset, nbytes) == 0);
    }
    REQUIRE(tm_safetensors_name(st, n) == NULL);
    int m = tm_safetensors_metadata_count(st);
    for (int i = 0; i < m; i++) {
        const char *key = tm_safetensors_metadata_key(st, i);
        REQUIRE(key != NULL);
        const char *value = tm_safetensors_metadata(st, key);
        REQUIRE(value != NULL);
        sink += (unsigned)strlen(value);
    }
    (void)sink;
    tm_safetensors_close(st);
    return 0;
}
