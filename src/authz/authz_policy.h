/*
 * authz_policy.h - roles, profiles and decisions (issue 6), over the predicate language of
 * authz.h. Pure like the rest of src/authz: no I/O, no clock, no logging; the API layer
 * loads the objects from the store, builds a policy set, and logs what a decision says.
 *
 * A role grants actions on resources. A resource is "collections/<name>" (actions read,
 * create, write, delete, list) or "api/<controller>" (actions are the controller's
 * endpoints); a name of "*" (collections or api) stands for every collection or controller. Each
 * action's rule is true, false, or a predicate. Inside one role an exact resource hides
 * the wildcard resource, and an exact action hides "*" (Kuzzle's shadowing rule): a role
 * that allows every action of every controller and names api/token with only {"list": true}
 * does not allow token:create.
 * Roles combine as an allow-only union: any applying role that allows decides; nothing
 * denies; no role means deny.
 *
 * A profile lists roles, each optionally restricted to collections (restrictedTo): a role
 * reached through a restricted policy applies to those collections only (api resources are
 * not restricted). A role's membership rules grant it to identities of a collection whose
 * document satisfies a predicate (Fauna).
 *
 * What this must never do: allow on an error (a failing predicate is false, with a reason),
 * let a wildcard in a request (a resource or action of "*") match anything, or keep pointers
 * into a decision's inputs.
 */
#ifndef TS_AUTHZ_POLICY_H
#define TS_AUTHZ_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "authz.h"

#define TS_POLICY_MAX_PRIVILEGES 64 /* per role */
#define TS_POLICY_MAX_ACTIONS 64    /* per privilege */
#define TS_POLICY_MAX_MEMBERSHIP 16 /* per role */
#define TS_POLICY_MAX_POLICIES 64   /* per profile */
#define TS_POLICY_MAX_RESTRICT 64   /* collections named by one policy's restrictedTo */
#define TS_POLICY_MAX_GRANTS 64     /* roles applying to one caller */
#define TS_POLICY_NAME_MAX 64       /* role and profile names */

/* The actions of a collection resource. */
extern const char *const ts_policy_collection_actions[]; /* NULL-terminated */

/*
 * Validates a role given by a client and answers its canonical form (a new object):
 * {name, privileges: [{resource, actions: {<action>: true|false|"<predicate>"}}],
 *  membership: [{collection, predicate?}], data?}. Kuzzle's form {controllers: {<c>:
 * {actions: {<a>: bool}}}} is accepted too (alone or beside privileges) and converted to
 * "api/<c>" privileges. Every predicate is compiled under lim. TS_E_INVALID with err (one
 * line, naming the member and, for a predicate, its line and column) otherwise.
 */
TS_NODISCARD enum ts_rc ts_role_validate(const char *name, const json_t *in,
                                         const struct ts_pred_limits *lim, json_t **canon,
                                         char *err, size_t errcap);
/*
 * Validates a profile: {name, policies: [{role, restrictedTo?: [{collections: [...]}]}],
 * rate_limit?, data?}; Kuzzle's roleId and rateLimit are accepted as role and rate_limit,
 * and restrictedTo's index is ignored. Whether the roles exist is the caller's question
 * (ts_policy_role). TS_E_INVALID with err otherwise.
 */
TS_NODISCARD enum ts_rc ts_profile_validate(const char *name, const json_t *in, json_t **canon,
                                            char *err, size_t errcap);

/* The roles and profiles every instance starts with (created when absent): the admin role
 * and profile (everything), default (what an identity may do for itself) and anonymous (log
 * in). Canonical documents, borrowed, NULL-terminated. */
extern const char *const ts_policy_default_roles[];
extern const char *const ts_policy_default_profiles[];

struct ts_role;
/* An immutable set of compiled roles and profiles that any number of threads may read. */
struct ts_policy_set;

/* Builds a set from canonical documents (as stored). A document that no longer validates is
 * left out and counted in *skipped (may be NULL). Never fails. */
struct ts_policy_set *ts_policy_set_new(json_t *const *roles, size_t nroles,
                                        json_t *const *profiles, size_t nprofiles,
                                        const struct ts_pred_limits *lim, size_t *skipped);
