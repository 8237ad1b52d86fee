/*
 * authz_eval.c - evaluation of a compiled predicate: a recursive walk of the tree, bounded by
 * its depth (max_depth, checked at compile time), over values that point into the caller's
 * JSON or the predicate's own literals. Nothing is copied unless an operator makes a new
 * string ('+' on strings, lower() of a string with capitals), and then only into the arena.
 *
 * Runtime rules (docs/internals/authz.md): a path that does not resolve is "missing", which
 * behaves as null except for has(); null equals only null; any other operator given a null,
 * missing or wrongly typed operand fails the whole evaluation, and callers deny.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "authz_int.h"

enum kind { K_MISSING, K_NULL, K_BOOL, K_INT, K_REAL, K_STR, K_ARR, K_OBJ, K_LIST };

struct val {
    uint8_t k; /* enum kind */
    union {
        bool b;
        int64_t i;
        double r;
        struct {
            const char *s; /* not NUL-terminated in general */
            size_t n;
        } s;
        const json_t *j;         /* K_ARR, K_OBJ */
        const struct node *list; /* K_LIST: the literal, its elements evaluated on demand */
    } u;
};

struct ts_pred_cache_entry {
    struct ts_pred_cache_entry *next;
    enum ts_pred_fetch kind;
    const char *coll, *id, *term; /* term NULL except for lookups */
    json_t *doc;                  /* owned through an arena defer; NULL: not found */
};

struct ev {
    const struct ts_pred *p;
    const struct ts_pred_input *in;
    struct ts_arena *arena;
    struct ts_pred_cache *cache;
    enum ts_rc rc;
    const struct node *where;
    char reason[96];
};

static bool fail(struct ev *e, const struct node *n, enum ts_rc rc, const char *fmt, ...)
    TS_PRINTF(4, 5);

static bool fail(struct ev *e, const struct node *n, enum ts_rc rc, const char *fmt, ...)
{
    if (e->rc == TS_OK) {
        va_list ap;
        e->rc = rc;
        e->where = n;
        va_start(ap, fmt);
        vsnprintf(e->reason, sizeof e->reason, fmt, ap);
        va_end(ap);
    }
    return false;
}

static const char *const op_names[] = {
    [OP_NOT] = "!", [OP_NEG] = "-", [OP_AND] = "&&", [OP_OR] = "||", [OP_EQ] = "==",
    [OP_NE] = "!=", [OP_LT] = "<",  [OP_LE] = "<=",  [OP_GT] = ">",  [OP_GE] = ">=",
    [OP_IN] = "in", [OP_ADD] = "+", [OP_SUB] = "-",
};

static const char *kind_name(uint8_t k)
{
    static const char *const names[] = {"missing", "null", "bool",   "number", "number",
                                        "string",  "list", "object", "list"};
    return k < TS_ARRAY_LEN(names) ? names[k] : "value";
}

static void from_json(const json_t *j, struct val *v)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        v->k = K_OBJ;
        v->u.j = j;
        break;
    case JSON_ARRAY:
        v->k = K_ARR;
        v->u.j = j;
        break;
    case JSON_STRING:
        v->k = K_STR;
        v->u.s.s = json_string_value(j);
        v->u.s.n = json_string_length(j);
        break;
    case JSON_INTEGER:
        v->k = K_INT;
        v->u.i = (int64_t)json_integer_value(j);
        break;
    case JSON_REAL:
        v->k = K_REAL;
        v->u.r = json_real_value(j);
        break;
    case JSON_TRUE:
        v->k = K_BOOL;
        v->u.b = true;
        break;
    case JSON_FALSE:
        v->k = K_BOOL;
        v->u.b = false;
        break;
    default:
        v->k = K_NULL;
        break;
    }
}

static bool is_num(const struct val *v)
{
    return v->k == K_INT || v->k == K_REAL;
}

static bool nullish(const struct val *v)
{
    return v->k == K_MISSING || v->k == K_NULL;
}

