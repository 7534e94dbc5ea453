/* Learning-rate schedules: golden values from torch.optim.lr_scheduler
 * (scripts/gen_optim_vectors.py -> tests/data/optim/schedule.txt), edge
 * cases of the closed forms, and validation of bad settings. */
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/optim.h"

/* The closed forms run in double and round once to float: within an ulp
 * or so of torch's double values. */
#define LR_RTOL 2e-7

/* "name count v0 v1 ..." per line, '#' comment lines. */
typedef struct {
    char name[64];
    int64_t n;
    double *v;
} vec;

static int vf_load(vec *items, int max, int *count, const char *rel)
{
    const char *path = test_data_path(rel);
    FILE *fp = fopen(path, "r");
    *count = 0;
    if (!fp) {
        fprintf(stderr, "cannot open %s (set TM_SOURCE_DIR)\n", path);
        return 0;
    }
    int ok = 1;
    for (;;) {
        int c = fgetc(fp);
        if (c == EOF) break;
        if (c == '#' || c == '\n') {
            while (c != '\n' && c != EOF) c = fgetc(fp);
            continue;
        }
        ungetc(c, fp);
        if (*count == max) { ok = 0; break; }
        vec *v = &items[*count];
        long long n;
        if (fscanf(fp, "%63s %lld", v->name, &n) != 2 || n < 0 || n > 100000) { ok = 0; break; }
        v->n = n;
        v->v = calloc((size_t)n + 1, sizeof(double));
        (*count)++;
        for (int64_t i = 0; i < n; i++)
            if (fscanf(fp, "%lf", &v->v[i]) != 1) ok = 0;
        if (!ok) break;
    }
    fclose(fp);
    if (!ok) fprintf(stderr, "%s: malformed\n", path);
    return ok;
}

static void test_golden(void)
{
    vec items[64];
    int count = 0, cases = 0;
    CHECK(vf_load(items, 64, &count, "optim/schedule.txt"));
    for (int i = 0; i + 1 < count; i++) {
        size_t len = strlen(items[i].name);
        if (len < 7 || strcmp(items[i].name + len - 7, ".config")) continue;
        const vec *cfg = &items[i], *lr = &items[i + 1];
        CHECK(cfg->n == 8 && !strncmp(lr->name, cfg->name, len - 7));
        if (cfg->n != 8) continue;
        tm_lr_schedule s = tm_lr_schedule_default_params((tm_lr_kind)(int)cfg->v[0]);
        s.base_lr = (float)cfg->v[1];
        s.warmup_steps = (int64_t)cfg->v[2];
        s.warmup_start_factor = (float)cfg->v[3];
        s.min_lr = (float)cfg->v[4];
        s.total_steps = (int64_t)cfg->v[5];
        s.step_size = (int64_t)cfg->v[6];
        s.gamma = (float)cfg->v[7];
        CHECK_OK(tm_lr_schedule_check(&s));
        float *got = malloc(sizeof(float) * (size_t)(lr->n + 1));
        float *want = malloc(sizeof(float) * (size_t)(lr->n + 1));
        for (int64_t k = 0; k < lr->n; k++) {
            got[k] = tm_lr_at(&s, k);
            want[k] = (float)lr->v[k];
        }
        /* The float fields (base_lr 0.1f, gamma 0.3f) differ from torch's
         * doubles by up to half an ulp, hence the small relative slack. */
        check_close(cfg->name, got, want, lr->n, 0, LR_RTOL);
        free(got);
        free(want);
        cases++;
    }
    CHECK(cases == 7);
    for (int i = 0; i < count; i++) free(items[i].v);
}