void ts_policy_set_free(struct ts_policy_set *ps);
const struct ts_role *ts_policy_role(const struct ts_policy_set *ps, const char *name);
/* The profile's canonical document, or NULL. */
const json_t *ts_policy_profile(const struct ts_policy_set *ps, const char *name);
const char *ts_role_name(const struct ts_role *r);
/* Every role of the set, for listing rights: *n set, array borrowed. */
const struct ts_role *const *ts_policy_roles(const struct ts_policy_set *ps, size_t *n);
/* Calls fn for every concrete collection name a role's privileges or memberships name. */
void ts_role_collections(const struct ts_role *r, void (*fn)(void *cls, const char *name),
                         void *cls);
/* Calls fn for every concrete api/<controller> action a role names (not "*"). */
void ts_role_api_actions(const struct ts_role *r,
                         void (*fn)(void *cls, const char *controller, const char *action),
                         void *cls);

/* ---- the roles that apply to one caller ---- */

struct ts_grant {
    const struct ts_role *role;
    const char *via;             /* the profile's name, "membership", "key", "provider"; borrowed */
    const json_t *restricted_to; /* collection names (an array), NULL: unrestricted */
};

struct ts_grants {
    size_t n;
    struct ts_grant items[TS_POLICY_MAX_GRANTS];
};

/* Adds role `name` (ignored when the set has none, or the list is full); via is borrowed. */
void ts_grants_add_role(struct ts_grants *g, const struct ts_policy_set *ps, const char *name,
                        const char *via, const json_t *restricted_to);
/* Adds every policy of profile `name` (ignored when there is none); false when missing. */
bool ts_grants_add_profile(struct ts_grants *g, const struct ts_policy_set *ps, const char *name);
/*
 * Adds the roles whose membership names identity's collection and whose predicate (if any)
 * is true for in (whose identity root is the identity's document). A predicate that fails
 * does not grant. Allocates only from arena.
 */
void ts_grants_add_membership(struct ts_grants *g, const struct ts_policy_set *ps,
                              const char *collection, const struct ts_pred_input *in,
                              struct ts_arena *arena);

/* ---- decisions ---- */

enum ts_authz_value { TS_AUTHZ_DENIED, TS_AUTHZ_ALLOWED, TS_AUTHZ_CONDITIONAL };

struct ts_authz_decision {
    bool allowed;
    const char *role;      /* the role that allowed, or NULL; borrowed from the set */
    const char *privilege; /* its resource as written, wildcard or not */
    const char *action;    /* the action key that matched ("read" or "*") */
    const char *rule;      /* "true", or the predicate's source */
    const char *via;       /* how the role reached the caller */
    char reason[160];      /* a denial's reason: no rule, or a predicate's failure */
};

/*
 * Splits "collections/<name>" or "api/<controller>" into its kind and name. False for any
 * other text, and for a name of "*" (a request names a concrete resource).
 */
bool ts_policy_resource_ok(const char *resource);

/* Whether g allows action on resource without evaluating anything: ALLOWED when a rule is
 * true, CONDITIONAL when the best is a predicate, DENIED otherwise. */
enum ts_authz_value ts_grants_static(const struct ts_grants *g, const char *resource,
                                     const char *action);
/*
 * The same three with flags. TS_AUTHZ_EXACT_RESOURCE: only privileges naming the resource
 * itself count, not the wildcard resource: for actions that amount to administering
 * authorization (minting keys, editing roles), which a role must grant by name.
 */
#define TS_AUTHZ_EXACT_RESOURCE 1u
enum ts_authz_value ts_grants_static_ex(const struct ts_grants *g, const char *resource,
                                        const char *action, unsigned flags);
unsigned ts_grants_uses_ex(const struct ts_grants *g, const char *resource, const char *action,
                           unsigned flags);
struct ts_pred_input;
bool ts_grants_decide_ex(const struct ts_grants *g, const char *resource, const char *action,
                         unsigned flags, const struct ts_pred_input *in, struct ts_arena *arena,
                         struct ts_authz_decision *d);

/* The inputs (TS_PRED_USES_*) the predicates that could decide action on resource read. */
unsigned ts_grants_uses(const struct ts_grants *g, const char *resource, const char *action);
/*
 * Decides action on resource for in: a static true first, then predicates in grant order
 * until one is true. d is filled in either way. Allocates only from arena (the predicates'
 * temporaries and fetched documents).
 */
bool ts_grants_decide(const struct ts_grants *g, const char *resource, const char *action,
                      const struct ts_pred_input *in, struct ts_arena *arena,
                      struct ts_authz_decision *d);

#endif