/* Numbers compare exactly when both are integers, else as doubles (integers beyond 2^53
 * lose precision then). */
static int cmp_num(const struct val *a, const struct val *b)
{
    if (a->k == K_INT && b->k == K_INT)
        return a->u.i < b->u.i ? -1 : a->u.i > b->u.i;
    double x = a->k == K_INT ? (double)a->u.i : a->u.r;
    double y = b->k == K_INT ? (double)b->u.i : b->u.r;
    return x < y ? -1 : x > y;
}

static int cmp_str(const struct val *a, const struct val *b)
{
    size_t n = a->u.s.n < b->u.s.n ? a->u.s.n : b->u.s.n;
    int c = n ? memcmp(a->u.s.s, b->u.s.s, n) : 0; /* banned-ok: not a secret */
    if (c)
        return c < 0 ? -1 : 1;
    return a->u.s.n < b->u.s.n ? -1 : a->u.s.n > b->u.s.n;
}

/* 1 equal, 0 not, -1 the kinds cannot be compared. Strict (== and !=): different kinds,
 * lists and objects are errors. Loose (membership): they are simply unequal, except that two
 * JSON values compare structurally. */
static int equal(const struct val *a, const struct val *b, bool strict)
{
    if (nullish(a) || nullish(b))
        return nullish(a) && nullish(b);
    if (is_num(a) && is_num(b))
        return cmp_num(a, b) == 0;
    if (a->k == K_STR && b->k == K_STR)
        return cmp_str(a, b) == 0;
    if (a->k == K_BOOL && b->k == K_BOOL)
        return a->u.b == b->u.b;
    if (strict)
        return -1;
    if ((a->k == K_ARR || a->k == K_OBJ) && a->k == b->k)
        return json_equal(a->u.j, b->u.j);
    return 0;
}

static bool eval(struct ev *e, const struct node *n, struct val *out);

/* x in list/array/object, and contains(list, x). */
static bool member_of(struct ev *e, const struct node *n, const struct val *x,
                      const struct val *coll, bool *res)
{
    struct val el;
    *res = false;
    /* absent data is never a member of anything (and never matches an absent element): an
     * error, like every other operator given a missing operand, so that !(x in ...) denies */
    if (x->k == K_MISSING && (coll->k == K_LIST || coll->k == K_ARR))
        return fail(e, n, TS_E_INVALID, "membership of a missing value");
    switch (coll->k) {
    case K_LIST:
        for (uint16_t i = 0; i < coll->u.list->nkids && !*res; i++) {
            if (!eval(e, coll->u.list->kids[i], &el))
                return false;
            *res = el.k != K_MISSING && equal(x, &el, false) == 1;
        }
        return true;
    case K_ARR:
        for (size_t i = 0; i < json_array_size(coll->u.j) && !*res; i++) {
            from_json(json_array_get(coll->u.j, i), &el);
            *res = equal(x, &el, false) == 1;
        }
        return true;
    case K_OBJ:
        if (x->k != K_STR)
            return fail(e, n, TS_E_INVALID, "key of an object must be a string, not %s",
                        kind_name(x->k));
        *res = json_object_getn(coll->u.j, x->u.s.s, x->u.s.n) != NULL;
        return true;
    default:
        return fail(e, n, TS_E_INVALID, "membership needs a list or object, not %s",
                    kind_name(coll->k));
    }
}

static void decref(void *j)
{
    json_decref(j);
}

static bool same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* The per-decision cache, then the callback. Each distinct (kind, arguments) costs one fetch,
 * counted before the call so that a failing store still uses up the budget. */
