/*
 * authn_seal.c - signing keys at rest under TESSERA_MASTER_KEY (see authn.h).
 *
 * The master key never encrypts anything itself: libsodium's KDF derives from it one key
 * for sealing signing keys and one identifier. The identifier is written into every sealed
 * row, so a key that does not match is named in the error ("sealed under master key
 * 3f0c..., TESSERA_MASTER_KEY is 9a41...") instead of surfacing as a failed decryption, and
 * so the keyring knows, without trying, which rows still need re-sealing after a rotation.
 *
 * XChaCha20-Poly1305 takes a random 192-bit nonce per seal, safe to draw at random for any
 * number of rows. The associated data binds purpose, kid and alg: swapping two sealed rows,
 * or relabelling a row's algorithm, makes it fail to open.
 */
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authn_int.h"

#define SUBKEY_SEAL 1 /* crypto_kdf subkey ids under the context below */
#define SUBKEY_ID 2
#define KDF_CONTEXT "tsmaster" /* crypto_kdf_CONTEXTBYTES (8) characters */
#define PURPOSE "tessera signing key v1"
#define NONCE_LEN crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_LEN crypto_aead_xchacha20poly1305_ietf_ABYTES
#define MAX_KEY_FILE 4096
#define MAX_PEM (64 * 1024) /* far beyond any key we generate */

_Static_assert(crypto_kdf_CONTEXTBYTES == sizeof(KDF_CONTEXT) - 1, "KDF context length");
_Static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == TS_MASTER_KEY_LEN, "key length");

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Decodes 32 bytes from hex or any base64 alphabet (padded or not). */
static bool decode_key(const char *text, size_t len, uint8_t out[TS_MASTER_KEY_LEN])
{
    size_t bin_len = 0;
    const char *end = NULL;
    if (len == 2 * TS_MASTER_KEY_LEN &&
        sodium_hex2bin(out, TS_MASTER_KEY_LEN, text, len, NULL, &bin_len, &end) == 0 &&
        bin_len == TS_MASTER_KEY_LEN && end == text + len)
        return true;
    static const int variants[] = {
        sodium_base64_VARIANT_ORIGINAL, sodium_base64_VARIANT_ORIGINAL_NO_PADDING,
        sodium_base64_VARIANT_URLSAFE, sodium_base64_VARIANT_URLSAFE_NO_PADDING};
    for (size_t i = 0; i < TS_ARRAY_LEN(variants); i++) {
        uint8_t buf[TS_MASTER_KEY_LEN + 3];
        if (sodium_base642bin(buf, sizeof(buf), text, len, NULL, &bin_len, &end, variants[i]) ==
                0 &&
            bin_len == TS_MASTER_KEY_LEN && end == text + len) {
            memcpy(out, buf, TS_MASTER_KEY_LEN);
            sodium_memzero(buf, sizeof(buf));
            return true;
        }
        sodium_memzero(buf, sizeof(buf));
    }
    return false;
}

static void key_id(const uint8_t key[TS_MASTER_KEY_LEN], char out[TS_MASTER_KEY_ID_LEN + 1])
{
    uint8_t sub[crypto_kdf_BYTES_MIN];
    crypto_kdf_derive_from_key(sub, sizeof(sub), SUBKEY_ID, KDF_CONTEXT, key);
    sodium_bin2hex(out, TS_MASTER_KEY_ID_LEN + 1, sub, TS_MASTER_KEY_ID_LEN / 2);
    sodium_memzero(sub, sizeof(sub));
}

static enum ts_rc parse_one(const char *name, const char *text, uint8_t key[TS_MASTER_KEY_LEN],
                            char id[TS_MASTER_KEY_ID_LEN + 1], char **err)
{
    size_t len = strlen(text);
    while (len && is_space(*text)) {
        text++;
        len--;
    }
    while (len && is_space(text[len - 1]))
        len--;
    if (!decode_key(text, len, key)) {
        *err = ts_xasprintf("%s: expected 32 random bytes as 64 hex digits or base64 (make one "
                            "with `openssl rand -hex 32`)",
                            name);
        return TS_E_INVALID;
    }
    key_id(key, id);
    return TS_OK;
}

static enum ts_rc read_key_file(const char *path, char **out, char **err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *err = ts_xasprintf("TESSERA_MASTER_KEY_FILE: cannot open %s (%s)", path, strerror(errno));
        return TS_E_INVALID;
    }
    char *buf = ts_xmalloc(MAX_KEY_FILE + 1);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, MAX_KEY_FILE + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
        if (n > MAX_KEY_FILE)
            break;
    }
    close(fd);
    if (n > MAX_KEY_FILE) {
        ts_wipe(buf, n);
        free(buf);
        *err = ts_xasprintf("TESSERA_MASTER_KEY_FILE: %s is larger than a key", path);
        return TS_E_INVALID;
    }
    buf[n] = '\0';
    *out = buf;
    return TS_OK;
}

