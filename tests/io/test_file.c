/* io: tm_read_file (whole regular files, limits, FIFOs, missing files). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "trimodal/io.h"

int main(void)
{
    char dir[] = "/tmp/tm_file_XXXXXX", path[64], fifo[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/a.txt", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    const char text[] = "hello\0world";
    CHECK_OK(tm_write_file_atomic(path, text, sizeof text - 1));

    char *data;
    size_t n;
    CHECK_OK(tm_read_file(path, 1024, &data, &n));
    CHECK(n == sizeof text - 1 && memcmp(data, text, n) == 0 && data[n] == '\0');
    tm_free(data);
    /* exactly at the limit, and one byte over */
    CHECK_OK(tm_read_file(path, n, &data, &n));
    tm_free(data);
    CHECK_STATUS(tm_read_file(path, n - 1, &data, &n), TM_ERR_LIMIT);
    CHECK(data == NULL && strstr(tm_last_error(), "a.txt") != NULL);
    /* an empty file */
    CHECK_OK(tm_write_file_atomic(path, "", 0));
    CHECK_OK(tm_read_file(path, 10, &data, &n));
    CHECK(n == 0 && data[0] == '\0');
    tm_free(data);
    /* not there, a directory, a FIFO (must not block) */
    char missing[80];
    snprintf(missing, sizeof missing, "%s/missing", dir);
    CHECK_STATUS(tm_read_file(missing, 10, &data, &n), TM_ERR_IO);
    CHECK_STATUS(tm_read_file(dir, 10, &data, &n), TM_ERR_IO);
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK_STATUS(tm_read_file(fifo, 10, &data, &n), TM_ERR_IO);
    CHECK_STATUS(tm_read_file("", 10, &data, &n), TM_ERR_INVALID);
    /* an allocation failure is reported, not a crash */
    CHECK_OK(tm_write_file_atomic(path, text, sizeof text - 1));
    tm_alloc_fail_after(1);
    CHECK_STATUS(tm_read_file(path, 100, &data, &n), TM_ERR_NOMEM);
    tm_alloc_fail_after(0);
    unlink(path);
    unlink(fifo);
    rmdir(dir);
    return test_finish("file");
}
