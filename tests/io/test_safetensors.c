/* safetensors reader and writer, and atomic file writing. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

/* Number of entries in tmpdir (without . and ..). */
static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) remove_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return b;
}

static void write_raw(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

/* The message of the last failure mentions want. */
#define CHECK_MSG(want)                                                                  \
    do {                                                                                 \
        test_checks++;                                                                   \
        if (!strstr(tm_last_error(), (want))) {                                          \
            test_failures++;                                                             \
            fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__,  \
                    tm_last_error(), (want));                                            \
        }                                                                                \
    } while (0)

/* A file in memory: 8-byte length, header, then data_len bytes 0, 1, 2, ... */
static unsigned char *mk(const char *header, size_t data_len, size_t *size)
{
    size_t hn = strlen(header);
    *size = 8 + hn + data_len;
    unsigned char *b = malloc(*size);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hn >> (8 * i));
    memcpy(b + 8, header, hn);
    for (size_t i = 0; i < data_len; i++) b[8 + hn + i] = (unsigned char)i;
    return b;
}

static tm_status open_header(const char *header, size_t data_len)
{
    size_t n;
    unsigned char *b = mk(header, data_len, &n);
    tm_safetensors *st = (tm_safetensors *)1;
    tm_status s = tm_safetensors_open_memory(&st, b, n);
    if (s == TM_OK) {
        /* Every valid file must also read back without trouble. */
        for (int i = 0; i < tm_safetensors_count(st); i++) {
            tm_tensor t;
            tm_safetensors_get_at(st, i, &t);
        }
        tm_safetensors_close(st);
    } else {
        CHECK(st == NULL);
    }
    free(b);
    return s;
}

/* ------------------------------------------------------------ writing */