static void test_edges(void)
{
    tm_lr_schedule s = tm_lr_schedule_default_params(TM_LR_COSINE);
    s.base_lr = 1.0f;
    s.min_lr = 0.1f;
    s.warmup_steps = 10;
    s.total_steps = 110;
    /* Warm-up from 0, reaching base_lr at the end of it. */
    CHECK(tm_lr_at(&s, 0) == 0.0f);
    CHECK(tm_lr_at(&s, -5) == 0.0f);
    CHECK_NEAR(tm_lr_at(&s, 5), 0.5, 0, 1e-7);
    CHECK(tm_lr_at(&s, 10) == 1.0f);
    CHECK_NEAR(tm_lr_at(&s, 60), 0.55, 0, 1e-6);
    CHECK(tm_lr_at(&s, 110) == 0.1f);
    CHECK(tm_lr_at(&s, 1000000000) == 0.1f);
    /* Monotone: up during warm-up, down after. */
    int mono = 1;
    for (int64_t k = 1; k < 120; k++) {
        float a = tm_lr_at(&s, k - 1), b = tm_lr_at(&s, k);
        if (k <= 10 ? !(b > a) : !(b <= a)) mono = 0;
    }
    CHECK(mono);
    /* No decay steps at all: min_lr right after the warm-up. */
    s.total_steps = 10;
    CHECK_OK(tm_lr_schedule_check(&s));
    CHECK(tm_lr_at(&s, 9) == 0.9f);
    CHECK(tm_lr_at(&s, 10) == 0.1f);

    tm_lr_schedule c = tm_lr_schedule_default_params(TM_LR_CONSTANT);
    CHECK(tm_lr_at(&c, 0) == 1e-3f && tm_lr_at(&c, 123456) == 1e-3f);

    tm_lr_schedule st = tm_lr_schedule_default_params(TM_LR_STEP);
    st.base_lr = 1.0f;
    st.step_size = 3;
    st.gamma = 0.5f;
    CHECK(tm_lr_at(&st, 2) == 1.0f && tm_lr_at(&st, 3) == 0.5f && tm_lr_at(&st, 9) == 0.125f);
    st.gamma = 1.0f;
    CHECK(tm_lr_at(&st, 1000) == 1.0f);

    for (int k = 0; k < TM_LR_KIND_COUNT; k++) {
        tm_lr_schedule d = tm_lr_schedule_default_params((tm_lr_kind)k);
        CHECK_OK(tm_lr_schedule_check(&d));
    }
}

static void expect_bad(tm_lr_schedule s, const char *what)
{
    tm_clear_error();
    float lr = tm_lr_at(&s, 3);
    test_checks++;
    if (!isnan(lr) || tm_last_error()[0]) { /* tm_lr_at is silent */
        test_failures++;
        fprintf(stderr, "bad schedule %s: lr %g, message '%s'\n", what, lr, tm_last_error());
    }
    tm_status st = tm_lr_schedule_check(&s);
    test_checks++;
    if (st != TM_ERR_INVALID || !tm_last_error()[0]) {
        test_failures++;
        fprintf(stderr, "bad schedule %s: check gave %s\n", what, tm_status_name(st));
    }
}

static void test_bad_settings(void)
{
    tm_lr_schedule cos = tm_lr_schedule_default_params(TM_LR_COSINE), s;
    tm_lr_schedule step = tm_lr_schedule_default_params(TM_LR_STEP);
    s = cos; s.base_lr = -1e-3f; expect_bad(s, "negative base_lr");
    s = cos; s.base_lr = NAN; expect_bad(s, "NaN base_lr");
    s = cos; s.base_lr = INFINITY; expect_bad(s, "inf base_lr");
    s = cos; s.warmup_steps = -1; expect_bad(s, "negative warm-up");
    s = cos; s.warmup_start_factor = 1.5f; expect_bad(s, "start factor > 1");
    s = cos; s.warmup_start_factor = -0.1f; expect_bad(s, "start factor < 0");
    s = cos; s.min_lr = 1.0f; expect_bad(s, "min_lr > base_lr");
    s = cos; s.min_lr = -1e-5f; expect_bad(s, "negative min_lr");
    s = cos; s.warmup_steps = 2000; expect_bad(s, "total_steps < warm-up");
    s = step; s.step_size = 0; expect_bad(s, "step_size 0");
    s = step; s.gamma = 0.0f; expect_bad(s, "gamma 0");
    s = step; s.gamma = 1.5f; expect_bad(s, "gamma > 1");
    s = step; s.kind = (tm_lr_kind)9; expect_bad(s, "unknown kind");
    CHECK_STATUS(tm_lr_schedule_check(NULL), TM_ERR_INVALID);
    CHECK(isnan(tm_lr_at(NULL, 0)));
    /* Fields of other kinds are not checked. */
    s = tm_lr_schedule_default_params(TM_LR_CONSTANT);
    s.gamma = 7.0f;
    s.min_lr = 5.0f;
    CHECK_OK(tm_lr_schedule_check(&s));
}

int main(void)
{
    test_golden();
    test_edges();
    test_bad_settings();
    return test_finish("test_schedule");
}
