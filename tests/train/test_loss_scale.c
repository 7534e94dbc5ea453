/*
 * Dynamic loss scaling (tm_loss_scaler, trimodal/optim.h): defaults,
 * validation, the unscale + finite check, and the state machine (backoff
 * on inf/NaN with the step skipped, growth after growth_interval finite
 * steps, clamps), checked against a step-by-step model of the rules
 * written out here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/optim.h"

static void test_defaults_and_errors(void)
{
    tm_loss_scaler_params p = tm_loss_scaler_default_params();
    CHECK(p.init_scale == 65536.0f && p.growth_factor == 2.0f && p.backoff_factor == 0.5f);
    CHECK(p.growth_interval == 2000);
    tm_loss_scaler s;
    CHECK_OK(tm_loss_scaler_init(&s, p));
    CHECK(tm_loss_scaler_scale(&s) == 65536.0f && s.good_steps == 0 && s.skipped == 0);
    CHECK(tm_loss_scaler_scale(NULL) == 1.0f);
    CHECK(tm_loss_scaler_update(NULL, 1) == 0);
    CHECK_STATUS(tm_loss_scaler_init(NULL, p), TM_ERR_INVALID);
    tm_loss_scaler_params q = p;
    q.init_scale = 0;
    CHECK_STATUS(tm_loss_scaler_init(&s, q), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "init_scale") != NULL);
    q = p;
    q.init_scale = INFINITY;
    CHECK_STATUS(tm_loss_scaler_init(&s, q), TM_ERR_INVALID);
    q = p;
    q.growth_factor = 1.0f;
    CHECK_STATUS(tm_loss_scaler_init(&s, q), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "growth_factor") != NULL);
    q = p;
    q.backoff_factor = 1.0f;
    CHECK_STATUS(tm_loss_scaler_init(&s, q), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "backoff_factor") != NULL);
    q = p;
    q.backoff_factor = NAN;
    CHECK_STATUS(tm_loss_scaler_init(&s, q), TM_ERR_INVALID);
    q = p;
    q.growth_interval = 0;
    CHECK_STATUS(tm_loss_scaler_init(&s, q), TM_ERR_INVALID);
    CHECK(strstr(tm_last_error(), "growth_interval") != NULL);
    q = p;
    q.min_scale = 4.0f;
    q.max_scale = 2.0f;
    CHECK_STATUS(tm_loss_scaler_init(&s, q), TM_ERR_INVALID);
    CHECK(s.scale == 65536.0f); /* failed inits leave the state alone */
    int fin = 1;
    CHECK_STATUS(tm_loss_scaler_unscale(&s, NULL, 3, &fin), TM_ERR_INVALID);
    CHECK(fin == 0);
    CHECK_STATUS(tm_loss_scaler_unscale(&s, NULL, 0, NULL), TM_ERR_INVALID);
}

static void test_unscale(void)
{
    tm_loss_scaler s;
    CHECK_OK(tm_loss_scaler_init(&s, tm_loss_scaler_default_params()));
    enum { N = 1000 };
    float *g = malloc(N * sizeof(float)), *want = malloc(N * sizeof(float));
    test_fill_uniform(want, N, 3, -1e-3f, 1e-3f);
    for (int i = 0; i < N; i++)
        g[i] = want[i] * 65536.0f;
    int fin = 0;
    CHECK_OK(tm_loss_scaler_unscale(&s, g, N, &fin));
    CHECK(fin == 1);
    CHECK(memcmp(g, want, N * sizeof(float)) == 0); /* power of two: exact */
    const float bad[3] = {INFINITY, -INFINITY, NAN};
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < N; i++)
            g[i] = 1.0f;
        g[N - 1 - k * 100] = bad[k];
        CHECK_OK(tm_loss_scaler_unscale(&s, g, N, &fin));
        CHECK(fin == 0);
    }
    /* finite but huge values stay finite after unscaling */
    for (int i = 0; i < N; i++)
        g[i] = 3e38f;
    CHECK_OK(tm_loss_scaler_unscale(&s, g, N, &fin));
    CHECK(fin == 1);
    CHECK_OK(tm_loss_scaler_unscale(&s, g, 0, &fin));
    CHECK(fin == 1);
    free(g);
    free(want);
}

/* The rules, one step at a time, against a reference model. */
static void test_state_machine(void)
{
    tm_loss_scaler_params p = tm_loss_scaler_default_params();
    p.growth_interval = 3;
    p.init_scale = 8.0f;
    p.min_scale = 1.0f;
    p.max_scale = 64.0f;
    tm_loss_scaler s;
    CHECK_OK(tm_loss_scaler_init(&s, p));
    double scale = 8, good = 0, skipped = 0;
    int bad = 0;
    uint64_t r = 7;
    for (int step = 0; step < 400; step++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        int finite = (r >> 40) % 5 != 0;           /* 1 in 5 steps overflows */
        if (step >= 100 && step < 120) finite = 0; /* a burst: the floor */
        if (step >= 200 && step < 260) finite = 1; /* a calm: the ceiling */
        int apply = tm_loss_scaler_update(&s, finite);
        if (finite) {
            if (++good == 3) {
                scale = scale * 2 > 64 ? 64 : scale * 2;
                good = 0;
            }
        } else {
            scale = scale * 0.5 < 1 ? 1 : scale * 0.5;
            good = 0;
            skipped++;
        }
        if (apply != finite || s.scale != (float)scale || s.good_steps != (int64_t)good ||
            s.skipped != (int64_t)skipped || s.steps != step + 1)
            bad++;
        if (step == 119) CHECK(s.scale == 1.0f);  /* backed off to min_scale */
        if (step == 259) CHECK(s.scale == 64.0f); /* grown to max_scale */
    }
    CHECK(bad == 0);
    CHECK(skipped > 50);
}

/* The default schedule: 2000 finite steps double 2^16 once; one overflow
 * halves it and restarts the count. */
static void test_default_schedule(void)
{
    tm_loss_scaler s;
    CHECK_OK(tm_loss_scaler_init(&s, tm_loss_scaler_default_params()));
    for (int i = 0; i < 1999; i++)
        tm_loss_scaler_update(&s, 1);
    CHECK(s.scale == 65536.0f && s.good_steps == 1999);
    CHECK(tm_loss_scaler_update(&s, 1) == 1);
    CHECK(s.scale == 131072.0f && s.good_steps == 0);
    CHECK(tm_loss_scaler_update(&s, 0) == 0);
    CHECK(s.scale == 65536.0f && s.skipped == 1);
    for (int i = 0; i < 1999; i++)
        tm_loss_scaler_update(&s, 1);
    CHECK(s.scale == 65536.0f);
}

int main(void)
{
    test_defaults_and_errors();
    test_unscale();
    test_state_machine();
    test_default_schedule();
    return test_finish("test_loss_scale");
}
