/*
 * fuzz_policy.c - role and profile documents, the policy set and decisions under a fuzzer.
 *
 * Input: a JSON document {"roles": [...], "profiles": [...], "grant": [<profile or role
 * name>...], "checks": [[resource, action]...], "input": {identity, claims, resource, old,
 * new}} (any member may be missing or of the wrong type). Every role and profile goes through
 * ts_role_validate / ts_profile_validate; the canonical forms that pass build a set; the
 * grants named are added (profiles first, then roles, then memberships of collection
 * "people"); each check is decided statically and with its predicates. Nothing may crash or
 * leak, and validation must answer TS_OK or TS_E_INVALID; a canonical form must validate
 * again to the same document.
 *
 * Built with TS_FUZZ=ON as a libFuzzer program, otherwise with tests/fuzz/replay_main.c.
 * Seeds: tests/fuzz/corpus/policy/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "authz/authz_policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *validated(const json_t *list, bool role)
{
    json_t *out = json_array();
    size_t i;
    json_t *v;
    if (!json_is_array(list))
        return out;
    json_array_foreach(list, i, v)
    {
        if (i >= 16)
            break;
        json_t *canon = NULL;
        char err[256];
        enum ts_rc rc = role ? ts_role_validate(NULL, v, NULL, &canon, err, sizeof err)
                             : ts_profile_validate(NULL, v, &canon, err, sizeof err);
        if (rc != TS_OK && rc != TS_E_INVALID)
            abort();
        if (rc != TS_OK)
            continue;
        /* canonical forms are fixed points */
        json_t *again = NULL;
        rc = role ? ts_role_validate(NULL, canon, NULL, &again, err, sizeof err)
                  : ts_profile_validate(NULL, canon, &again, err, sizeof err);
        if (rc != TS_OK || !json_equal(canon, again))
            abort();
        json_decref(again);
        json_array_append_new(out, canon);
    }
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loadb((const char *)data, size, 0, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        return 0;
    }
    json_t *roles = validated(json_object_get(doc, "roles"), true);
    json_t *profiles = validated(json_object_get(doc, "profiles"), false);
    json_t *rv[16], *pv[16];
    size_t nr = json_array_size(roles), np = json_array_size(profiles);
    for (size_t i = 0; i < nr; i++)
        rv[i] = json_array_get(roles, i);
    for (size_t i = 0; i < np; i++)
        pv[i] = json_array_get(profiles, i);
    size_t skipped = 0;
    struct ts_policy_set *ps = ts_policy_set_new(rv, nr, pv, np, NULL, &skipped);

    const json_t *in = json_object_get(doc, "input");
    struct ts_arena arena;
    ts_arena_init(&arena, 4096);
    struct ts_pred_input input = {.identity = json_object_get(in, "identity"),
                                  .claims = json_object_get(in, "claims"),
                                  .resource = json_object_get(in, "resource"),
                                  .old_doc = json_object_get(in, "old"),
                                  .new_doc = json_object_get(in, "new"),
                                  .now_s = 1800000000};
    struct ts_grants g = {0};
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(doc, "grant"), i, v)
    {
        const char *name = json_string_value(v);
        if (name && !ts_grants_add_profile(&g, ps, name))
            ts_grants_add_role(&g, ps, name, "fuzz", NULL);
    }
    ts_grants_add_membership(&g, ps, "people", &input, &arena);
    json_array_foreach(json_object_get(doc, "checks"), i, v)
    {
        const char *res = json_string_value(json_array_get(v, 0));
        const char *act = json_string_value(json_array_get(v, 1));
        struct ts_pred_cache cache;
        ts_pred_cache_init(&cache);
        input.cache = &cache;
        enum ts_authz_value sv = ts_grants_static(&g, res, act);
        struct ts_authz_decision d;
        bool ok = ts_grants_decide(&g, res, act, &input, &arena, &d);
        /* a decision never allows what no rule could allow */
        if (ok && sv == TS_AUTHZ_DENIED)
            abort();
        (void)ts_grants_uses(&g, res, act);
        (void)ts_policy_resource_ok(res);
    }
    ts_arena_free(&arena);
    ts_policy_set_free(ps);
    json_decref(roles);
    json_decref(profiles);
    json_decref(doc);
    return 0;
}