enum ts_rc ts_master_keys_load(const char *key_text, const char *key_file,
                               const char *previous_text, struct ts_master_keys *out, char **err)
{
    if (sodium_init() < 0) {
        *err = ts_xstrdup("libsodium cannot start");
        return TS_E_CRYPTO;
    }
    memset(out, 0, sizeof(*out));
    bool have_text = key_text && key_text[0], have_file = key_file && key_file[0];
    bool have_prev = previous_text && previous_text[0];
    if (have_text && have_file) {
        *err = ts_xstrdup("TESSERA_MASTER_KEY and TESSERA_MASTER_KEY_FILE are both set; set one");
        return TS_E_INVALID;
    }
    if (!have_text && !have_file) {
        if (have_prev) {
            *err = ts_xstrdup("TESSERA_MASTER_KEY_PREVIOUS is set without TESSERA_MASTER_KEY: "
                              "keys sealed under it are re-sealed under the current master "
                              "key, so one is needed");
            return TS_E_INVALID;
        }
        return TS_OK;
    }
    char *file_text = NULL;
    enum ts_rc rc = TS_OK;
    if (have_file)
        rc = read_key_file(key_file, &file_text, err);
    if (!rc)
        rc = parse_one(have_file ? "TESSERA_MASTER_KEY_FILE" : "TESSERA_MASTER_KEY",
                       have_file ? file_text : key_text, out->key, out->id, err);
    if (file_text) {
        ts_wipe(file_text, strlen(file_text));
        free(file_text);
    }
    if (!rc && have_prev) {
        rc = parse_one("TESSERA_MASTER_KEY_PREVIOUS", previous_text, out->previous,
                       out->previous_id, err);
        /* The same key twice is harmless: every row already opens with the current one. */
        out->has_previous = !rc && strcmp(out->previous_id, out->id) != 0;
    }
    if (rc) {
        ts_master_keys_wipe(out);
        return rc;
    }
    out->set = true;
    return TS_OK;
}

void ts_master_keys_wipe(struct ts_master_keys *mk)
{
    sodium_memzero(mk, sizeof(*mk));
}

/* The sealing key and the associated data of one row. */
static void seal_key(const uint8_t master[TS_MASTER_KEY_LEN], uint8_t out[TS_MASTER_KEY_LEN])
{
    crypto_kdf_derive_from_key(out, TS_MASTER_KEY_LEN, SUBKEY_SEAL, KDF_CONTEXT, master);
}

static size_t associated_data(const char *kid, const char *alg, char *out, size_t cap)
{
    /* NUL separators: neither kid nor alg can contain one, so the encoding is unambiguous. */
    size_t pl = sizeof(PURPOSE), kl = strlen(kid) + 1, al = strlen(alg) + 1;
    if (pl + kl + al > cap)
        return 0;
    memcpy(out, PURPOSE, pl);
    memcpy(out + pl, kid, kl);
    memcpy(out + pl + kl, alg, al);
    return pl + kl + al;
}

enum ts_rc ts_key_seal(const struct ts_master_keys *mk, const char *kid, const char *alg,
                       const char *pem, char **out)
{
    if (!mk || !mk->set)
        return TS_E_INTERNAL;
    char ad[512];
    size_t adlen = associated_data(kid, alg, ad, sizeof(ad));
    size_t plen = strlen(pem);
    if (!adlen || plen > MAX_PEM)
        return TS_E_INVALID;
    size_t blob_len = NONCE_LEN + plen + TAG_LEN;
    uint8_t *blob = ts_xmalloc(blob_len);
    randombytes_buf(blob, NONCE_LEN);
    uint8_t key[TS_MASTER_KEY_LEN];
    seal_key(mk->key, key);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(blob + NONCE_LEN, &clen, (const uint8_t *)pem, plen,
                                               (const uint8_t *)ad, adlen, NULL, blob, key);
    sodium_memzero(key, sizeof(key));
    size_t head = strlen(TS_SEALED_PREFIX) + TS_MASTER_KEY_ID_LEN + 1;
    char *text = ts_xmalloc(head + ts_b64url_encoded_len(blob_len) + 1);
    snprintf(text, head + 1, "%s%s$", TS_SEALED_PREFIX, mk->id);
    ts_b64url_encode(blob, blob_len, text + head);
    free(blob);
    *out = text;
    return TS_OK;
}