static void test_round_trip(void)
{
    float f32[6] = {-1.5f, 0.f, 1.f, 2.25f, 3.5f, -0.125f};
    tm_bf16 bf[4] = {tm_f32_to_bf16(1.f), tm_f32_to_bf16(-2.f), tm_f32_to_bf16(0.5f),
                     tm_f32_to_bf16(3.140625f)};
    tm_f16 hf[3] = {tm_f32_to_f16(1.f), tm_f32_to_f16(-0.5f), tm_f32_to_f16(65504.f)};
    int32_t i32[4] = {-7, 0, INT32_MAX, INT32_MIN};
    int8_t i8[7] = {-128, -1, 0, 1, 2, 3, 127};
    float scalar = 42.f;
    float five[12];
    for (int i = 0; i < 12; i++) five[i] = (float)i * 0.5f;
    int64_t s_f32[] = {2, 3}, s_bf[] = {4}, s_hf[] = {3}, s_i32[] = {2, 2}, s_i8[] = {7},
            s_five[] = {2, 1, 3, 1, 2}, s_empty[] = {0, 4};
    tm_tensor *t[8];
    /* i8 first: the writer must still align the f32 tensors after it. */
    CHECK_OK(tm_tensor_wrap(&t[0], i8, TM_I8, 1, s_i8));
    CHECK_OK(tm_tensor_wrap(&t[1], f32, TM_F32, 2, s_f32));
    CHECK_OK(tm_tensor_wrap(&t[2], bf, TM_BF16, 1, s_bf));
    CHECK_OK(tm_tensor_wrap(&t[3], hf, TM_F16, 1, s_hf));
    CHECK_OK(tm_tensor_wrap(&t[4], i32, TM_I32, 2, s_i32));
    /* a non-NULL shape even for 0-d: tm_tensor_wrap memcpy()s from it */
    CHECK_OK(tm_tensor_wrap(&t[5], &scalar, TM_F32, 0, s_f32));
    CHECK_OK(tm_tensor_wrap(&t[6], five, TM_F32, 5, s_five));
    CHECK_OK(tm_tensor_new(&t[7], TM_I32, 2, s_empty));
    const char *names[8] = {"int8.bytes", "w.f32", "bf16", "f16", "i32", "scalar",
                            "five.d", "empty"};
    tm_named_tensor nt[8];
    for (int i = 0; i < 8; i++) nt[i] = (tm_named_tensor){names[i], t[i]};
    const char *mk_[] = {"format", "odd \"key\"\n", "unicode"};
    const char *mv[] = {"pt", "tab\there \\ back", "caf\xc3\xa9 \xe2\x82\xac"};
    const char *path = tmp_path("rt.safetensors");
    CHECK_OK(tm_safetensors_write(path, nt, 8, mk_, mv, 3));
    CHECK(count_files(tmpdir) == 1); /* no temporary left */

    /* The header: padded so the data starts at a multiple of 8. */
    size_t fsize;
    unsigned char *raw = read_all(path, &fsize);
    CHECK(raw != NULL);
    uint64_t hn = 0;
    for (int i = 7; i >= 0; i--) hn = (hn << 8) | raw[i];
    CHECK((8 + hn) % 8 == 0);
    CHECK(raw[8] == '{');

    for (int pass = 0; pass < 2; pass++) {
        tm_safetensors *st = NULL;
        if (pass == 0) CHECK_OK(tm_safetensors_open(&st, path));
        else CHECK_OK(tm_safetensors_open_memory(&st, raw, fsize));
        if (!st) continue;
        CHECK(tm_safetensors_count(st) == 8);
        const unsigned char *base = NULL;
        for (int i = 0; i < 8; i++) {
            CHECK(strcmp(tm_safetensors_name(st, i), names[i]) == 0);
            CHECK(tm_safetensors_find(st, names[i]) == i);
            tm_tensor g;
            CHECK_OK(tm_safetensors_get(st, names[i], &g));
            CHECK(g.dtype == t[i]->dtype && g.ndim == t[i]->ndim && !g.owns_data);
            for (int d = 0; d < g.ndim; d++) CHECK(g.shape[d] == t[i]->shape[d]);
            CHECK(tm_tensor_is_contiguous(&g));
            size_t nb = (size_t)tm_tensor_numel(&g) * tm_dtype_size(g.dtype);
            CHECK(nb == 0 || memcmp(g.data, t[i]->data, nb) == 0);
            CHECK((uintptr_t)g.data % tm_dtype_size(g.dtype) == 0);
            tm_safetensors_entry info;
            CHECK_OK(tm_safetensors_info(st, i, &info));
            CHECK(info.nbytes == nb && info.supported && info.offset % tm_dtype_size(g.dtype) == 0);
            if (nb) {
                /* Zero-copy: every tensor lies at its file offset from one base. */
                const unsigned char *b = (const unsigned char *)g.data - info.offset;
                if (!base) base = b;
                CHECK(b == base);
                if (pass == 1) CHECK(b == raw);
            }
        }
        if (pass == 0) CHECK(base && (uintptr_t)base % 4096 == 0); /* the mapping */
        CHECK(tm_safetensors_find(st, "nope") == -1);
        CHECK(tm_safetensors_name(st, 8) == NULL && tm_safetensors_name(st, -1) == NULL);
        tm_tensor g;
        CHECK_STATUS(tm_safetensors_get(st, "nope", &g), TM_ERR_INVALID);
        CHECK_MSG("nope");
        CHECK_STATUS(tm_safetensors_get_at(st, 99, &g), TM_ERR_INVALID);
        CHECK(tm_safetensors_metadata_count(st) == 3);
        for (int i = 0; i < 3; i++) {
            CHECK(strcmp(tm_safetensors_metadata_key(st, i), mk_[i]) == 0);
            const char *v = tm_safetensors_metadata(st, mk_[i]);
            CHECK(v && strcmp(v, mv[i]) == 0);
        }
        CHECK(tm_safetensors_metadata(st, "absent") == NULL);
        CHECK(tm_safetensors_metadata_key(st, 3) == NULL);
        tm_safetensors_close(st);
    }
    free(raw);
    tm_safetensors_close(NULL);

    /* No tensors, no metadata: "{}" padded. */
    CHECK_OK(tm_safetensors_write(path, NULL, 0, NULL, NULL, 0));
    tm_safetensors *st;
    CHECK_OK(tm_safetensors_open(&st, path));
    CHECK(tm_safetensors_count(st) == 0 && tm_safetensors_metadata_count(st) == 0);
    tm_safetensors_close(st);
    raw = read_all(path, &fsize);
    /* only the checksum's metadata (tests/io/test_checksum.c) */
    CHECK(raw && fsize % 8 == 0 && memcmp(raw + 8, "{\"__metadata__\":{\"__checksum__\":", 32) == 0);
    free(raw);

    for (int i = 0; i < 8; i++) tm_tensor_free(t[i]);
    unlink(path);
}

