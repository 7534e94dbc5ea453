/* The process-group API of a single process (no mpirun): rank 0 of 1, and
 * the collectives leave the data as it is (the average of one copy). The
 * multi-process behaviour is tested by test_mpi.sh under mpirun. */
#include <math.h>
#include <string.h>

#include "testutil.h"
#include "trimodal/train.h"

int main(void)
{
    CHECK_STATUS(tm_dist_init(NULL, NULL), TM_OK);
    CHECK(tm_dist_rank() == 0);
    CHECK(tm_dist_world() == 1);
    CHECK(tm_dist_available() == 0 || tm_dist_available() == 1);
    float g[1000];
    for (int i = 0; i < 1000; i++) g[i] = (float)i * 0.25f - 7.0f;
    CHECK_STATUS(tm_dist_allreduce_mean(g, 1000, 64), TM_OK);
    CHECK_STATUS(tm_dist_allreduce_mean(g, 1000, 0), TM_OK);
    int same = 1;
    for (int i = 0; i < 1000; i++) same &= g[i] == (float)i * 0.25f - 7.0f;
    CHECK(same);
    double d[3] = {1.5, -2, 1e300};
    CHECK_STATUS(tm_dist_allreduce_sum_f64(d, 3), TM_OK);
    CHECK(d[0] == 1.5 && d[1] == -2 && d[2] == 1e300);
    CHECK_STATUS(tm_dist_broadcast(g, 1000), TM_OK);
    CHECK(g[4] == -6.0f);
    CHECK_STATUS(tm_dist_barrier(), TM_OK);
    tm_dist_abort(3); /* one process: returns */
    tm_dist_finalize();
    tm_dist_finalize(); /* twice is harmless */
    CHECK(tm_dist_world() == 1);
    return test_finish("train_dist");
}
