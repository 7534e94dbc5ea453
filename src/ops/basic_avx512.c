/* The AVX-512 build of the simple ops' vectorised kernels: the source is
 * basic_avx2.c, compiled here on 16-float vectors (CMake gives this file
 * the AVX-512 flags). Reached only through tm_basic_simd_for() when
 * tm_cpu_isa() reports AVX-512. */
#define TM_BASIC_AVX512 1
#include "basic_avx2.c"