static void test_strided(void)
{
    /* A permuted view (inner stride != 1) and a stepped slice, plus one
     * big enough to pass through the gather buffer more than once. */
    int64_t shape[2] = {3, 4};
    tm_tensor *a;
    CHECK_OK(tm_tensor_new(&a, TM_F32, 2, shape));
    float *ad = a->data;
    for (int i = 0; i < 12; i++) ad[i] = (float)i;
    tm_tensor at, sl;
    int perm[2] = {1, 0};
    CHECK_OK(tm_tensor_view_permute(&at, a, perm));
    CHECK_OK(tm_tensor_view_slice(&sl, a, 1, 1, 4, 2)); /* columns 1, 3 */
    int64_t bshape[2] = {700, 600};
    tm_tensor *big, bt;
    CHECK_OK(tm_tensor_new(&big, TM_BF16, 2, bshape));
    tm_bf16 *bd = big->data;
    for (int64_t i = 0; i < 700 * 600; i++) bd[i] = (tm_bf16)(i * 7919);
    CHECK_OK(tm_tensor_view_permute(&bt, big, perm));
    CHECK(!tm_tensor_is_contiguous(&at) && !tm_tensor_is_contiguous(&sl));
    tm_named_tensor nt[3] = {{"t", &at}, {"s", &sl}, {"big", &bt}};
    const char *path = tmp_path("strided.safetensors");
    CHECK_OK(tm_safetensors_write(path, nt, 3, NULL, NULL, 0));
    tm_safetensors *st;
    CHECK_OK(tm_safetensors_open(&st, path));
    tm_tensor g;
    CHECK_OK(tm_safetensors_get(st, "t", &g));
    CHECK(g.shape[0] == 4 && g.shape[1] == 3);
    float want_t[12], want_s[6] = {1, 3, 5, 7, 9, 11};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) want_t[i * 3 + j] = (float)(j * 4 + i);
    check_close("transposed", g.data, want_t, 12, 0, 0);
    CHECK_OK(tm_safetensors_get(st, "s", &g));
    CHECK(g.shape[0] == 3 && g.shape[1] == 2);
    check_close("sliced", g.data, want_s, 6, 0, 0);
    CHECK_OK(tm_safetensors_get(st, "big", &g));
    const tm_bf16 *gd = g.data;
    int bad = 0;
    for (int64_t i = 0; i < 600; i++)
        for (int64_t j = 0; j < 700; j++)
            if (gd[i * 700 + j] != bd[j * 600 + i]) bad++;
    CHECK(bad == 0);
    tm_safetensors_close(st);
    tm_tensor_free(a);
    tm_tensor_free(big);
    unlink(path);
}

static void test_streaming_writer(void)
{
    int64_t s3[] = {3};
    tm_tensor a = {.dtype = TM_F32, .ndim = 2, .shape = {2, 2}};
    tm_tensor b = {.dtype = TM_I8, .ndim = 1, .shape = {3}};
    tm_tensor c = {.dtype = TM_F32, .ndim = 1, .shape = {3}};
    tm_named_tensor nt[3] = {{"a", &a}, {"b", &b}, {"c", &c}};
    const char *path = tmp_path("stream.safetensors");
    tm_safetensors_writer *w;
    CHECK_OK(tm_safetensors_writer_open(&w, path, nt, 3, NULL, NULL, 0));
    /* Data order: the f32 tensors a and c, then the i8 tensor b. */
    CHECK(tm_safetensors_writer_next(w) == 0);
    float ac[7] = {1, 2, 3, 4, 5, 6, 7};
    CHECK_OK(tm_safetensors_writer_write(w, ac, 10)); /* ends inside c */
    CHECK(tm_safetensors_writer_next(w) == 2);
    CHECK_OK(tm_safetensors_writer_write(w, (char *)ac + 10, 18));
    CHECK(tm_safetensors_writer_next(w) == 1);
    int8_t bd[3] = {-1, 0, 1};
    tm_tensor *bt;
    CHECK_OK(tm_tensor_wrap(&bt, bd, TM_I8, 1, s3));
    CHECK_OK(tm_safetensors_writer_write_tensor(w, bt));
    CHECK(tm_safetensors_writer_next(w) == -1);
    CHECK_OK(tm_safetensors_writer_finish(w));
    tm_safetensors *st;
    CHECK_OK(tm_safetensors_open(&st, path));
    tm_tensor g;
    CHECK_OK(tm_safetensors_get(st, "c", &g));
    check_close("streamed c", g.data, ac + 4, 3, 0, 0);
    CHECK_OK(tm_safetensors_get(st, "b", &g));
    CHECK(memcmp(g.data, bd, 3) == 0);
    tm_safetensors_close(st);

    size_t old_size;
    unsigned char *old = read_all(path, &old_size);

    /* Too many bytes, a wrong shape, too few bytes: each fails, the old
     * file stays and no temporary file is left. */
    CHECK_OK(tm_safetensors_writer_open(&w, path, nt, 3, NULL, NULL, 0));
    float more[8] = {0};
    CHECK_STATUS(tm_safetensors_writer_write(w, more, 32), TM_ERR_INVALID);
    CHECK_MSG("1 more bytes");
    CHECK_STATUS(tm_safetensors_writer_write(w, ac, 1), TM_ERR_INVALID); /* spent */
    CHECK_STATUS(tm_safetensors_writer_finish(w), TM_ERR_INVALID);
    CHECK_OK(tm_safetensors_writer_open(&w, path, nt, 3, NULL, NULL, 0));
    CHECK_STATUS(tm_safetensors_writer_write_tensor(w, bt), TM_ERR_INVALID);
    CHECK_MSG("differs");
    tm_safetensors_writer_abort(w);
    CHECK_OK(tm_safetensors_writer_open(&w, path, nt, 3, NULL, NULL, 0));
    CHECK_OK(tm_safetensors_writer_write(w, ac, 8));
    CHECK_STATUS(tm_safetensors_writer_finish(w), TM_ERR_INVALID);
    CHECK_MSG("8 of 31");
    tm_safetensors_writer_abort(NULL);
    CHECK(count_files(tmpdir) == 1);
    size_t now_size;
    unsigned char *now = read_all(path, &now_size);
    CHECK(old && now && now_size == old_size && memcmp(old, now, old_size) == 0);
    free(old);
    free(now);
    tm_tensor_free(bt);
    unlink(path);
}