static bool fetch(struct ev *e, const struct node *n, enum ts_pred_fetch kind, const char *coll,
                  const char *id, const char *term, json_t **doc)
{
    for (struct ts_pred_cache_entry *c = e->cache->head; c; c = c->next) {
        if (c->kind == kind && same(c->coll, coll) && same(c->id, id) && same(c->term, term)) {
            *doc = c->doc;
            return true;
        }
    }
    if (e->cache->fetches >= e->p->lim.max_fetches)
        return fail(e, n, TS_E_TOO_BIG, "fetch limit (%u) reached",
                    (unsigned)e->p->lim.max_fetches);
    if (!e->in->fetch)
        return fail(e, n, TS_E_UNAVAILABLE, "no fetch callback");
    e->cache->fetches++;
    json_t *j = NULL;
    enum ts_rc rc = e->in->fetch(e->in->fetch_cls, kind, coll, id, term, &j);
    if (rc == TS_E_NOT_FOUND) {
        rc = TS_OK;
        j = NULL;
    }
    if (rc != TS_OK) {
        if (j)
            json_decref(j);
        return fail(e, n, rc, "fetch failed: %s", ts_rc_name(rc));
    }
    if (j)
        ts_arena_defer(e->arena, decref, j);
    struct ts_pred_cache_entry *c = ts_arena_calloc(e->arena, sizeof *c);
    c->kind = kind;
    c->coll = ts_arena_strdup(e->arena, coll);
    c->id = ts_arena_strdup(e->arena, id);
    c->term = term ? ts_arena_strdup(e->arena, term) : NULL;
    c->doc = j;
    c->next = e->cache->head;
    e->cache->head = c;
    *doc = j;
    return true;
}

/* Fetch arguments: strings, NUL-terminated copies when the value is not already one. */
static bool fetch_arg(struct ev *e, const struct node *n, const char **s)
{
    struct val v;
    if (!eval(e, n, &v))
        return false;
    if (v.k != K_STR)
        return fail(e, n, TS_E_INVALID, "fetch argument must be a string, not %s", kind_name(v.k));
    if (strnlen(v.u.s.s, v.u.s.n) != v.u.s.n)
        return fail(e, n, TS_E_INVALID, "fetch argument contains NUL");
    *s = v.u.s.s[v.u.s.n] == '\0' ? v.u.s.s : ts_arena_strndup(e->arena, v.u.s.s, v.u.s.n);
    return true;
}

static bool need_str(struct ev *e, const struct node *n, const struct val *v, const char *fn)
{
    if (v->k == K_STR)
        return true;
    return fail(e, n, TS_E_INVALID, "%s() needs a string, not %s", fn, kind_name(v->k));
}

