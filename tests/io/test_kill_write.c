/* io: writers killed mid-write. A child process rewrites a 2 MB
 * safetensors file, a JSON file and a checksummed folder in a loop; the
 * parent kills it with SIGKILL after a random delay, 20 times, and each
 * time loads the last good files: they must open, pass their checksums
 * and hold one complete generation (never a torn mix). Only temporary
 * files (*.tmp.*) may be left behind. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"

#define N_FLOATS (1 << 19) /* 2 MB */

static char st_path[256], js_path[256], dir_path[256], dir_file[300];

/* One generation of every file; 0 when all were written. */
static int write_gen(float *v, int gen)
{
    {
        for (int i = 0; i < N_FLOATS; i++) v[i] = (float)gen + (float)(i & 1023) * 1e-3f;
        tm_tensor t = {0};
        t.dtype = TM_F32;
        t.ndim = 1;
        t.shape[0] = N_FLOATS;
        t.stride[0] = 1;
        t.data = v;
        tm_named_tensor nt = {"v", &t};
        char g[32];
        snprintf(g, sizeof g, "%d", gen);
        const char *k[] = {"gen"}, *val[] = {g};
        if (tm_safetensors_write(st_path, &nt, 1, k, val, 1)) return 4;
        char js[128];
        int n = snprintf(js, sizeof js, "{\"gen\": %d, \"pad\": \"%040d\"}\n", gen, gen);
        if (tm_write_file_atomic(js_path, js, (size_t)n)) return 5;
        if (tm_write_file_atomic(dir_file, js, (size_t)n)) return 6;
        if (tm_dir_checksums_write(dir_path)) return 7;
    }
    return 0;
}

static void child(int start)
{
    float *v = malloc(N_FLOATS * sizeof *v);
    if (!v) _exit(3);
    for (int gen = start;; gen++) {
        int r = write_gen(v, gen);
        if (r) _exit(r);
    }
}

/* The generation in the safetensors file, -1 if unreadable. */
static int current_gen(void)
{
    tm_safetensors *st = NULL;
    if (tm_safetensors_open(&st, st_path) != TM_OK) return -1;
    const char *g = tm_safetensors_metadata(st, "gen");
    int r = g ? atoi(g) : -1;
    tm_safetensors_close(st);
    return r;
}

static int check_files(void)
{
    int ok = 1;
    tm_safetensors *st = NULL;
    if (access(st_path, F_OK) == 0) {
        if (tm_safetensors_open(&st, st_path) != TM_OK) {
            fprintf(stderr, "torn safetensors: %s\n", tm_last_error());
            return 0;
        }
        const char *g = tm_safetensors_metadata(st, "gen");
        tm_tensor t;
        ok = g && tm_safetensors_get(st, "v", &t) == TM_OK;
        if (ok) {
            float want = (float)atoi(g);
            const float *d = t.data;
            for (int i = 0; i < N_FLOATS && ok; i += 4099)
                ok = d[i] == want + (float)(i & 1023) * 1e-3f;
            ok = ok && d[N_FLOATS - 1] == want + (float)((N_FLOATS - 1) & 1023) * 1e-3f;
        }
        tm_safetensors_close(st);
        if (!ok) fprintf(stderr, "safetensors holds a mix of generations\n");
    }
    char *text;
    size_t n;
    if (ok && access(js_path, F_OK) == 0) {
        ok = tm_read_file(js_path, 4096, &text, &n) == TM_OK;
        ok = ok && n > 10 && text[n - 1] == '\n' && strstr(text, "\"pad\"") != NULL;
        if (!ok) fprintf(stderr, "torn JSON file\n");
        tm_free(text);
    }
    if (ok && tm_dir_checksums_verify(dir_path, 0, NULL) != TM_OK) {
        /* the folder's file may be newer than its manifest (killed
         * between the two writes): that is the one state a manifest
         * written last allows, and the next write repairs it */
        ok = strstr(tm_last_error(), "corrupt") != NULL;
        if (!ok) fprintf(stderr, "folder: %s\n", tm_last_error());
    }
    return ok;
}

/* Files in dir other than the expected ones and their temporaries. */
static int stray_files(const char *dir, int *temps)
{
    DIR *d = opendir(dir);
    int stray = 0;
    *temps = 0;
    if (!d) return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (strstr(e->d_name, ".tmp.")) (*temps)++;
        else if (strcmp(e->d_name, "w.safetensors") && strcmp(e->d_name, "w.json") &&
                 strcmp(e->d_name, "folder"))
            stray++;
    }
    closedir(d);
    return stray;
}

int main(void)
{
    char dir[] = "/tmp/tm_kill_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    snprintf(st_path, sizeof st_path, "%s/w.safetensors", dir);
    snprintf(js_path, sizeof js_path, "%s/w.json", dir);
    snprintf(dir_path, sizeof dir_path, "%s/folder", dir);
    snprintf(dir_file, sizeof dir_file, "%s/folder/state.json", dir);
    CHECK(mkdir(dir_path, 0700) == 0);
    srand((unsigned)time(NULL) ^ (unsigned)getpid());
    /* a first good generation, so there always is a last good file */
    float *v = malloc(N_FLOATS * sizeof *v);
    CHECK(v && write_gen(v, 0) == 0);
    free(v);
    int start = 1000, corrupt_state = 0, written = 0;
    for (int round = 0; round < 20; round++) {
        int before = current_gen();
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) child(start);
        /* 1 to 60 ms: some kills land in a write, some in an fsync */
        struct timespec ts = {0, (long)(1 + rand() % 60) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        CHECK(check_files());
        int after = current_gen();
        CHECK(after >= 0);
        if (after != before) written++; /* the child replaced it at least once */
        if (tm_dir_checksums_verify(dir_path, 0, NULL) != TM_OK) corrupt_state++;
        start += 1000;
    }
    int temps = 0;
    CHECK(stray_files(dir, &temps) == 0);
    printf("kill_write: 20 kills, a new generation committed in %d rounds, %d temporary files left, "
           "folder newer than its manifest %d times\n",
           written, temps, corrupt_state);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return test_finish("kill_write");
}
