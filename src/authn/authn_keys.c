/*
 * authn_keys.c - the keyring: which key signs, which keys verify, the published
 * JWKS, and the refresh-token helpers.
 *
 * A keyring holds an immutable, reference-counted key set. Requests take a reference
 * for the time of one verification; a reload builds a new set and swaps the pointer,
 * so rotation never blocks or races a request.
 *
 * Key life cycle (ES256 mode): next -> active -> retired -> dropped. A next key is
 * published before it signs anything, so clients that cache the JWKS (auth-js keeps
 * it ten minutes) know it when it becomes active; a retired key keeps verifying (and
 * stays published) for retired_keep seconds, then is dropped.
 *
 * At rest (authn_seal.c): with a master key, every key is written sealed, and every read of
 * the keys re-seals the rows still in clear or under the previous master key, so setting or
 * changing TESSERA_MASTER_KEY takes effect at the next start (or `tessera jwt rewrap`).
 */
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "authn_int.h"

#define TOKEN_CACHE_ENTRIES 200000
#define API_KEY_LIFETIME (10LL * 365 * 24 * 3600)

struct keyset {
    _Atomic int refs;
    struct ts_jose_key *signer;     /* the active key; never NULL */
    struct ts_jose_key **verifiers; /* keys that verify (signer included) */
    size_t nverifiers;
    char *jwks;        /* {"keys":[...]} */
    char *fingerprint; /* kid:state list, to tell whether a reload changed anything */
};

struct ts_keyring {
    struct ts_store *st;
    char *hs256_secret;
    char *issuer;
    char *audience;
    int64_t access_ttl;
    int64_t retired_keep;
    pthread_mutex_t lock; /* guards cur */
    struct keyset *cur;
    struct ts_tokencache *cache;
    struct ts_master_keys master; /* !master.set: keys in clear */
    bool quiet;                   /* the last reload failed and said why: do not repeat it */
    bool reseal_warned;           /* a failed re-seal was logged once; reloads retry quietly */
};

static void keyset_unref(struct keyset *ks)
{
    if (!ks || atomic_fetch_sub(&ks->refs, 1) != 1)
        return;
    for (size_t i = 0; i < ks->nverifiers; i++)
        ts_jose_key_free(ks->verifiers[i]);
    free(ks->verifiers);
    free(ks->jwks);
    free(ks->fingerprint);
    free(ks);
}

static struct keyset *keyset_get(struct ts_keyring *kr)
{
    pthread_mutex_lock(&kr->lock);
    struct keyset *ks = kr->cur;
    atomic_fetch_add(&ks->refs, 1);
    pthread_mutex_unlock(&kr->lock);
    return ks;
}

static void random_kid(char out[17])
{
    uint8_t b[12];
    ts_rand_bytes(b, sizeof(b));
    ts_b64url_encode(b, sizeof(b), out);
}

static enum ts_rc new_key_row(const struct ts_master_keys *mk, enum ts_key_state state, int64_t now,
                              struct ts_signing_key_row *row)
{
    char kid[17];
    random_kid(kid);
    struct ts_jose_key *key = NULL;
    enum ts_rc rc = ts_jose_key_generate(TS_JOSE_ALG_ES256, kid, &key);
    if (rc)
        return rc;
    char *pem = NULL;
    rc = ts_jose_key_private_pem(key, &pem);
    ts_jose_key_free(key);
    if (rc)
        return rc;
    if (mk && mk->set) {
        char *sealed = NULL;
        rc = ts_key_seal(mk, kid, "ES256", pem, &sealed);
        ts_wipe(pem, strlen(pem));
        free(pem);
        if (rc)
            return rc;
        pem = sealed;
    }
    row->kid = ts_xstrdup(kid);
    row->alg = ts_xstrdup("ES256");
    row->private_pem = pem;
    row->state = state;
    row->created_at = now;
    row->state_changed_at = now;
    return TS_OK;
}

static enum ts_rc insert_new_key(struct ts_store *st, const struct ts_master_keys *mk,
                                 enum ts_key_state state, int64_t now, char **out_kid)
{
    struct ts_signing_key_row *row = ts_xcalloc(1, sizeof(*row));
    enum ts_rc rc = new_key_row(mk, state, now, row);
    if (!rc)
        rc = ts_store_signing_key_insert(st, row);
    if (!rc && out_kid)
        *out_kid = ts_xstrdup(row->kid);
    ts_signing_key_rows_free(row, 1);
    return rc;
}

