/*
 * authn_password.c - argon2id through libsodium, bcrypt verification through
 * libcrypt (imported hashes only; we never create bcrypt hashes).
 */
#include <crypt.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "authn.h"

enum ts_rc ts_password_hash(const struct ts_password_params *p, const char *password, size_t len,
                            char **out_phc)
{
    char out[crypto_pwhash_STRBYTES];
    if (crypto_pwhash_str_alg(out, password, len, p->iterations, (size_t)p->memory_kib * 1024,
                              crypto_pwhash_ALG_ARGON2ID13) != 0) {
        /* libsodium fails only when it cannot allocate the memory cost. */
        ts_log_error("argon2id: hashing failed (out of memory?)");
        return TS_E_UNAVAILABLE;
    }
    *out_phc = ts_xstrdup(out);
    return TS_OK;
}

static bool is_bcrypt(const char *h)
{
    return strncmp(h, "$2a$", 4) == 0 || strncmp(h, "$2b$", 4) == 0 || strncmp(h, "$2y$", 4) == 0;
}

static bool is_argon2id(const char *h)
{
    return strncmp(h, "$argon2id$", 10) == 0;
}

/* Skips digits at *p; false when there are none. */
static bool skip_digits(const char **p)
{
    const char *start = *p;
    while (**p >= '0' && **p <= '9')
        (*p)++;
    return *p > start && *p - start <= 10;
}

/* Skips at least min characters of alphabet at *p. */
static bool skip_chars(const char **p, const char *alphabet, size_t min)
{
    const char *start = *p;
    while (**p && strchr(alphabet, **p))
        (*p)++;
    return (size_t)(*p - start) >= min;
}

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_bcrypt[] = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

bool ts_password_hash_format_ok(const char *hash)
{
    if (!hash)
        return false;
    const char *p = hash;
    if (is_argon2id(hash)) {
        /* $argon2id$v=19$m=<kib>,t=<n>,p=<n>$<salt>$<hash> (PHC string format) */
        if (strlen(hash) >= crypto_pwhash_STRBYTES)
            return false;
        p += 10;
        if (strncmp(p, "v=19$m=", 7) != 0)
            return false;
        p += 7;
        if (!skip_digits(&p) || strncmp(p, ",t=", 3) != 0)
            return false;
        p += 3;
        if (!skip_digits(&p) || strncmp(p, ",p=", 3) != 0)
            return false;
        p += 3;
        if (!skip_digits(&p) || *p++ != '$' || !skip_chars(&p, b64_std, 11) || *p++ != '$' ||
            !skip_chars(&p, b64_std, 22))
            return false;
        return *p == '\0';
    }
    /* $2b$<cost>$ then 22 characters of salt and 31 of hash in bcrypt's alphabet. */
    if (!is_bcrypt(hash) || strlen(hash) != 60)
        return false;
    if (hash[4] < '0' || hash[4] > '3' || hash[5] < '0' || hash[5] > '9' || hash[6] != '$')
        return false;
    p = hash + 7;
    return skip_chars(&p, b64_bcrypt, 53) && *p == '\0';
}

static enum ts_rc verify_bcrypt(const char *hash, const char *password, bool *match)
{
    struct crypt_data *data = ts_xcalloc(1, sizeof(*data));
    const char *out = crypt_r(password, hash, data);
    enum ts_rc rc = TS_OK;
    if (!out || out[0] == '*' || strlen(out) != strlen(hash)) {
        rc = TS_E_INVALID;
    } else {
        *match = sodium_memcmp(out, hash, strlen(hash)) == 0;
    }
    ts_wipe(data, sizeof(*data));
    free(data);
    return rc;
}

enum ts_rc ts_password_verify(const struct ts_password_params *p, const char *phc,
                              const char *password, size_t len, bool *match, bool *needs_rehash)
{
    if (is_argon2id(phc)) {
        if (strlen(phc) >= crypto_pwhash_STRBYTES)
            return TS_E_INVALID;
        *match = crypto_pwhash_str_verify(phc, password, len) == 0;
        int nr = crypto_pwhash_str_needs_rehash(phc, p->iterations, (size_t)p->memory_kib * 1024);
        *needs_rehash = nr != 0;
        return TS_OK;
    }
    if (is_bcrypt(phc)) {
        /* bcrypt reads a NUL-terminated password and stops at 72 bytes. A password with an
         * embedded NUL cannot be what was hashed, so it never matches. */
        if (memchr(password, '\0', len)) {
            *match = false;
            *needs_rehash = true;
            return TS_OK;
        }
        enum ts_rc rc = verify_bcrypt(phc, password, match);
        if (!rc)
            *needs_rehash = true;
        return rc;
    }
    return TS_E_INVALID;
}
