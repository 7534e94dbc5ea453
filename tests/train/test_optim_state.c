/* Optimizer update masks (frozen elements: no update, no decay, no state
 * change, bitwise) and optimizer files (save/load round trip bitwise,
 * refusal of mismatched or damaged files, opt unchanged on failure). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"
#include "trimodal/optim.h"

#define N 1000

static void fill(float *x, size_t n, uint64_t seed)
{
    test_fill_uniform(x, (int64_t)n, seed, -1.0f, 1.0f);
}

/* Runs `steps` updates of opt from params p with a fresh gradient each step. */
static void run(tm_optim *opt, float *p, int steps, uint64_t seed)
{
    float *g = malloc(N * sizeof *g);
    for (int s = 0; s < steps; s++) {
        fill(g, N, seed + (uint64_t)s);
        CHECK_OK(tm_optim_step(opt, p, g, TM_OPTIM_LR_DEFAULT));
    }
    free(g);
}

static void test_update_mask(tm_optim_params hp)
{
    float p0[N], pa[N], pb[N];
    fill(p0, N, 1);
    memcpy(pa, p0, sizeof p0);
    memcpy(pb, p0, sizeof p0);
    tm_optim *a, *b;
    CHECK_OK(tm_optim_new(&a, hp, N));
    CHECK_OK(tm_optim_new(&b, hp, N));
    CHECK(tm_optim_update_count(b) == N);
    CHECK_OK(tm_optim_set_update_range(b, 100, 300, 0));
    CHECK_OK(tm_optim_set_update_range(b, 250, 260, 1)); /* a hole in the frozen range */
    CHECK(tm_optim_update_count(b) == N - 190);
    CHECK_STATUS(tm_optim_set_update_range(b, 10, N + 1, 0), TM_ERR_INVALID);
    run(a, pa, 5, 100);
    run(b, pb, 5, 100);
    size_t na, nb;
    float *sa = tm_optim_state(a, &na), *sb = tm_optim_state(b, &nb);
    int frozen_same = 1, others_same = 1, state_zero = 1, state_same = 1;
    for (size_t i = 0; i < N; i++) {
        int frozen = i >= 100 && i < 300 && !(i >= 250 && i < 260);
        if (frozen) {
            frozen_same &= memcmp(&pb[i], &p0[i], sizeof(float)) == 0;
            for (size_t k = 0; k < nb / N; k++) state_zero &= sb[k * N + i] == 0.0f;
        } else {
            others_same &= memcmp(&pb[i], &pa[i], sizeof(float)) == 0;
            for (size_t k = 0; k < nb / N; k++)
                state_same &= memcmp(&sb[k * N + i], &sa[k * N + i], sizeof(float)) == 0;
        }
    }
    CHECK(frozen_same);  /* weight decay did not touch them either */
    CHECK(others_same);  /* the rest: exactly as without a mask */
    CHECK(state_zero);
    CHECK(state_same);
    CHECK(memcmp(pa + 100, p0 + 100, 200 * sizeof(float)) != 0); /* a really moved them */
    /* a whole mask, then removing it */
    uint8_t mask[N];
    memset(mask, 1, N);
    mask[7] = 0;
    CHECK_OK(tm_optim_set_update_mask(b, mask));
    CHECK(tm_optim_update_count(b) == N - 1);
    CHECK_OK(tm_optim_set_update_mask(b, NULL));
    CHECK(tm_optim_update_count(b) == N);
    tm_optim_free(a);
    tm_optim_free(b);
}

static char tmpdir[256];

static const char *tmp_path(const char *name)
{
    static char buf[512];
    snprintf(buf, sizeof buf, "%s/%s", tmpdir, name);
    return buf;
}