static enum ts_rc build_hs256(struct ts_keyring *kr, struct keyset **out)
{
    struct keyset *ks = ts_xcalloc(1, sizeof(*ks));
    atomic_init(&ks->refs, 1);
    struct ts_jose_key *key = NULL;
    enum ts_rc rc = ts_jose_key_new_hmac(TS_JOSE_ALG_HS256, (const uint8_t *)kr->hs256_secret,
                                         strlen(kr->hs256_secret), NULL, &key);
    if (rc) {
        free(ks);
        return rc;
    }
    ks->signer = key;
    ks->verifiers = ts_xcalloc(1, sizeof(*ks->verifiers));
    ks->verifiers[0] = key;
    ks->nverifiers = 1;
    /* gotrue-api.md §3: symmetric keys are never published. */
    ks->jwks = ts_xstrdup("{\"keys\":[]}");
    ks->fingerprint = ts_xstrdup("hs256");
    *out = ks;
    return TS_OK;
}

/* Re-seals one row under the current master key. A row someone else re-sealed meanwhile
 * (TS_E_STALE) is fine; a failed write (a read-only database) is retried at the next read. */
static void reseal_row(struct ts_keyring *kr, const struct ts_signing_key_row *r, const char *pem)
{
    char *sealed = NULL;
    enum ts_rc rc = ts_key_seal(&kr->master, r->kid, r->alg, pem, &sealed);
    if (!rc)
        rc = ts_store_signing_key_reseal(kr->st, r->kid, r->private_pem, sealed);
    free(sealed);
    if (!rc)
        ts_log_info("signing key %s sealed under master key %s", r->kid, kr->master.id);
    else if (rc != TS_E_STALE && !kr->reseal_warned) {
        kr->reseal_warned = true;
        ts_log_warn("signing key %s could not be sealed under the master key yet (%s)", r->kid,
                    ts_rc_name(rc));
    }
}

/* Opens row r into a parsed key; re-seals it when it is not yet under the current master key.
 * *out stays NULL for a retired key past its keep time (still re-sealed when it opens). */
static enum ts_rc load_row(struct ts_keyring *kr, const struct ts_signing_key_row *r, bool expired,
                           struct ts_jose_key **out)
{
    char *pem = NULL, *err = NULL;
    bool current = true;
    enum ts_rc rc = ts_key_open(&kr->master, r->kid, r->alg, r->private_pem, &pem, &current, &err);
    if (rc) {
        if (!expired && !kr->quiet)
            ts_log_error("%s", err);
        free(err);
        return expired ? TS_OK : rc;
    }
    if (kr->master.set && !current)
        reseal_row(kr, r, pem);
    if (!expired) {
        rc = ts_jose_key_from_pem(pem, strlen(pem), ts_jose_alg_from_name(r->alg), r->kid, out);
        if (rc && !kr->quiet)
            ts_log_error("signing key %s cannot be loaded", r->kid);
    }
    ts_wipe(pem, strlen(pem));
    free(pem);
    return rc;
}

static enum ts_rc build_from_store(struct ts_keyring *kr, struct keyset **out)
{
    struct ts_signing_key_row *rows = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_signing_keys_list(kr->st, &rows, &n);
    if (rc)
        return rc;
    int64_t now = ts_now_us();
    struct keyset *ks = ts_xcalloc(1, sizeof(*ks));
    atomic_init(&ks->refs, 1);
    ks->verifiers = ts_xcalloc(n ? n : 1, sizeof(*ks->verifiers));
    json_t *keys = json_array();
    struct ts_buf fp;
    ts_buf_init(&fp, 1 << 20);
    for (size_t i = 0; i < n && !rc; i++) {
        struct ts_signing_key_row *r = &rows[i];
        bool expired =
            r->state == TS_KEY_RETIRED && r->state_changed_at < now - kr->retired_keep * 1000000;
        struct ts_jose_key *key = NULL;
        rc = load_row(kr, r, expired, &key);
        if (rc || !key)
            continue;
        ks->verifiers[ks->nverifiers++] = key;
        if (r->state == TS_KEY_ACTIVE)
            ks->signer = key;
        json_t *jwk = ts_jose_key_public_jwk(key);
        if (jwk)
            json_array_append_new(keys, jwk);
        if (ts_buf_appendf(&fp, "%s:%d;", r->kid, (int)r->state))
            rc = TS_E_INTERNAL;
    }
    ts_signing_key_rows_free(rows, n);
    if (!rc && !ks->signer) {
        if (!kr->quiet)
            ts_log_error("no active signing key in the database");
        rc = TS_E_NOT_FOUND;
    }
    if (rc) {
        json_decref(keys);
        ts_buf_free(&fp);
        keyset_unref(ks);
        return rc;
    }
    json_t *doc = json_pack("{s:o}", "keys", keys);
    ks->jwks = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    ks->fingerprint = ts_buf_take(&fp, NULL);
    *out = ks;
    return TS_OK;
}

