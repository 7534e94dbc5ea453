/* trimodal encrypt / decrypt: files and whole folders (model folders,
 * checkpoints, dataset media) encrypted at rest with libsodium's
 * XChaCha20-Poly1305 secretstream (src/io/crypto.c; docs/security.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "cli.h"
#include "trimodal/io.h"

static const char *help_encrypt =
    "usage: trimodal encrypt [--key-file F] (-o OUT | --in-place) PATH [--json]\n"
    "       trimodal encrypt --gen-key F\n"
    "\n"
    "Encrypt a file, or every file of a folder (a model folder, a checkpoint, a\n"
    "dataset's media), with XChaCha20-Poly1305 (libsodium secretstream). Encrypted\n"
    "files keep their names; trimodal train, eval, classify, serve... read them\n"
    "directly, decrypting in memory, when the key is configured (TRIMODAL_KEY_FILE).\n"
    "\n"
    "  PATH             a file or a folder (walked recursively; links are skipped)\n"
    "  -o, --out OUT    write the encrypted copy to OUT (a file, or a folder that\n"
    "                   is created); files already encrypted are copied as they are\n"
    "  --in-place       replace each file by its encrypted version (atomically,\n"
    "                   file by file; files already encrypted are left alone)\n"
    "  --key-file F     the key: 32 raw bytes or 64 hex digits. Without it, the\n"
    "                   file named by TRIMODAL_KEY_FILE, else the hex in TRIMODAL_KEY.\n"
    "                   Keys are never taken from the command line.\n"
    "  --gen-key F      make a new random key file F (64 hex digits, mode 0600);\n"
    "                   an existing file is never overwritten\n"
    "  --json           one JSON object with the count of files\n"
    "\n"
    "Keep the key apart from the data (another disk, a secret store): who has\n"
    "both has the plain text. Lose the key and the data is gone. See\n"
    "docs/security.md.\n";

static const char *help_decrypt =
    "usage: trimodal decrypt [--key-file F] (-o OUT | --in-place) PATH [--json]\n"
    "\n"
    "Decrypt a file or every encrypted file of a folder made by `trimodal encrypt`.\n"
    "Every chunk is authenticated: a wrong key, a truncated or a tampered file\n"
    "fails with an error naming it, and no plain text of it is written.\n"
    "\n"
    "  PATH             a file or a folder (walked recursively)\n"
    "  -o, --out OUT    write the plain copy to OUT (a file, or a folder that is\n"
    "                   created); plain files are copied as they are\n"
    "  --in-place       replace each encrypted file by its plain version\n"
    "  --key-file F     the key file (else TRIMODAL_KEY_FILE, else TRIMODAL_KEY)\n"
    "  --json           one JSON object with the count of files\n"
    "\n"
    "Decrypting to disk is rarely needed: trimodal reads encrypted files directly.\n"
    "See docs/security.md.\n";

static int fail(const char *what)
{
    fprintf(stderr, "trimodal: %s: %s\n", what, tm_last_error());
    return 1;
}

static int run(int argc, char **argv, int json, int encrypt)
{
    const char *help = encrypt ? help_encrypt : help_decrypt;
    const char *key_file = NULL, *out = NULL, *path = NULL, *gen = NULL;
    int in_place = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(help, stdout);
            return 0;
        } else if (!strcmp(a, "--key-file") && i + 1 < argc) {
            key_file = argv[++i];
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--out")) && i + 1 < argc) {
            out = argv[++i];
        } else if (!strcmp(a, "--in-place")) {
            in_place = 1;
        } else if (encrypt && !strcmp(a, "--gen-key") && i + 1 < argc) {
            gen = argv[++i];
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--key") || !strncmp(a, "--key=", 6)) {
            return cli_usage("keys are never taken from the command line (other users can read "
                             "it); use --key-file F or TRIMODAL_KEY_FILE");
        } else if (a[0] == '-' && a[1]) {
            return cli_usage("%s: unknown option or missing value", a);
        } else if (!path) {
            path = a;
        } else {
            return cli_usage("one PATH only (got '%s' and '%s')", path, a);
        }
    }
    if (gen) {
        if (path || out || in_place) return cli_usage("--gen-key F takes nothing else");
        if (tm_key_generate_file(gen)) return fail("gen-key");
        if (json) {
            printf("{\"key_file\": ");
            cli_json_string(stdout, gen);
            printf("}\n");
        } else {
            printf("wrote a new key to %s (mode 0600); keep it apart from the data\n", gen);
        }
        return 0;
    }
    if (!path) return cli_usage("%s needs a PATH", encrypt ? "encrypt" : "decrypt");
    if (!out && !in_place) return cli_usage("say where to write: -o OUT or --in-place");
    if (out && in_place) return cli_usage("-o and --in-place exclude each other");
    tm_key key;
    tm_status s;
    if (key_file) {
        s = tm_key_load_file(&key, key_file);
    } else {
        int found = 0;
        s = tm_key_from_env(&key, &found);
        if (!s && !found) {
            return cli_usage("no key: give --key-file F or set TRIMODAL_KEY_FILE (make one with "
                             "'trimodal encrypt --gen-key F')");
        }
    }
    if (s) return fail("key");
    struct stat sb;
    if (stat(path, &sb) != 0) {
        sodium_memzero(&key, sizeof key);
        fprintf(stderr, "trimodal: %s: no such file or folder\n", path);
        return 1;
    }
    const char *dst = in_place ? path : out;
    int n = 0;
    if (S_ISDIR(sb.st_mode)) {
        s = encrypt ? tm_encrypt_dir(&key, path, dst, &n) : tm_decrypt_dir(&key, path, dst, &n);
    } else {
        int enc = tm_file_is_encrypted(path);
        if (enc == encrypt) {
            s = TM_OK; /* nothing to do */
            if (!in_place) {
                char *data = NULL;
                size_t len = 0;
                /* a byte-for-byte copy: read raw, not through tm_read_file */
                FILE *f = fopen(path, "rb");
                if (!f) {
                    s = tm_fail(TM_ERR_IO, "%s: cannot open", path);
                } else {
                    data = malloc((size_t)sb.st_size + 1);
                    if (!data) s = tm_fail(TM_ERR_NOMEM, "out of memory");
                    else len = fread(data, 1, (size_t)sb.st_size, f);
                    fclose(f);
                }
                if (!s) s = tm_write_file_atomic(dst, data, len);
                free(data);
            }
        } else {
            s = encrypt ? tm_encrypt_file(&key, path, dst) : tm_decrypt_file(&key, path, dst);
            n = 1;
        }
    }
    sodium_memzero(&key, sizeof key);
    if (s) return fail(encrypt ? "encrypt" : "decrypt");
    if (json) {
        printf("{\"%s\": %d, \"out\": ", encrypt ? "encrypted" : "decrypted", n);
        cli_json_string(stdout, dst);
        printf("}\n");
    } else {
        printf("%s %d file%s into %s\n", encrypt ? "encrypted" : "decrypted", n, n == 1 ? "" : "s",
               dst);
    }
    return 0;
}

int cmd_encrypt(int argc, char **argv, int json)
{
    return run(argc, argv, json, 1);
}

int cmd_decrypt(int argc, char **argv, int json)
{
    return run(argc, argv, json, 0);
}