static void test_writer_arguments(void)
{
    float x[2] = {1, 2};
    int64_t s[] = {2};
    tm_tensor *t;
    CHECK_OK(tm_tensor_wrap(&t, x, TM_F32, 1, s));
    tm_tensor six = *t;
    six.ndim = 6;
    tm_tensor neg = *t;
    neg.shape[0] = -1;
    const char *path = tmp_path("args.safetensors");
    write_raw(path, "old", 3);
    struct {
        tm_named_tensor nt[2];
        int n;
        const char *msg;
    } cases[] = {
        {{{"", t}}, 1, "empty name"},
        {{{NULL, t}}, 1, "empty name"},
        {{{"a", t}, {"a", t}}, 2, "appears twice"},
        {{{"__metadata__", t}}, 1, "__metadata__"},
        {{{"bad\xff", t}}, 1, "UTF-8"},
        {{{"a", NULL}}, 1, "NULL"},
        {{{"a", &six}}, 1, "dimensions"},
        {{{"a", &neg}}, 1, "negative"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK_STATUS(tm_safetensors_write(path, cases[i].nt, cases[i].n, NULL, NULL, 0),
                     TM_ERR_INVALID);
        CHECK_MSG(cases[i].msg);
    }
    const char *k2[] = {"k", "k"}, *v2[] = {"1", "2"}, *kb[] = {"k\xc0\x80"};
    tm_named_tensor ok = {"a", t};
    CHECK_STATUS(tm_safetensors_write(path, &ok, 1, k2, v2, 2), TM_ERR_INVALID);
    CHECK_MSG("appears twice");
    CHECK_STATUS(tm_safetensors_write(path, &ok, 1, kb, v2, 1), TM_ERR_INVALID);
    CHECK_MSG("UTF-8");
    CHECK_STATUS(tm_safetensors_write(path, &ok, 1, NULL, NULL, 1), TM_ERR_INVALID);
    size_t n;
    unsigned char *b = read_all(path, &n);
    CHECK(b && n == 3 && memcmp(b, "old", 3) == 0);
    free(b);
    CHECK(count_files(tmpdir) == 1);
    tm_tensor_free(t);
    unlink(path);
}

static void test_atomic_file(void)
{
    const char *path = tmp_path("atomic.bin");
    CHECK_OK(tm_write_file_atomic(path, "hello", 5));
    size_t n;
    unsigned char *b = read_all(path, &n);
    CHECK(b && n == 5 && memcmp(b, "hello", 5) == 0);
    free(b);
    CHECK_OK(tm_write_file_atomic(path, "", 0));
    b = read_all(path, &n);
    CHECK(b && n == 0);
    free(b);
    CHECK_OK(tm_write_file_atomic(path, "second", 6));
    CHECK(count_files(tmpdir) == 1);

    /* Into a missing directory: an error naming the path. */
    char missing[512];
    snprintf(missing, sizeof missing, "%s/no/such/dir/f", tmpdir);
    CHECK_STATUS(tm_write_file_atomic(missing, "x", 1), TM_ERR_IO);
    CHECK_MSG("no/such/dir/f");
    CHECK_STATUS(tm_safetensors_write(missing, NULL, 0, NULL, NULL, 0), TM_ERR_IO);

    /* Over a directory: rename fails, the temporary file goes away, and
     * the directory (and the old file beside it) stay. */
    char sub[512];
    snprintf(sub, sizeof sub, "%s/subdir", tmpdir);
    CHECK(mkdir(sub, 0700) == 0);
    CHECK_STATUS(tm_write_file_atomic(sub, "x", 1), TM_ERR_IO);
    CHECK(count_files(tmpdir) == 2);
    struct stat sb;
    CHECK(stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode));
    rmdir(sub);
    b = read_all(path, &n);
    CHECK(b && n == 6 && memcmp(b, "second", 6) == 0);
    free(b);

    /* Aborting and pieces. */
    tm_atomic_file *f;
    CHECK_OK(tm_atomic_file_open(&f, path));
    CHECK(strncmp(tm_atomic_file_temp_path(f), path, strlen(path)) == 0);
    CHECK(count_files(tmpdir) == 2);
    CHECK_OK(tm_atomic_file_write(f, "par", 3));
    tm_atomic_file_abort(f);
    CHECK(count_files(tmpdir) == 1);
    CHECK_OK(tm_atomic_file_open(&f, path));
    CHECK_OK(tm_atomic_file_write(f, "ab", 2));
    CHECK_OK(tm_atomic_file_write(f, "cd", 2));
    CHECK_OK(tm_atomic_file_commit(f));
    b = read_all(path, &n);
    CHECK(b && n == 4 && memcmp(b, "abcd", 4) == 0);
    free(b);
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) != 0600 && (sb.st_mode & 0400));
    tm_atomic_file_abort(NULL);
    CHECK_STATUS(tm_write_file_atomic("", "x", 1), TM_ERR_INVALID);
    unlink(path);
}