static enum ts_rc build(struct ts_keyring *kr, struct keyset **out)
{
    return kr->hs256_secret ? build_hs256(kr, out) : build_from_store(kr, out);
}

enum ts_rc ts_keyring_open(struct ts_store *st, const struct ts_keys_config *cfg,
                           struct ts_keyring **out, bool *out_created)
{
    struct ts_keyring *kr = ts_xcalloc(1, sizeof(*kr));
    kr->st = st;
    kr->hs256_secret =
        cfg->hs256_secret && cfg->hs256_secret[0] ? ts_xstrdup(cfg->hs256_secret) : NULL;
    kr->issuer = ts_xstrdup(cfg->issuer);
    kr->audience = ts_xstrdup(cfg->audience);
    kr->access_ttl = cfg->access_ttl;
    kr->retired_keep = cfg->retired_keep;
    if (cfg->master)
        kr->master = *cfg->master;
    pthread_mutex_init(&kr->lock, NULL);
    bool created = false;
    enum ts_rc rc = TS_OK;
    if (!kr->hs256_secret) {
        struct ts_signing_key_row *rows = NULL;
        size_t n = 0;
        rc = ts_store_signing_keys_list(st, &rows, &n);
        ts_signing_key_rows_free(rows, n);
        if (!rc && n == 0) {
            int64_t now = ts_now_us();
            rc = insert_new_key(st, &kr->master, TS_KEY_ACTIVE, now, NULL);
            if (rc == TS_E_CONFLICT) {
                rc = TS_OK; /* another process created the keys first */
            } else if (!rc) {
                rc = insert_new_key(st, &kr->master, TS_KEY_NEXT, now, NULL);
                created = true;
            }
        }
    }
    if (!rc)
        rc = build(kr, &kr->cur);
    if (rc) {
        ts_keyring_free(kr);
        return rc;
    }
    kr->cache = ts__tokencache_new(TOKEN_CACHE_ENTRIES);
    if (out_created)
        *out_created = created;
    *out = kr;
    return TS_OK;
}

enum ts_rc ts_keyring_reload(struct ts_keyring *kr)
{
    struct keyset *ks = NULL;
    enum ts_rc rc = build(kr, &ks);
    /* Only the main thread reloads: quiet needs no lock. */
    kr->quiet = rc != TS_OK;
    if (rc)
        return rc;
    pthread_mutex_lock(&kr->lock);
    struct keyset *old = kr->cur;
    bool changed = strcmp(old->fingerprint, ks->fingerprint) != 0;
    if (changed)
        kr->cur = ks;
    pthread_mutex_unlock(&kr->lock);
    if (changed) {
        /* A withdrawn key must stop verifying at once, cached tokens included. */
        ts__tokencache_clear(kr->cache);
        ts_log_info("signing keys reloaded");
        keyset_unref(old);
    } else {
        keyset_unref(ks);
    }
    return TS_OK;
}

void ts_keyring_free(struct ts_keyring *kr)
{
    if (!kr)
        return;
    keyset_unref(kr->cur);
    ts__tokencache_free(kr->cache);
    if (kr->hs256_secret) {
        ts_wipe(kr->hs256_secret, strlen(kr->hs256_secret));
        free(kr->hs256_secret);
    }
    free(kr->issuer);
    free(kr->audience);
    ts_master_keys_wipe(&kr->master);
    pthread_mutex_destroy(&kr->lock);
    free(kr);
}

