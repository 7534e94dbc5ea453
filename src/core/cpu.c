/* Run-time CPU feature detection, clocks and the version string. */
#include "trimodal/core.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int forced_isa = -2; /* -2: not read yet; -1: detect */

static tm_isa detect(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("fma"))
        return TM_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return TM_ISA_AVX2;
#endif
    return TM_ISA_SCALAR;
}

static int env_isa(void)
{
    const char *e = getenv("TRIMODAL_ISA");
    if (!e) return -1;
    if (!strcmp(e, "scalar")) return TM_ISA_SCALAR;
    if (!strcmp(e, "avx2")) return TM_ISA_AVX2;
    if (!strcmp(e, "avx512")) return TM_ISA_AVX512;
    return -1;
}

tm_isa tm_cpu_isa(void)
{
    static atomic_int detected = -1;
    int d = atomic_load_explicit(&detected, memory_order_relaxed);
    if (d < 0) {
        d = (int)detect();
        atomic_store(&detected, d);
    }
    int f = atomic_load_explicit(&forced_isa, memory_order_relaxed);
    if (f == -2) {
        f = env_isa();
        atomic_store(&forced_isa, f);
    }
    /* a forced ISA can only lower what the CPU has */
    return (tm_isa)(f >= 0 && f < d ? f : d);
}

void tm_force_isa(int isa) { atomic_store(&forced_isa, isa < 0 ? -1 : isa); }

int tm_cpu_has_avx512bf16(void)
{
#if defined(__x86_64__) && defined(__GNUC__) && __GNUC__ >= 12
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && tm_cpu_isa() == TM_ISA_AVX512;
#else
    return 0;
#endif
}

const char *tm_isa_name(tm_isa isa)
{
    switch (isa) {
    case TM_ISA_AVX512: return "avx512";
    case TM_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

double tm_time_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *tm_version(void) { return "0.1.0"; }