static bool call(struct ev *e, const struct node *n, struct val *out)
{
    struct val a, b;
    struct node *const *k = n->kids;
    out->k = K_BOOL;
    switch (n->v.fn) {
    case FN_STARTS_WITH:
    case FN_ENDS_WITH: {
        const char *fn = n->v.fn == FN_STARTS_WITH ? "startsWith" : "endsWith";
        if (!eval(e, k[0], &a) || !need_str(e, k[0], &a, fn) || !eval(e, k[1], &b) ||
            !need_str(e, k[1], &b, fn))
            return false;
        const char *at = n->v.fn == FN_STARTS_WITH ? a.u.s.s : a.u.s.s + a.u.s.n - b.u.s.n;
        out->u.b = a.u.s.n >= b.u.s.n &&
                   (b.u.s.n == 0 || memcmp(at, b.u.s.s, b.u.s.n) == 0); /* banned-ok: not secret */
        return true;
    }
    case FN_CONTAINS:
        if (!eval(e, k[0], &a) || !eval(e, k[1], &b))
            return false;
        if (a.k == K_STR) {
            if (!need_str(e, k[1], &b, "contains"))
                return false;
            out->u.b = b.u.s.n == 0 || memmem(a.u.s.s, a.u.s.n, b.u.s.s, b.u.s.n) != NULL;
            return true;
        }
        if (a.k != K_LIST && a.k != K_ARR)
            return fail(e, k[0], TS_E_INVALID, "contains() needs a string or a list, not %s",
                        kind_name(a.k));
        return member_of(e, n, &b, &a, &out->u.b);
    case FN_LOWER: {
        if (!eval(e, k[0], &a) || !need_str(e, k[0], &a, "lower"))
            return false;
        *out = a;
        size_t i = 0;
        while (i < a.u.s.n && !(a.u.s.s[i] >= 'A' && a.u.s.s[i] <= 'Z'))
            i++;
        if (i == a.u.s.n)
            return true; /* nothing to change: no copy */
        char *s = ts_arena_memdup(e->arena, a.u.s.s, a.u.s.n + 1);
        for (; i < a.u.s.n; i++)
            if (s[i] >= 'A' && s[i] <= 'Z')
                s[i] = (char)(s[i] - 'A' + 'a');
        s[a.u.s.n] = '\0';
        out->u.s.s = s;
        return true;
    }
    case FN_SIZE: {
        if (!eval(e, k[0], &a))
            return false;
        out->k = K_INT;
        if (a.k == K_STR) { /* code points: UTF-8 bytes that do not continue a sequence */
            int64_t c = 0;
            for (size_t i = 0; i < a.u.s.n; i++)
                c += ((unsigned char)a.u.s.s[i] & 0xc0) != 0x80;
            out->u.i = c;
        } else if (a.k == K_LIST) {
            out->u.i = a.u.list->nkids;
        } else if (a.k == K_ARR) {
            out->u.i = (int64_t)json_array_size(a.u.j);
        } else if (a.k == K_OBJ) {
            out->u.i = (int64_t)json_object_size(a.u.j);
        } else {
            return fail(e, k[0], TS_E_INVALID, "size() of %s", kind_name(a.k));
        }
        return true;
    }
    case FN_HAS:
        if (!eval(e, k[0], &a))
            return false;
        out->u.b = a.k != K_MISSING;
        return true;
    default: { /* get, exists, lookup */
        const char *coll, *id, *term = NULL;
        json_t *doc = NULL;
        if (!fetch_arg(e, k[0], &coll) || !fetch_arg(e, k[1], &id) ||
            (n->v.fn == FN_LOOKUP && !fetch_arg(e, k[2], &term)))
            return false;
        enum ts_pred_fetch kind = n->v.fn == FN_GET      ? TS_PRED_FETCH_GET
                                  : n->v.fn == FN_EXISTS ? TS_PRED_FETCH_EXISTS
                                                         : TS_PRED_FETCH_LOOKUP;
        if (!fetch(e, n, kind, coll, id, term, &doc))
            return false;
        if (kind == TS_PRED_FETCH_EXISTS)
            out->u.b = doc != NULL;
        else if (doc)
            from_json(doc, out);
        else
            out->k = K_NULL;
        return true;
    }
    }
}

static bool arith(struct ev *e, const struct node *n, const struct val *a, const struct val *b,
                  struct val *out)
{
    if (n->op == OP_ADD && a->k == K_STR && b->k == K_STR) {
        char *s = ts_arena_alloc(e->arena, a->u.s.n + b->u.s.n + 1);
        memcpy(s, a->u.s.s, a->u.s.n);
        memcpy(s + a->u.s.n, b->u.s.s, b->u.s.n);
        s[a->u.s.n + b->u.s.n] = '\0';
        out->k = K_STR;
        out->u.s.s = s;
        out->u.s.n = a->u.s.n + b->u.s.n;
        return true;
    }
    if (!is_num(a) || !is_num(b))
        return fail(e, n, TS_E_INVALID, "'%s' on %s and %s", op_names[n->op], kind_name(a->k),
                    kind_name(b->k));
    if (a->k == K_INT && b->k == K_INT) {
        out->k = K_INT;
        bool over = n->op == OP_ADD ? __builtin_add_overflow(a->u.i, b->u.i, &out->u.i)
                                    : __builtin_sub_overflow(a->u.i, b->u.i, &out->u.i);
        if (over)
            return fail(e, n, TS_E_INVALID, "integer overflow in '%s'", op_names[n->op]);
        return true;
    }
    double x = a->k == K_INT ? (double)a->u.i : a->u.r;
    double y = b->k == K_INT ? (double)b->u.i : b->u.r;
    out->k = K_REAL;
    out->u.r = n->op == OP_ADD ? x + y : x - y;
    if (!isfinite(out->u.r))
        return fail(e, n, TS_E_INVALID, "number out of range in '%s'", op_names[n->op]);
    return true;
}