enum ts_rc ts_keyring_sign_text(struct ts_keyring *kr, const char *payload, size_t len,
                                char **out_token)
{
    struct keyset *ks = keyset_get(kr);
    enum ts_rc rc = ts_jws_sign(ks->signer, payload, len, out_token);
    keyset_unref(ks);
    return rc;
}

enum ts_rc ts_keyring_sign(struct ts_keyring *kr, const json_t *claims, char **out_token)
{
    char *payload = json_dumps(claims, JSON_COMPACT);
    if (!payload)
        return TS_E_INTERNAL;
    enum ts_rc rc = ts_keyring_sign_text(kr, payload, strlen(payload), out_token);
    free(payload);
    return rc;
}

static const struct ts_jose_key *lookup_key(void *cls, enum ts_jose_alg alg, const char *kid)
{
    struct keyset *ks = cls;
    (void)alg; /* jose checks that the key's algorithm is the header's */
    for (size_t i = 0; i < ks->nverifiers; i++) {
        const char *k = ts_jose_key_kid(ks->verifiers[i]);
        if ((kid == NULL && k == NULL) || (kid && k && strcmp(kid, k) == 0))
            return ks->verifiers[i];
    }
    return NULL;
}

static bool copy_claim(const json_t *claims, const char *name, char *out, size_t cap, bool required)
{
    const json_t *v = json_object_get(claims, name);
    if (!v) {
        out[0] = '\0';
        return !required;
    }
    if (!json_is_string(v) || json_string_length(v) >= cap || json_string_length(v) == 0)
        return false;
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return true;
}

/* Turns verified claims into a principal, refusing shapes we never issue. */
static enum ts_rc principal_from_claims(struct ts_keyring *kr, const json_t *claims,
                                        struct ts_principal *p)
{
    memset(p, 0, sizeof(*p));
    const json_t *ident = json_object_get(claims, "tessera_identity");
    if (ident) {
        /* an exchanged token: identity only; never a user session (GoTrue's endpoints refuse
         * it: no sub) */
        if (!copy_claim(claims, "role", p->role, sizeof(p->role), true) ||
            !copy_claim(claims, "tessera_identity", p->identity, sizeof(p->identity), true) ||
            !strchr(p->identity, '/') || json_object_get(claims, "session_id"))
            return TS_E_BAD_TOKEN;
        struct ts_jwt_rules aud_rule = {.audience = kr->audience, .now = ts_now_s()};
        if (ts_jwt_check_claims(claims, &aud_rule) != TS_OK)
            return TS_E_BAD_TOKEN;
        p->exp = (int64_t)json_number_value(json_object_get(claims, "exp"));
        return TS_OK;
    }
    if (!copy_claim(claims, "role", p->role, sizeof(p->role), true) ||
        !copy_claim(claims, "sub", p->sub, sizeof(p->sub), false) ||
        !copy_claim(claims, "session_id", p->session_id, sizeof(p->session_id), false))
        return TS_E_BAD_TOKEN;
    if (p->sub[0]) {
        /* A user token: it must name a session (that is what makes logout immediate) and
         * be meant for us (aud). */
        if (!ts_uuid_valid(p->sub) || !ts_uuid_valid(p->session_id))
            return TS_E_BAD_TOKEN;
        struct ts_jwt_rules aud_rule = {.audience = kr->audience, .now = ts_now_s()};
        if (ts_jwt_check_claims(claims, &aud_rule) != TS_OK)
            return TS_E_BAD_TOKEN;
    } else if (p->session_id[0]) {
        return TS_E_BAD_TOKEN;
    }
    const json_t *anon = json_object_get(claims, "is_anonymous");
    if (anon && !json_is_boolean(anon))
        return TS_E_BAD_TOKEN;
    p->is_anonymous = json_is_true(anon);
    p->exp = (int64_t)json_number_value(json_object_get(claims, "exp"));
    return TS_OK;
}