bool ts_key_is_sealed(const char *stored, char id[TS_MASTER_KEY_ID_LEN + 1])
{
    size_t pl = strlen(TS_SEALED_PREFIX);
    if (strncmp(stored, TS_SEALED_PREFIX, pl) != 0)
        return false;
    const char *p = stored + pl;
    for (size_t i = 0; i < TS_MASTER_KEY_ID_LEN; i++)
        if (!strchr("0123456789abcdef", p[i]) || !p[i])
            return false;
    if (p[TS_MASTER_KEY_ID_LEN] != '$')
        return false;
    if (id) {
        memcpy(id, p, TS_MASTER_KEY_ID_LEN);
        id[TS_MASTER_KEY_ID_LEN] = '\0';
    }
    return true;
}

static enum ts_rc open_sealed(const uint8_t master[TS_MASTER_KEY_LEN], const char *kid,
                              const char *alg, const char *b64, char **out_pem)
{
    char ad[512];
    size_t adlen = associated_data(kid, alg, ad, sizeof(ad));
    size_t n = strlen(b64);
    if (!adlen || n > ts_b64url_encoded_len(NONCE_LEN + MAX_PEM + TAG_LEN))
        return TS_E_PARSE;
    uint8_t *blob = ts_xmalloc(ts_b64url_decoded_max(n) + 1);
    size_t blob_len = 0;
    if (ts_b64url_decode(b64, n, blob, &blob_len) != TS_OK || blob_len < NONCE_LEN + TAG_LEN) {
        free(blob);
        return TS_E_PARSE;
    }
    size_t plen = blob_len - NONCE_LEN - TAG_LEN;
    char *pem = ts_xmalloc(plen + 1);
    uint8_t key[TS_MASTER_KEY_LEN];
    seal_key(master, key);
    unsigned long long got = 0;
    int r = crypto_aead_xchacha20poly1305_ietf_decrypt((uint8_t *)pem, &got, NULL, blob + NONCE_LEN,
                                                       blob_len - NONCE_LEN, (const uint8_t *)ad,
                                                       adlen, blob, key);
    sodium_memzero(key, sizeof(key));
    free(blob);
    if (r != 0 || got != plen || memchr(pem, '\0', plen)) {
        ts_wipe(pem, plen);
        free(pem);
        return TS_E_BAD_TOKEN;
    }
    pem[plen] = '\0';
    *out_pem = pem;
    return TS_OK;
}

enum ts_rc ts_key_open(const struct ts_master_keys *mk, const char *kid, const char *alg,
                       const char *stored, char **out_pem, bool *out_current, char **err)
{
    bool set = mk && mk->set;
    char id[TS_MASTER_KEY_ID_LEN + 1];
    if (!ts_key_is_sealed(stored, id)) {
        if (strncmp(stored, "$tsmk", 5) == 0) {
            *err = ts_xasprintf("signing key %s is sealed in a format this version does not "
                                "know (written by a newer Tessera?)",
                                kid);
            return TS_E_PARSE;
        }
        if (strncmp(stored, "-----BEGIN ", 11) != 0) {
            *err = ts_xasprintf("signing key %s is neither a PEM key nor sealed", kid);
            return TS_E_PARSE;
        }
        *out_pem = ts_xstrdup(stored);
        if (out_current)
            *out_current = !set; /* in clear: needs sealing once a master key is set */
        return TS_OK;
    }
    const uint8_t *master = NULL;
    if (set && strcmp(id, mk->id) == 0)
        master = mk->key;
    else if (set && mk->has_previous && strcmp(id, mk->previous_id) == 0)
        master = mk->previous;
    if (!master) {
        if (!set)
            *err = ts_xasprintf("signing key %s is sealed under master key %s, and "
                                "TESSERA_MASTER_KEY is not set",
                                kid, id);
        else if (mk->has_previous)
            *err = ts_xasprintf("signing key %s is sealed under master key %s; "
                                "TESSERA_MASTER_KEY is %s and TESSERA_MASTER_KEY_PREVIOUS is %s",
                                kid, id, mk->id, mk->previous_id);
        else
            *err = ts_xasprintf("signing key %s is sealed under master key %s, not under "
                                "TESSERA_MASTER_KEY (%s); to change the master key, set the old "
                                "one as TESSERA_MASTER_KEY_PREVIOUS",
                                kid, id, mk->id);
        return TS_E_DENIED;
    }
    enum ts_rc rc = open_sealed(
        master, kid, alg, stored + strlen(TS_SEALED_PREFIX) + TS_MASTER_KEY_ID_LEN + 1, out_pem);
    if (rc == TS_E_PARSE) {
        *err = ts_xasprintf("signing key %s: the sealed text is malformed", kid);
        return rc;
    }
    if (rc) {
        *err = ts_xasprintf("signing key %s does not open under master key %s: the row was "
                            "altered or belongs to another key",
                            kid, id);
        return rc;
    }
    if (out_current)
        *out_current = master == mk->key;
    return TS_OK;
}