static bool eval(struct ev *e, const struct node *n, struct val *out)
{
    struct val a, b;
    switch ((enum node_op)n->op) {
    case OP_NULL:
        out->k = K_NULL;
        return true;
    case OP_BOOL:
        out->k = K_BOOL;
        out->u.b = n->v.b;
        return true;
    case OP_INT:
        out->k = K_INT;
        out->u.i = n->v.i;
        return true;
    case OP_REAL:
        out->k = K_REAL;
        out->u.r = n->v.r;
        return true;
    case OP_STR:
        out->k = K_STR;
        out->u.s.s = n->str;
        out->u.s.n = n->str_len;
        return true;
    case OP_LIST:
        out->k = K_LIST;
        out->u.list = n;
        return true;
    case OP_ROOT: {
        const json_t *j = NULL;
        switch (n->v.root) {
        case ROOT_NOW:
            out->k = K_INT;
            out->u.i = e->in->now_s;
            return true;
        case ROOT_IDENTITY:
            j = e->in->identity;
            break;
        case ROOT_CLAIMS:
            j = e->in->claims;
            break;
        case ROOT_RESOURCE:
            j = e->in->resource;
            break;
        case ROOT_OLD:
            j = e->in->old_doc;
            break;
        case ROOT_NEW:
            j = e->in->new_doc;
            break;
        default:
            j = e->in->request;
            break;
        }
        if (j)
            from_json(j, out);
        else
            out->k = K_MISSING;
        return true;
    }
    case OP_MEMBER:
        if (!eval(e, n->kids[0], &a))
            return false;
        if (nullish(&a)) {
            out->k = K_MISSING;
            return true;
        }
        if (a.k != K_OBJ)
            return fail(e, n, TS_E_INVALID, "'.%s' of %s", n->str, kind_name(a.k));
        {
            const json_t *j = json_object_getn(a.u.j, n->str, n->str_len);
            if (j)
                from_json(j, out);
            else
                out->k = K_MISSING;
        }
        return true;
    case OP_INDEX:
        if (!eval(e, n->kids[0], &a))
            return false;
        out->k = K_MISSING;
        if (nullish(&a))
            return true;
        if (a.k == K_ARR) {
            if (n->v.i >= 0 && (uint64_t)n->v.i < json_array_size(a.u.j))
                from_json(json_array_get(a.u.j, (size_t)n->v.i), out);
            return true;
        }
        if (a.k == K_LIST) {
            if (n->v.i >= 0 && n->v.i < a.u.list->nkids)
                return eval(e, a.u.list->kids[n->v.i], out);
            return true;
        }
        return fail(e, n, TS_E_INVALID, "index of %s", kind_name(a.k));
    case OP_NOT:
        if (!eval(e, n->kids[0], &a))
            return false;
        if (a.k != K_BOOL)
            return fail(e, n, TS_E_INVALID, "'!' of %s", kind_name(a.k));
        out->k = K_BOOL;
        out->u.b = !a.u.b;
        return true;
    case OP_NEG:
        if (!eval(e, n->kids[0], &a))
            return false;
        *out = a;
        if (a.k == K_REAL) {
            out->u.r = -a.u.r;
            return true;
        }
        if (a.k == K_INT && a.u.i != INT64_MIN) {
            out->u.i = -a.u.i;
            return true;
        }
        return fail(e, n, TS_E_INVALID, "'-' of %s", kind_name(a.k));
    case OP_AND:
    case OP_OR:
        /* Short-circuit: the right side is not evaluated (nor fetched) when the left decides. */
        if (!eval(e, n->kids[0], &a))
            return false;
        if (a.k != K_BOOL)
            return fail(e, n->kids[0], TS_E_INVALID, "'%s' of %s", op_names[n->op], kind_name(a.k));
        if (a.u.b == (n->op == OP_OR)) {
            *out = a;
            return true;
        }
        if (!eval(e, n->kids[1], out))
            return false;
        if (out->k != K_BOOL)
            return fail(e, n->kids[1], TS_E_INVALID, "'%s' of %s", op_names[n->op],
                        kind_name(out->k));
        return true;
    case OP_EQ:
    case OP_NE: {
        if (!eval(e, n->kids[0], &a) || !eval(e, n->kids[1], &b))
            return false;
        int eq;
        if (a.k == K_MISSING || b.k == K_MISSING)
            /* absent data equals only a literal null: two absent values (no identity, no
             * owner), or an absent one and a stored null, never make a rule true */
            eq = n->kids[a.k == K_MISSING ? 1 : 0]->op == OP_NULL;
        else
            eq = equal(&a, &b, true);
        if (eq < 0)
            return fail(e, n, TS_E_INVALID, "'%s' of %s and %s", op_names[n->op], kind_name(a.k),
                        kind_name(b.k));
        out->k = K_BOOL;
        out->u.b = (eq == 1) == (n->op == OP_EQ);
        return true;
    }
    case OP_LT:
    case OP_LE:
    case OP_GT:
    case OP_GE: {
        if (!eval(e, n->kids[0], &a) || !eval(e, n->kids[1], &b))
            return false;
        int c;
        if (is_num(&a) && is_num(&b))
            c = cmp_num(&a, &b);
        else if (a.k == K_STR && b.k == K_STR)
            c = cmp_str(&a, &b);
        else
            return fail(e, n, TS_E_INVALID, "'%s' of %s and %s", op_names[n->op], kind_name(a.k),
                        kind_name(b.k));
        out->k = K_BOOL;
        out->u.b = n->op == OP_LT   ? c < 0
                   : n->op == OP_LE ? c <= 0
                   : n->op == OP_GT ? c > 0
                                    : c >= 0;
        return true;
    }
    case OP_IN:
        if (!eval(e, n->kids[0], &a) || !eval(e, n->kids[1], &b))
            return false;
        out->k = K_BOOL;
        return member_of(e, n, &a, &b, &out->u.b);
    case OP_ADD:
    case OP_SUB:
        if (!eval(e, n->kids[0], &a) || !eval(e, n->kids[1], &b))
            return false;
        return arith(e, n, &a, &b, out);
    case OP_CALL:
        return call(e, n, out);
    }
    return fail(e, n, TS_E_INTERNAL, "unknown node");
}

void ts_pred_cache_init(struct ts_pred_cache *c)
{
    c->head = NULL;
    c->fetches = 0;
}

enum ts_rc ts_pred_eval(const struct ts_pred *p, const struct ts_pred_input *in,
                        struct ts_arena *arena, bool *result, struct ts_pred_trace *trace)
{
    struct ts_pred_cache local = {0};
    struct ev e = {.p = p, .in = in, .arena = arena, .cache = in->cache ? in->cache : &local};
    struct val v;
    if (eval(&e, p->root, &v) && v.k != K_BOOL)
        fail(&e, p->root, TS_E_INVALID, "the predicate gave %s, not a bool", kind_name(v.k));
    if (trace) {
        trace->rc = e.rc;
        trace->line = e.where ? e.where->line : 0;
        trace->column = e.where ? e.where->column : 0;
        trace->fetches = e.cache->fetches;
        memcpy(trace->reason, e.rc == TS_OK ? "" : e.reason,
               e.rc == TS_OK ? 1 : sizeof trace->reason);
    }
    if (e.rc == TS_OK)
        *result = v.u.b;
    return e.rc;
}