/* ------------------------------------------------------------ reading */

static void test_python_files(void)
{
    tm_safetensors *st;
    CHECK_OK(tm_safetensors_open(&st, test_data_path("io/py_basic.safetensors")));
    if (!st) return;
    /* The header lists names sorted; the data is ordered differently. */
    const char *order[] = {"bf16", "empty", "f16", "f32", "five_d", "i32", "i8",
                           "position_ids", "scalar"};
    CHECK(tm_safetensors_count(st) == 9);
    for (int i = 0; i < 9 && i < tm_safetensors_count(st); i++)
        CHECK(strcmp(tm_safetensors_name(st, i), order[i]) == 0);
    tm_tensor g;
    float want_f32[] = {-1.5f, 0.f, 1.f, 2.25f, 3.5f, -0.125f};
    CHECK_OK(tm_safetensors_get(st, "f32", &g));
    CHECK(g.dtype == TM_F32 && g.ndim == 2 && g.shape[0] == 2 && g.shape[1] == 3);
    check_close("py f32", g.data, want_f32, 6, 0, 0);
    float want_bf[] = {1.f, -2.f, 0.5f, 3.140625f}, got[6];
    CHECK_OK(tm_safetensors_get(st, "bf16", &g));
    CHECK(g.dtype == TM_BF16 && g.shape[0] == 4);
    for (int i = 0; i < 4; i++) got[i] = tm_bf16_to_f32(((const tm_bf16 *)g.data)[i]);
    check_close("py bf16", got, want_bf, 4, 0, 0);
    float want_hf[] = {1.f, -0.5f, 65504.f, 6.103515625e-05f};
    CHECK_OK(tm_safetensors_get(st, "f16", &g));
    CHECK(g.dtype == TM_F16 && g.ndim == 2);
    for (int i = 0; i < 4; i++) got[i] = tm_f16_to_f32(((const tm_f16 *)g.data)[i]);
    check_close("py f16", got, want_hf, 4, 0, 0);
    CHECK_OK(tm_safetensors_get(st, "i32", &g));
    const int32_t *gi = g.data;
    CHECK(g.dtype == TM_I32 && gi[0] == -7 && gi[1] == 0 && gi[2] == INT32_MAX);
    CHECK_OK(tm_safetensors_get(st, "i8", &g));
    const int8_t *g8 = g.data;
    CHECK(g.dtype == TM_I8 && g8[0] == -128 && g8[1] == -1 && g8[4] == 127);
    CHECK_OK(tm_safetensors_get(st, "scalar", &g));
    CHECK(g.ndim == 0 && *(const float *)g.data == 42.f);
    CHECK_OK(tm_safetensors_get(st, "empty", &g));
    CHECK(g.ndim == 2 && g.shape[0] == 0 && g.shape[1] == 3 && tm_tensor_numel(&g) == 0);
    CHECK_OK(tm_safetensors_get(st, "five_d", &g));
    CHECK(g.ndim == 5 && g.shape[1] == 2 && g.shape[3] == 2 &&
          ((const float *)g.data)[3] == 4.f);
    /* I64 opens, is described, but is not read. */
    CHECK_STATUS(tm_safetensors_get(st, "position_ids", &g), TM_ERR_UNSUPPORTED);
    CHECK_MSG("I64");
    CHECK_MSG("position_ids");
    tm_safetensors_entry info;
    CHECK_OK(tm_safetensors_info(st, tm_safetensors_find(st, "position_ids"), &info));
    CHECK(!info.supported && strcmp(info.dtype_name, "I64") == 0 && info.nbytes == 16 &&
          info.ndim == 1 && info.shape[0] == 2);
    CHECK_STATUS(tm_safetensors_info(st, 9, &info), TM_ERR_INVALID);
    CHECK(strcmp(tm_safetensors_metadata(st, "format"), "pt") == 0);
    tm_safetensors_close(st);

    /* Misaligned f32 (no header padding): copied once, then the same copy. */
    CHECK_OK(tm_safetensors_open(&st, test_data_path("io/py_unaligned.safetensors")));
    if (!st) return;
    tm_tensor g2;
    CHECK_OK(tm_safetensors_get(st, "b_f32", &g));
    CHECK_OK(tm_safetensors_get(st, "b_f32", &g2));
    CHECK(g.data == g2.data && (uintptr_t)g.data % 4 == 0 && !g.owns_data);
    CHECK_OK(tm_safetensors_info(st, 1, &info));
    CHECK(info.offset % 4 != 0);
    float want_b[] = {0.25f, -8.f};
    check_close("py unaligned", g.data, want_b, 2, 0, 0);
    CHECK_OK(tm_safetensors_get(st, "a_bytes", &g));
    CHECK(((const int8_t *)g.data)[2] == 3);
    tm_safetensors_close(st);
}