static void test_files(tm_optim_params hp)
{
    float p[N];
    fill(p, N, 2);
    tm_optim *a, *b;
    CHECK_OK(tm_optim_new(&a, hp, N));
    run(a, p, 3, 7);
    CHECK_OK(tm_optim_save(a, tmp_path("opt.safetensors")));
    CHECK_OK(tm_optim_new(&b, hp, N));
    CHECK_OK(tm_optim_load(b, tmp_path("opt.safetensors")));
    size_t na, nb;
    float *sa = tm_optim_state(a, &na), *sb = tm_optim_state(b, &nb);
    CHECK(na == nb && tm_optim_step_count(b) == 3);
    CHECK(na == 0 || memcmp(sa, sb, na * sizeof(float)) == 0);
    /* continuing from the loaded state equals continuing the original */
    float pa[N], pb[N];
    memcpy(pa, p, sizeof p);
    memcpy(pb, p, sizeof p);
    run(a, pa, 2, 50);
    run(b, pb, 2, 50);
    CHECK(memcmp(pa, pb, sizeof pa) == 0);
    tm_optim_free(a);
    tm_optim_free(b);

    /* mismatches: size, kind; and opt stays as it was */
    tm_optim *c;
    CHECK_OK(tm_optim_new(&c, hp, N - 1));
    CHECK_STATUS(tm_optim_load(c, tmp_path("opt.safetensors")), TM_ERR_INVALID);
    CHECK(tm_optim_step_count(c) == 0);
    tm_optim_free(c);
    tm_optim_params other = tm_optim_default_params(hp.kind == TM_OPTIM_SGD ? TM_OPTIM_ADAMW
                                                                             : TM_OPTIM_SGD);
    CHECK_OK(tm_optim_new(&c, other, N));
    CHECK_STATUS(tm_optim_load(c, tmp_path("opt.safetensors")), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "optimizer") != NULL);
    tm_optim_free(c);
}

static void test_damaged(void)
{
    tm_optim_params hp = tm_optim_default_params(TM_OPTIM_ADAMW);
    float p[N];
    fill(p, N, 3);
    tm_optim *a;
    CHECK_OK(tm_optim_new(&a, hp, N));
    run(a, p, 2, 9);
    CHECK_OK(tm_optim_save(a, tmp_path("d.safetensors")));
    /* truncated */
    char *data;
    size_t size;
    CHECK_OK(tm_read_file(tmp_path("d.safetensors"), 1 << 20, &data, &size));
    CHECK_OK(tm_write_file_atomic(tmp_path("t.safetensors"), data, size - 100));
    tm_optim *b;
    CHECK_OK(tm_optim_new(&b, hp, N));
    CHECK_STATUS(tm_optim_load(b, tmp_path("t.safetensors")), TM_ERR_FORMAT);
    size_t nb;
    float *sb = tm_optim_state(b, &nb);
    int zero = 1;
    for (size_t i = 0; i < nb; i++) zero &= sb[i] == 0.0f;
    CHECK(zero && tm_optim_step_count(b) == 0);
    /* not an optimizer file: a plain safetensors without our metadata */
    tm_tensor *t;
    CHECK_OK(tm_tensor_new(&t, TM_F32, 1, (int64_t[]){4}));
    tm_named_tensor nt = {"exp_avg", t};
    CHECK_OK(tm_safetensors_write(tmp_path("x.safetensors"), &nt, 1, NULL, NULL, 0));
    CHECK_STATUS(tm_optim_load(b, tmp_path("x.safetensors")), TM_ERR_FORMAT);
    CHECK(strstr(tm_last_error(), "not an optimizer file") != NULL);
    CHECK_STATUS(tm_optim_load(b, tmp_path("missing.safetensors")), TM_ERR_IO);
    tm_tensor_free(t);
    tm_free(data);
    tm_optim_free(a);
    tm_optim_free(b);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tm_optim_state_XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    tm_optim_params adam = tm_optim_default_params(TM_OPTIM_ADAMW);
    adam.weight_decay = 0.1f;
    tm_optim_params sgd = tm_optim_default_params(TM_OPTIM_SGD);
    sgd.momentum = 0.9f;
    sgd.weight_decay = 0.05f;
    sgd.lr = 0.05f;
    tm_optim_params plain = tm_optim_default_params(TM_OPTIM_SGD);
    plain.weight_decay = 0.05f;
    test_update_mask(adam);
    test_update_mask(sgd);
    test_update_mask(plain);
    test_files(adam);
    test_files(sgd);
    test_files(plain);
    test_damaged();
    const char *names[] = {"opt.safetensors", "d.safetensors", "t.safetensors", "x.safetensors"};
    for (int i = 0; i < 4; i++) unlink(tmp_path(names[i]));
    rmdir(tmpdir);
    return test_finish("train_optim_state");
}