enum ts_rc ts_keyring_verify(struct ts_keyring *kr, const char *token, size_t len,
                             struct ts_principal *out)
{
    int64_t now = ts_now_s();
    if (ts__tokencache_get(kr->cache, token, len, now, out))
        return TS_OK;
    struct keyset *ks = keyset_get(kr);
    json_t *claims = NULL;
    enum ts_rc rc = ts_jws_verify(token, len, lookup_key, ks, &claims, NULL);
    keyset_unref(ks);
    if (rc == TS_E_TOO_BIG)
        rc = TS_E_BAD_TOKEN;
    if (rc)
        return rc;
    /* RFC 8725 §3.8/3.9: exact issuer; expiry always required. */
    struct ts_jwt_rules rules = {
        .issuer = kr->issuer, .audience = NULL, .now = now, .leeway = 0, .require_exp = true};
    rc = ts_jwt_check_claims(claims, &rules);
    struct ts_principal p;
    if (!rc)
        rc = principal_from_claims(kr, claims, &p);
    json_decref(claims);
    if (rc)
        return rc;
    ts__tokencache_put(kr->cache, token, len, &p);
    *out = p;
    return TS_OK;
}

char *ts_keyring_jwks(struct ts_keyring *kr)
{
    struct keyset *ks = keyset_get(kr);
    char *s = ts_xstrdup(ks->jwks);
    keyset_unref(ks);
    return s;
}

enum ts_rc ts_keyring_mint_api_key(struct ts_keyring *kr, const char *role, int64_t iat,
                                   char **out_token)
{
    json_t *claims = json_pack("{s:s, s:s, s:I, s:I}", "iss", kr->issuer, "role", role, "iat",
                               (json_int_t)iat, "exp", (json_int_t)(iat + API_KEY_LIFETIME));
    enum ts_rc rc = ts_keyring_sign(kr, claims, out_token);
    json_decref(claims);
    return rc;
}

enum ts_rc ts_keys_rotate(struct ts_store *st, const struct ts_keys_config *cfg, char **out_new_kid)
{
    if (cfg->hs256_secret && cfg->hs256_secret[0])
        return TS_E_INVALID; /* a configured secret is rotated by changing the configuration */
    struct ts_signing_key_row *rows = NULL;
    size_t n = 0;
    enum ts_rc rc = ts_store_signing_keys_list(st, &rows, &n);
    if (rc)
        return rc;
    char *next_kid = NULL;
    for (size_t i = 0; i < n; i++)
        if (rows[i].state == TS_KEY_NEXT && !next_kid)
            next_kid = ts_xstrdup(rows[i].kid);
    ts_signing_key_rows_free(rows, n);
    int64_t now = ts_now_us();
    if (!next_kid)
        rc = insert_new_key(st, cfg->master, TS_KEY_NEXT, now, &next_kid);
    if (!rc)
        rc = ts_store_signing_key_promote(st, next_kid, now, now - cfg->retired_keep * 1000000);
    if (!rc)
        rc = insert_new_key(st, cfg->master, TS_KEY_NEXT, now, NULL);
    if (!rc && out_new_kid)
        *out_new_kid = next_kid;
    else
        free(next_kid);
    return rc;
}

void ts_keyring_cache_stats(struct ts_keyring *kr, struct ts_tokencache_stats *out)
{
    ts__tokencache_stats(kr->cache, out);
}

void ts_refresh_token_new(char token[TS_REFRESH_TOKEN_LEN + 1], uint8_t hash[TS_REFRESH_HASH_LEN])
{
    uint8_t raw[TS_REFRESH_TOKEN_BYTES];
    ts_rand_bytes(raw, sizeof(raw));
    ts_b64url_encode(raw, sizeof(raw), token);
    ts_wipe(raw, sizeof(raw));
    ts_refresh_token_hash(token, TS_REFRESH_TOKEN_LEN, hash);
}

void ts_opaque_secret_new(const char prefix[4], char out[TS_SECRET_TEXT_LEN + 1],
                          uint8_t hash[TS_SECRET_HASH_LEN])
{
    uint8_t raw[TS_REFRESH_TOKEN_BYTES];
    ts_rand_bytes(raw, sizeof(raw));
    memcpy(out, prefix, 4);
    ts_b64url_encode(raw, sizeof(raw), out + 4);
    ts_wipe(raw, sizeof(raw));
    ts_sha256(out, TS_SECRET_TEXT_LEN, hash);
}

bool ts_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

void ts_sha256(const void *p, size_t n, uint8_t out[32])
{
    SHA256(p, n, out);
}

void ts_refresh_token_hash(const char *token, size_t len, uint8_t hash[TS_REFRESH_HASH_LEN])
{
    ts_sha256(token, len, hash);
}