/* Many threads asking for the same misaligned tensor get one copy. */
typedef struct {
    const tm_safetensors *st;
    const void *ptr[64];
} race_ctx;

static void race_task(void *ctx, int64_t i, int64_t n)
{
    race_ctx *c = ctx;
    tm_tensor g;
    if (tm_safetensors_get(c->st, "b_f32", &g) == TM_OK) c->ptr[i] = g.data;
    (void)n;
}

static void test_concurrent_copy(void)
{
    size_t n;
    unsigned char *b = read_all(test_data_path("io/py_unaligned.safetensors"), &n);
    CHECK(b != NULL);
    if (!b) return;
    for (int round = 0; round < 20; round++) {
        race_ctx c = {0};
        tm_safetensors *st;
        CHECK_OK(tm_safetensors_open_memory(&st, b, n));
        c.st = st;
        tm_parallel_for(64, race_task, &c);
        int same = 1;
        for (int i = 0; i < 64; i++) same &= c.ptr[i] && c.ptr[i] == c.ptr[0];
        CHECK(same);
        tm_safetensors_close(st);
    }
    free(b);
}

static void test_truncation(void)
{
    /* Every proper prefix of a valid file fails with a format error, from
     * memory and from disk. */
    size_t n;
    unsigned char *b = read_all(test_data_path("io/py_basic.safetensors"), &n);
    CHECK(b != NULL);
    if (!b) return;
    const char *path = tmp_path("prefix.safetensors");
    int wrong = 0, no_msg = 0;
    for (size_t len = 0; len < n; len++) {
        /* A fresh heap copy of exactly len bytes, so ASan sees any overread. */
        unsigned char *p = malloc(len ? len : 1);
        memcpy(p, b, len);
        tm_safetensors *st = NULL;
        tm_status s = tm_safetensors_open_memory(&st, p, len);
        if (s != TM_ERR_FORMAT || st) wrong++;
        if (!strstr(tm_last_error(), "<memory>")) no_msg++;
        write_raw(path, p, len);
        s = tm_safetensors_open(&st, path);
        if (s != TM_ERR_FORMAT || st) wrong++;
        if (!strstr(tm_last_error(), path)) no_msg++;
        free(p);
    }
    CHECK(wrong == 0);
    CHECK(no_msg == 0);
    tm_safetensors *st;
    CHECK_OK(tm_safetensors_open_memory(&st, b, n));
    tm_safetensors_close(st);
    /* One byte too many is a format error too (the data must be covered). */
    unsigned char *longer = malloc(n + 1);
    memcpy(longer, b, n);
    longer[n] = 0;
    CHECK_STATUS(tm_safetensors_open_memory(&st, longer, n + 1), TM_ERR_FORMAT);
    CHECK_MSG("after the last tensor");
    free(longer);
    free(b);
    unlink(path);
}

