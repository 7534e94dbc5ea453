/*
 * Data parallelism: the process group (train.h, tm_dist_*).
 *
 * With TM_HAVE_MPI (CMake's TM_MPI) this wraps MPI_COMM_WORLD; a program
 * not started by mpirun is a group of one. Without MPI every call is the
 * single-process identity. Gradients are averaged in buckets with
 * MPI_Iallreduce, up to TM_DIST_INFLIGHT buckets in flight: the network
 * (or shared memory) reduces one bucket while the next is posted, and
 * each bucket is scaled by 1/world as soon as it completes.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trimodal/train.h"

#ifdef TM_HAVE_MPI
#include <mpi.h>

#define TM_DIST_INFLIGHT 4

static int g_rank = 0, g_world = 1, g_inited = 0, g_we_init = 0;

int tm_dist_available(void) { return 1; }

tm_status tm_dist_init(int *argc, char ***argv)
{
    if (g_inited) return TM_OK;
    /* Not started by mpirun (no launcher variables): a group of one,
     * without MPI_Init (which may be slow or noisy in a container). */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK") && !getenv("PMI_SIZE") &&
        !getenv("PMI_RANK"))
        return TM_OK;
    int flag = 0;
    MPI_Initialized(&flag);
    if (!flag) {
        if (MPI_Init(argc, argv) != MPI_SUCCESS)
            return tm_fail(TM_ERR_IO, "MPI_Init failed: check the MPI installation (mpirun "
                           "--version) or run without mpirun");
        g_we_init = 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_world);
    g_inited = 1;
    return TM_OK;
}

void tm_dist_finalize(void)
{
    if (!g_inited) return;
    int fin = 0;
    MPI_Finalized(&fin);
    if (g_we_init && !fin) MPI_Finalize();
    g_inited = 0;
    g_rank = 0;
    g_world = 1;
}

int tm_dist_rank(void) { return g_rank; }
int tm_dist_world(void) { return g_world; }

static tm_status mpi_err(int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
    return tm_fail(TM_ERR_IO, "%s failed: %s", what, len ? msg : "MPI error");
}

tm_status tm_dist_allreduce_mean(float *buf, size_t n, size_t bucket_floats)
{
    if (g_world <= 1 || n == 0) return TM_OK;
    if (!buf) return tm_fail(TM_ERR_INVALID, "dist_allreduce_mean: buf is NULL");
    if (bucket_floats == 0) bucket_floats = (size_t)1 << 20;
    if (bucket_floats > (size_t)1 << 30) bucket_floats = (size_t)1 << 30;
    MPI_Request req[TM_DIST_INFLIGHT];
    size_t off[TM_DIST_INFLIGHT], len[TM_DIST_INFLIGHT];
    int head = 0, active = 0;
    float inv = 1.0f / (float)g_world;
    size_t pos = 0;
    while (pos < n || active) {
        if (pos < n && active < TM_DIST_INFLIGHT) {
            int slot = (head + active) % TM_DIST_INFLIGHT;
            size_t m = n - pos < bucket_floats ? n - pos : bucket_floats;
            int rc = MPI_Iallreduce(MPI_IN_PLACE, buf + pos, (int)m, MPI_FLOAT, MPI_SUM,
                                    MPI_COMM_WORLD, &req[slot]);
            if (rc != MPI_SUCCESS) return mpi_err(rc, "MPI_Iallreduce of the gradients");
            off[slot] = pos;
            len[slot] = m;
            pos += m;
            active++;
            continue;
        }
        /* the oldest bucket: wait, then scale it */
        int rc = MPI_Wait(&req[head], MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_err(rc, "MPI_Wait of the gradients");
        float *b = buf + off[head];
        for (size_t i = 0; i < len[head]; i++) b[i] *= inv;
        head = (head + 1) % TM_DIST_INFLIGHT;
        active--;
    }
    return TM_OK;
}

tm_status tm_dist_allreduce_sum_f64(double *buf, size_t n)
{
    if (g_world <= 1 || n == 0) return TM_OK;
    if (!buf || n > (size_t)1 << 30)
        return tm_fail(TM_ERR_INVALID, "dist_allreduce_sum_f64: bad buffer");
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? TM_OK : mpi_err(rc, "MPI_Allreduce");
}

tm_status tm_dist_allgather(void *ctx, const void *mine, void *all, size_t bytes)
{
    (void)ctx;
    if (!mine || !all) return tm_fail(TM_ERR_INVALID, "dist_allgather: NULL buffer");
    if (g_world <= 1) {
        memmove(all, mine, bytes);
        return TM_OK;
    }
    if (bytes > (size_t)INT32_MAX)
        return tm_fail(TM_ERR_INVALID, "dist_allgather: %zu bytes per rank is too many", bytes);
    int rc = MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? TM_OK : mpi_err(rc, "MPI_Allgather");
}

tm_status tm_dist_broadcast(float *buf, size_t n)
{
    if (g_world <= 1 || n == 0) return TM_OK;
    if (!buf) return tm_fail(TM_ERR_INVALID, "dist_broadcast: buf is NULL");
    const size_t chunk = (size_t)1 << 28;
    for (size_t pos = 0; pos < n; pos += chunk) {
        size_t m = n - pos < chunk ? n - pos : chunk;
        int rc = MPI_Bcast(buf + pos, (int)m, MPI_FLOAT, 0, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_err(rc, "MPI_Bcast of the weights");
    }
    return TM_OK;
}

tm_status tm_dist_barrier(void)
{
    if (g_world <= 1) return TM_OK;
    int rc = MPI_Barrier(MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? TM_OK : mpi_err(rc, "MPI_Barrier");
}

void tm_dist_abort(int code)
{
    if (g_inited && g_world > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

#else /* a group of one */

void tm_dist_abort(int code) { (void)code; }

int tm_dist_available(void) { return 0; }
tm_status tm_dist_init(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return TM_OK;
}
void tm_dist_finalize(void) {}
int tm_dist_rank(void) { return 0; }
int tm_dist_world(void) { return 1; }
tm_status tm_dist_allreduce_mean(float *buf, size_t n, size_t bucket_floats)
{
    (void)buf;
    (void)n;
    (void)bucket_floats;
    return TM_OK;
}
tm_status tm_dist_allreduce_sum_f64(double *buf, size_t n)
{
    (void)buf;
    (void)n;
    return TM_OK;
}
tm_status tm_dist_broadcast(float *buf, size_t n)
{
    (void)buf;
    (void)n;
    return TM_OK;
}
tm_status tm_dist_barrier(void) { return TM_OK; }
tm_status tm_dist_allgather(void *ctx, const void *mine, void *all, size_t bytes)
{
    (void)ctx;
    if (!mine || !all) return tm_fail(TM_ERR_INVALID, "dist_allgather: NULL buffer");
    memmove(all, mine, bytes);
    return TM_OK;
}

#endif