static void test_corrupt_headers(void)
{
    static const struct {
        const char *header;
        size_t data;
        tm_status want;
        const char *msg;
    } cases[] = {
        /* valid, as controls */
        {"{}", 0, TM_OK, ""},
        {"{}      ", 0, TM_OK, ""},
        {"{} \n\t\r", 0, TM_OK, ""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8, TM_OK, ""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[0,0]}}", 0, TM_OK, ""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[8,8]}}", 8, TM_OK, ""},
        {"{\"a\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]}}", 2, TM_OK, ""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4.0]}}", 4, TM_OK, ""},
        /* not JSON, not an object, not padded with spaces */
        {"", 0, TM_ERR_FORMAT, "start with '{'"},
        {" {}", 0, TM_ERR_FORMAT, "start with '{'"},
        {"[]", 0, TM_ERR_FORMAT, "start with '{'"},
        {"{", 0, TM_ERR_FORMAT, "not valid JSON"},
        {"{\"a\":", 0, TM_ERR_FORMAT, "not valid JSON"},
        {"{\"a\":{\"dtype\":\"F32\",}}", 0, TM_ERR_FORMAT, "not valid JSON"},
        {"{}x", 0, TM_ERR_FORMAT, "after its JSON"},
        {"{}\x01", 0, TM_ERR_FORMAT, "after its JSON"},
        {"{}{}", 0, TM_ERR_FORMAT, "after its JSON"},
        {"{\"a\xff\":1}", 0, TM_ERR_FORMAT, "UTF-8"},
        {"{\"\xed\xa0\x80\":1}", 0, TM_ERR_FORMAT, "UTF-8"},
        /* entries */
        {"{\"a\":1}", 0, TM_ERR_FORMAT, "not a JSON object"},
        {"{\"a\":{\"shape\":[],\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT, "missing"},
        {"{\"a\":{\"dtype\":5,\"shape\":[],\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT,
         "not a string"},
        {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT,
         "unknown dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT, "\"shape\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT,
         "\"shape\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[]}}", 4, TM_ERR_FORMAT, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4,8]}}", 8, TM_ERR_FORMAT,
         "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0]}}", 4, TM_ERR_FORMAT,
         "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[\"0\",4]}}", 4,
         TM_ERR_FORMAT, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
         TM_ERR_FORMAT, "appears twice"},
        /* numbers: negative, fractional, huge */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT,
         "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT,
         "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1e300],\"data_offsets\":[0,4]}}", 4,
         TM_ERR_FORMAT, "shape[1]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT,
         "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-1,3]}}", 4, TM_ERR_FORMAT,
         "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]}}", 4, TM_ERR_FORMAT,
         "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551620]}}",
         4, TM_ERR_FORMAT, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
         "\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT, "overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[9007199254740993],\"data_offsets\":[0,4]}}", 4,
         TM_ERR_FORMAT, "shape[0]"},
        /* dimensions */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         TM_ERR_UNSUPPORTED, "6 dimensions"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, TM_OK,
         ""},
        /* lengths and ranges */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, TM_ERR_FORMAT,
         "need 8"},
        {"{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, TM_ERR_FORMAT,
         "whole bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, TM_ERR_FORMAT,
         "end before"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, TM_ERR_FORMAT,
         "run past"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, TM_ERR_FORMAT,
         "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, TM_ERR_FORMAT,
         "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}", 8, TM_ERR_FORMAT,
         "overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, TM_ERR_FORMAT,
         "belong to no tensor"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, TM_ERR_FORMAT,
         "belong to no tensor"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 5, TM_ERR_FORMAT,
         "after the last tensor"},
        {"{}", 3, TM_ERR_FORMAT, "after the last tensor"},
        /* duplicates */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, TM_ERR_FORMAT,
         "\"a\" appears twice"},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, TM_ERR_FORMAT, "appears twice"},
        {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, TM_ERR_FORMAT, "\"k\" appears twice"},
        /* metadata */
        {"{\"__metadata__\":{\"k\":\"v\",\"e\":\"\"}}", 0, TM_OK, ""},
        {"{\"__metadata__\":[]}", 0, TM_ERR_FORMAT, "__metadata__ is not an object"},
        {"{\"__metadata__\":{\"k\":1}}", 0, TM_ERR_FORMAT, "\"k\" is not a string"},
        {"{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, TM_ERR_FORMAT, "not a string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tm_clear_error();
        tm_status s = open_header(cases[i].header, cases[i].data);
        test_checks++;
        if (s != cases[i].want) {
            test_failures++;
            fprintf(stderr, "case %zu (%s): got %s, want %s (%s)\n", i, cases[i].header,
                    tm_status_name(s), tm_status_name(cases[i].want), tm_last_error());
        }
        if (cases[i].want != TM_OK) {
            test_checks++;
            if (!strstr(tm_last_error(), cases[i].msg) || !strstr(tm_last_error(), "<memory>")) {
                test_failures++;
                fprintf(stderr, "case %zu (%s): message \"%s\" lacks \"%s\"\n", i,
                        cases[i].header, tm_last_error(), cases[i].msg);
            }
        }
    }

    /* A header with a NUL byte inside. */
    static const char nul_header[] = "{\"a\0\":1}";
    size_t n;
    unsigned char *b = mk("{\"ab\":1}", 0, &n);
    memcpy(b + 8, nul_header, 8);
    tm_safetensors *st;
    CHECK_STATUS(tm_safetensors_open_memory(&st, b, n), TM_ERR_FORMAT);
    CHECK_MSG("NUL");
    free(b);

    /* Header lengths: past the end (any high bits), and within the file
     * but over the 100 MiB limit. */
    uint64_t lens[] = {9, 1ull << 32, 1ull << 63, UINT64_MAX};
    b = mk("{}", 0, &n);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (int k = 0; k < 8; k++) b[k] = (unsigned char)(lens[i] >> (8 * k));
        CHECK_STATUS(tm_safetensors_open_memory(&st, b, n), TM_ERR_FORMAT);
        CHECK_MSG("larger than the rest of the file");
    }
    free(b);
    size_t big = TM_SAFETENSORS_MAX_HEADER + 9;
    b = calloc(1, big + 8);
    if (b) {
        uint64_t hl = TM_SAFETENSORS_MAX_HEADER + 1;
        for (int k = 0; k < 8; k++) b[k] = (unsigned char)(hl >> (8 * k));
        CHECK_STATUS(tm_safetensors_open_memory(&st, b, big + 8), TM_ERR_LIMIT);
        CHECK_MSG("limit");
        free(b);
    }

    /* Dtypes that open but cannot be read. */
    const char *unsupported[] = {"F64", "I64", "U8", "BOOL", "I16", "F8_E4M3"};
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++) {
        char h[256];
        snprintf(h, sizeof h, "{\"x\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[0,8]}}",
                 unsupported[i]);
        /* U8, BOOL, F8 take 1 byte, I16 2: size the data to match. */
        size_t bytes = strcmp(unsupported[i], "F64") == 0 || strcmp(unsupported[i], "I64") == 0
                           ? 8
                           : strcmp(unsupported[i], "I16") == 0 ? 2 : 1;
        snprintf(h, sizeof h, "{\"x\":{\"dtype\":\"%s\",\"shape\":[1],\"data_offsets\":[0,%zu]}}",
                 unsupported[i], bytes);
        b = mk(h, bytes, &n);
        CHECK_OK(tm_safetensors_open_memory(&st, b, n));
        if (st) {
            tm_tensor g;
            CHECK_STATUS(tm_safetensors_get(st, "x", &g), TM_ERR_UNSUPPORTED);
            CHECK_MSG(unsupported[i]);
            tm_safetensors_close(st);
        }
        free(b);
    }

    /* Not there, not a file. */
    CHECK_STATUS(tm_safetensors_open(&st, tmp_path("missing.safetensors")), TM_ERR_IO);
    CHECK_MSG("missing.safetensors");
    CHECK_STATUS(tm_safetensors_open(&st, tmpdir), TM_ERR_IO);
    const char *fifo = tmp_path("fifo");
    if (mkfifo(fifo, 0600) == 0) { /* must not block waiting for a writer */
        CHECK_STATUS(tm_safetensors_open(&st, fifo), TM_ERR_IO);
        CHECK_MSG("not a regular file");
        unlink(fifo);
    }
    CHECK_STATUS(tm_safetensors_open_memory(&st, NULL, 0), TM_ERR_FORMAT);
}

/* Every allocation failure path: each fails cleanly (ASan checks that
 * nothing leaks) until enough allocations succeed. */
static void test_alloc_failures(void)
{
    size_t n;
    unsigned char *b = read_all(test_data_path("io/py_unaligned.safetensors"), &n);
    CHECK(b != NULL);
    if (!b) return;
    int ok = 0, wrong = 0;
    for (long k = 1; k < 100 && !ok; k++) {
        tm_safetensors *st = NULL;
        tm_alloc_fail_after(k);
        tm_status s = tm_safetensors_open_memory(&st, b, n);
        if (s == TM_OK) {
            tm_tensor g;
            s = tm_safetensors_get(st, "b_f32", &g); /* the copy allocates */
            ok = s == TM_OK;
            tm_safetensors_close(st);
        }
        tm_alloc_fail_after(0);
        if (!ok && s != TM_ERR_NOMEM) wrong++;
    }
    CHECK(ok && wrong == 0);
    free(b);

    float x[6] = {1, 2, 3, 4, 5, 6};
    int64_t s23[] = {2, 3};
    tm_tensor *t;
    CHECK_OK(tm_tensor_wrap(&t, x, TM_F32, 2, s23));
    tm_tensor v; /* (3, 2) with strides (1, 3): written through the gather buffer */
    int perm[2] = {1, 0};
    CHECK_OK(tm_tensor_view_permute(&v, t, perm));
    tm_named_tensor nt[2] = {{"a", t}, {"b", &v}};
    const char *k[] = {"m"}, *val[] = {"v"};
    const char *path = tmp_path("nomem.safetensors");
    ok = 0;
    wrong = 0;
    for (long i = 1; i < 100 && !ok; i++) {
        tm_alloc_fail_after(i);
        tm_status s = tm_safetensors_write(path, nt, 2, k, val, 1);
        tm_alloc_fail_after(0);
        ok = s == TM_OK;
        if (!ok && (s != TM_ERR_NOMEM || count_files(tmpdir) != 0)) wrong++;
    }
    CHECK(ok && wrong == 0);
    tm_safetensors *st;
    CHECK_OK(tm_safetensors_open(&st, path));
    tm_tensor g;
    CHECK_OK(tm_safetensors_get(st, "b", &g));
    CHECK(g.shape[0] == 3 && ((float *)g.data)[2] == 2.f && ((float *)g.data)[5] == 6.f);
    tm_safetensors_close(st);
    tm_tensor_free(t);
    unlink(path);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tm_io_test_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_strided();
    test_streaming_writer();
    test_writer_arguments();
    test_atomic_file();
    test_python_files();
    test_concurrent_copy();
    test_truncation();
    test_corrupt_headers();
    test_alloc_failures();
    remove_tree(tmpdir);
    return test_finish("io_safetensors");
}
